"""The bundle server: serves the signed policy bundle to OPA the way a
production bundle server would -- only with the bundle-server token, with an
ETag so OPA downloads and activates only a bundle that changed. ``airlock
up`` runs one on loopback for OPA's uid alone; ``airlock policy serve`` runs
one for a deployment (deploy/compose/), where the network and the token
decide who may fetch."""

from __future__ import annotations

import hashlib
import http.server
import secrets
from collections.abc import Collection
from pathlib import Path

from airlock.common._daemon import serve_http


class BundleServer:
    """Serves ``bundle`` (re-read on every request, so a publish that
    replaces the file is served at once) at ``/<file name>``."""

    def __init__(
        self,
        bundle: Path,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_uids: Collection[int] | None = None,
    ) -> None:
        """``allowed_uids``: on loopback, the uids whose connections are
        served (every other local user is closed unread); None: any peer."""
        target = bundle
        expected = hashlib.sha256(f"Bearer {token}".encode()).digest()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                presented = hashlib.sha256(self.headers.get("Authorization", "").encode()).digest()
                if not secrets.compare_digest(presented, expected):
                    self.send_error(401)
                    return
                if self.path.split("?")[0] != f"/{target.name}":
                    self.send_error(404)
                    return
                try:
                    data = target.read_bytes()
                except OSError:
                    self.send_error(503)
                    return
                etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        # Bounded: partial requests once made 2,500 threads; a slow client
        # once held every slot while a revocation waited.
        self._httpd = serve_http(host, port, Handler, allowed_uids=allowed_uids)
        self.url = f"http://{host}:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
