"""Small pieces both daemons need: the /metrics endpoint, the ready file
``airlock up`` waits on, and signal-driven shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server


def split_hostport(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def start_metrics(listen: str, registry: CollectorRegistry) -> str:
    """Serves ``registry`` at /metrics and returns its URL (port 0 picks one)."""
    host, port = split_hostport(listen)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return f"http://{host}:{server.server_port}/metrics"


def write_ready_file(path: str | None, info: dict[str, Any]) -> None:
    """Atomically writes what the daemon is serving, for supervisors and tests."""
    if not path:
        return
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a clean shutdown."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event
