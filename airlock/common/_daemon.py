"""Small pieces the daemons need: a bounded HTTP server (the /metrics
endpoint, the dev stack's bundle server), the ready file ``airlock up``
waits on, and signal-driven shutdown."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

#: Requests served at once by one of our HTTP endpoints; more connections
#: are closed at once instead of each getting a thread of its own.
HTTP_MAX_CLIENTS = 16
#: A client must send its request (and read the answer) within this time.
HTTP_TIMEOUT_S = 5.0


class BoundedHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that cannot be made to grow: at most
    ``max_clients`` requests in service (one thread each), every socket with a
    timeout. The stdlib server starts a thread per connection without bound:
    partial requests from any local user once drove a gateway to 10,000
    threads, and its decisions into policy_timeout."""

    daemon_threads = True
    # Accept quickly (and refuse quickly) rather than leave connects in the
    # kernel's queue, where a flood would delay everyone's.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[http.server.BaseHTTPRequestHandler],
        *,
        max_clients: int = HTTP_MAX_CLIENTS,
        timeout_s: float = HTTP_TIMEOUT_S,
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_clients)
        self._timeout_s = timeout_s
        self.refused = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        request.settimeout(self._timeout_s)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that times out or goes away is not worth a traceback.
        del request, client_address


def serve_http(host: str, port: int, handler: type[http.server.BaseHTTPRequestHandler]) -> BoundedHTTPServer:
    """Starts a BoundedHTTPServer in a daemon thread."""
    server = BoundedHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def split_hostport(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {listen!r}")
    return host.strip("[]"), int(port)


def start_metrics(listen: str, registry: CollectorRegistry) -> str:
    """Serves ``registry`` at /metrics and returns its URL (port 0 picks one)."""
    host, port = split_hostport(listen)
    server = serve_http(host, port, MetricsHandler.factory(registry))
    return f"http://{host}:{server.server_port}/metrics"


def write_ready_file(path: str | None, info: dict[str, Any]) -> None:
    """Atomically writes what the daemon is serving, for supervisors and tests.
    It carries the daemon's pid, so a supervisor never mistakes a file left
    by an earlier run (whose port someone else may now hold) for this one."""
    if not path:
        return
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({**info, "pid": os.getpid()}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a clean shutdown."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event
