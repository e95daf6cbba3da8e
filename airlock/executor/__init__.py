"""The Airlock executor: the only process with Docker access. Runs each
allowed call in a fresh hardened container and streams its output back.

Modules: _runner (lifecycle under one deadline, no grpc), _options (the one
function that makes container options, with the deadline wrapper as PID 1),
_capture (bounded output), _docker (runtime seam), _images (which images may
run: the tool registry's), _metrics, _peer (the socket's front door: the
peer's uid, by SO_PEERCRED, before gRPC), _server (gRPC transport + token
check), _reaper (removes overdue sandboxes, even after the executor died),
_main (process wiring); egress/ (the filtering egress proxy, its network and
firewall)."""

from __future__ import annotations

from airlock.executor._config import ExecutorConfig, load_executor_config

__all__ = ["ExecutorConfig", "load_executor_config"]
