"""The Airlock executor: the only process with Docker access. Runs each
allowed call in a fresh hardened container and streams its output back.

Modules: _runner (lifecycle, no grpc), _options (the one function that makes
container options), _capture (bounded output), _docker (runtime seam),
_metrics, _server (gRPC transport + token check), _main (process wiring);
egress/ (the filtering egress proxy, its network and firewall)."""

from __future__ import annotations

from executor._config import ExecutorConfig, load_executor_config

__all__ = ["ExecutorConfig", "load_executor_config"]
