"""airlock.cli._publish.wait_active: publishing returns only once OPA
reports the new revision in a decision's provenance, and fails with a clear
message (naming what OPA does report) when it does not in time."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airlock.cli._layout import Layout
from airlock.cli._publish import NotActivatedError, wait_active


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def fake_opa(layout: Layout, revisions: list[str]) -> Iterator[list[str]]:
    """OPA's socket, answering each query with the next revision of
    ``revisions`` (the last one for ever); yields the requested paths."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append(f"{self.path} {self.headers.get('Authorization')}")
            revision = revisions.pop(0) if len(revisions) > 1 else revisions[0]
            body = json.dumps({"result": {}, "provenance": {"bundles": {"airlock": {"revision": revision}}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

        def address_string(self) -> str:
            return "opa-socket"

    layout.opa_socket.parent.mkdir(parents=True)
    server = _UnixHTTPServer(str(layout.opa_socket), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    layout.gateway_dir.mkdir()
    (layout.gateway_dir / "opa.token").write_text("gw-token\n")
    return layout


def test_returns_once_opa_reports_the_new_revision(layout: Layout) -> None:
    with fake_opa(layout, ["old", "old", "new"]) as seen:
        wait_active(layout, "new", 5)
    assert len(seen) == 3
    assert seen[0] == "/v1/data/airlock/config/shadow?provenance=true Bearer gw-token"


def test_fails_naming_the_revision_opa_still_reports(layout: Layout) -> None:
    with fake_opa(layout, ["old"]), pytest.raises(NotActivatedError) as exc:
        wait_active(layout, "new", 0.5)
    assert "policy bundle new is published, but OPA did not activate it" in str(exc.value)
    assert "it reports revision old" in str(exc.value)


def test_fails_when_opa_does_not_answer(layout: Layout) -> None:
    with pytest.raises(NotActivatedError, match="OPA did not answer: no socket at"):
        wait_active(layout, "new", 0.5)
    layout.opa_socket.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as hangs_up:
        hangs_up.bind(str(layout.opa_socket))
        hangs_up.listen(64)

        def close_each() -> None:
            with contextlib.suppress(OSError):
                while True:
                    hangs_up.accept()[0].close()

        threading.Thread(target=close_each, daemon=True).start()
        with pytest.raises(NotActivatedError, match="OPA did not answer"):
            wait_active(layout, "new", 0.5)
