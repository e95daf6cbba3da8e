"""airlock.common._daemon.BoundedHTTPServer: partial requests from anyone
cannot make our HTTP endpoints (metrics, the dev bundle server) grow a
thread per connection, and a client that stalls is cut off."""

from __future__ import annotations

import http.server
import socket
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from airlock.common._daemon import BoundedHTTPServer, start_metrics


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


def test_partial_requests_cannot_grow_threads_and_time_out() -> None:
    server = BoundedHTTPServer(("127.0.0.1", 0), Hello, max_clients=4, timeout_s=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    before = threading.active_count()
    partial = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            partial.append(s)
        time.sleep(0.5)
        assert threading.active_count() <= before + 4, "at most max_clients handler threads"
        assert server.refused >= 190
        time.sleep(1.5)  # the stalled ones time out and free their slots
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert resp.read() == b"ok"
    finally:
        for s in partial:
            s.close()
        server.shutdown()
        server.server_close()


def test_metrics_are_served_by_the_bounded_server() -> None:
    registry = CollectorRegistry()
    Counter("airlock_test_things", "Things.", registry=registry).inc()
    url = start_metrics("127.0.0.1:0", registry)
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert b"airlock_test_things_total 1.0" in resp.read()
