"""airlock.common._daemon.BoundedHTTPServer: partial requests from anyone
cannot make our HTTP endpoints (metrics, the bundle server) grow a thread
per connection, a client that stalls or trickles is cut off at one deadline
for its whole request, one peer uid cannot hold every slot, and a server for
one uid closes everyone else unread."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from airlock.cli._bundle_server import BundleServer
from airlock.common import _daemon
from airlock.common._daemon import BoundedHTTPServer, peer_uid, start_metrics


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler] = Hello, **kwargs: object) -> Iterator[BoundedHTTPServer]:
    server = BoundedHTTPServer(("127.0.0.1", 0), handler, **kwargs)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def stalled(port: int, *, bind_port: Callable[[int], None] | None = None) -> socket.socket:
    """A connection that starts a request and never finishes it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    if bind_port is not None:
        bind_port(s.getsockname()[1])
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    return s


def closed_by_server(s: socket.socket, within: float) -> bool:
    """True if the server closes ``s`` (EOF or reset) within ``within`` s."""
    ready, _, _ = select.select([s], [], [], within)
    if not ready:
        return False
    try:
        return s.recv(1) == b""
    except ConnectionError:
        return True


def get(port: int, *, bind_port: Callable[[int], None] | None = None) -> bytes:
    """A whole GET on a raw socket (so the test knows its client port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if bind_port is not None:
            bind_port(s.getsockname()[1])
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := s.recv(4096):
                data += chunk
        return data


def test_partial_requests_cannot_grow_threads_and_time_out() -> None:
    with serving(max_clients=4, timeout_s=1.0) as server:
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


def test_a_request_sent_a_byte_at_a_time_is_cut_at_one_deadline() -> None:
    """The finding: one byte every 3 s kept a 5 s per-read timeout from ever
    firing. Here a byte every 0.2 s against a 1 s deadline."""
    with serving(timeout_s=1.0) as server:
        s = socket.create_connection(("127.0.0.1", server.server_address[1]))
        start = time.monotonic()
        cut = None
        try:
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-a: " + b"a" * 100:
                try:
                    s.send(bytes([byte]))
                except OSError:
                    cut = time.monotonic() - start
                    break
                if closed_by_server(s, 0.2):
                    cut = time.monotonic() - start
                    break
                if time.monotonic() - start > 4:
                    break
        finally:
            s.close()
        assert cut is not None, "a trickling client held its slot past the deadline"
        assert 0.8 < cut < 2.0, cut


def test_an_answer_read_slowly_is_cut_at_the_same_deadline() -> None:
    """A client that reads the answer a little at a time never lets one
    write wait a whole timeout; the deadline still ends the request."""
    finished = threading.Event()
    took: list[float] = []

    class Big(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            start = time.monotonic()
            try:
                self.send_response(200)
                self.end_headers()
                chunk = b"x" * 4096  # each write is quick: only the deadline ends this
                for _ in range(16384):  # 64 MiB
                    self.wfile.write(chunk)
            finally:
                took.append(time.monotonic() - start)
                finished.set()

        def log_message(self, *_: object) -> None:
            pass

    with serving(Big, timeout_s=1.0) as server:
        s = socket.create_connection(("127.0.0.1", server.server_address[1]))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            deadline = time.monotonic() + 4
            while not finished.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    s.recv(16384)
                time.sleep(0.05)
        finally:
            s.close()
        assert finished.wait(1), "a slow reader held its slot past the deadline"
        assert took[0] < 2.0, took


def by_port(uids: dict[int, int]) -> Callable[[socket.socket], int | None]:
    """A peer-uid lookup for tests: the uid registered for the client port."""
    return lambda sock: uids.get(sock.getpeername()[1])


def test_one_uid_cannot_hold_every_slot() -> None:
    uids: dict[int, int] = {}
    with serving(max_clients=4, max_per_peer=2, timeout_s=30.0, uid_of=by_port(uids)) as server:
        port = server.server_address[1]
        held = [stalled(port, bind_port=lambda p: uids.__setitem__(p, 1001)) for _ in range(10)]
        try:
            time.sleep(0.3)
            assert server.refused == 8, "uid 1001 got only its two slots"
            open_ = [s for s in held if not closed_by_server(s, 0.05)]
            assert len(open_) == 2
            # Another uid is served at once, well before any deadline.
            assert get(port, bind_port=lambda p: uids.__setitem__(p, 1002)).endswith(b"ok")
        finally:
            for s in held:
                s.close()


def test_peers_of_unknown_uid_share_one_count() -> None:
    uids: dict[int, int] = {}
    with serving(max_clients=4, max_per_peer=2, timeout_s=30.0, uid_of=by_port(uids)) as server:
        port = server.server_address[1]
        unknown = [stalled(port) for _ in range(5)]
        try:
            time.sleep(0.3)
            assert server.refused == 3
            assert get(port, bind_port=lambda p: uids.__setitem__(p, 1002)).endswith(b"ok")
        finally:
            for s in unknown:
                s.close()


@contextlib.contextmanager
def connection(family: socket.AddressFamily, host: str, user: int | None = None) -> Iterator[socket.socket]:
    """Our end of a loopback connection whose other end belongs to ``user``
    (None: to us)."""
    try:
        listener = socket.socket(family)
        listener.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    with listener:
        listener.listen()
        port = listener.getsockname()[1]
        if user is None:
            with socket.create_connection((host, port)), listener.accept()[0] as accepted:
                yield accepted
            return
        client = f"import socket, sys; s = socket.create_connection(({host!r}, {port})); sys.stdin.read()"
        proc = subprocess.Popen(
            [sys.executable, "-c", client], stdin=subprocess.PIPE, user=user, group=user, extra_groups=[], cwd="/"
        )
        try:
            with listener.accept()[0] as accepted:
                yield accepted
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(10)


FAMILIES = pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])


@FAMILIES
def test_the_peer_uid_is_read_from_the_kernel(family: socket.AddressFamily, host: str) -> None:
    with connection(family, host) as ours:
        assert peer_uid(ours) == os.geteuid()
        theirs, mine = ours.getpeername()[:2], ours.getsockname()[:2]
        assert _daemon._sock_diag_uid(family, theirs, mine) == os.geteuid()
        assert _daemon._proc_uid(family, theirs, mine) == os.geteuid(), "the fallback agrees"


@FAMILIES
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_the_peer_uid_is_the_clients_not_the_servers(family: socket.AddressFamily, host: str) -> None:
    nobody = 65534
    with connection(family, host, user=nobody) as ours:
        theirs, mine = ours.getpeername()[:2], ours.getsockname()[:2]
        assert peer_uid(ours) == nobody
        assert _daemon._proc_uid(family, theirs, mine) == nobody


def test_without_sock_diag_the_lookup_falls_back_to_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel without inet_diag either refuses the netlink socket or
    answers "no such socket" even for our own end."""

    def unavailable(*_: object) -> int | None:
        raise OSError("EPROTONOSUPPORT")

    with connection(socket.AF_INET, "127.0.0.1") as ours:
        for diag in (unavailable, lambda *_: None):
            monkeypatch.setattr(_daemon, "_sock_diag_uid", diag)
            assert peer_uid(ours) == os.geteuid()


def test_a_peer_that_is_gone_has_no_uid() -> None:
    """A closed socket the kernel keeps (FIN_WAIT2, TIME_WAIT) reports uid
    0: it must not count as root's."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    with listener:
        client = socket.create_connection(listener.getsockname())
        accepted = listener.accept()[0]
        client.close()  # ours stays open: theirs waits in FIN_WAIT2
        with accepted:
            time.sleep(0.1)
            assert peer_uid(accepted) is None
            assert _daemon._proc_uid(socket.AF_INET, accepted.getpeername(), accepted.getsockname()) is None


def test_the_real_lookup_caps_our_own_uid() -> None:
    with serving(max_clients=8, max_per_peer=2, timeout_s=30.0) as server:
        port = server.server_address[1]
        held = [stalled(port) for _ in range(3)]
        try:
            assert closed_by_server(held[2], 1), "a third connection from our uid is closed at once"
            assert not closed_by_server(held[0], 0.05)
            assert server.refused == 1
        finally:
            for s in held:
                s.close()


def test_a_server_for_one_uid_closes_everyone_else_unread() -> None:
    with serving(allowed_uids=(os.geteuid() + 1,)) as server:
        assert get(server.server_address[1]) == b"", "another uid gets no answer at all"
        assert server.refused == 1
    with serving(allowed_uids=(os.geteuid(),)) as server:
        assert get(server.server_address[1]).endswith(b"ok")


def test_the_bundle_server_serves_opas_uid_only(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(b"signed bundle")
    request = urllib.request.Request("http://x/bundle.tar.gz", headers={"Authorization": "Bearer t0ken"})
    ours = BundleServer(bundle, "t0ken", allowed_uids=(os.geteuid(),))
    try:
        request.full_url = f"{ours.url}/bundle.tar.gz"
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.read() == b"signed bundle"
            assert resp.headers["ETag"] == '"' + hashlib.sha256(b"signed bundle").hexdigest() + '"'
    finally:
        ours.stop()
    theirs = BundleServer(bundle, "t0ken", allowed_uids=(os.geteuid() + 1,))
    try:
        request.full_url = f"{theirs.url}/bundle.tar.gz"
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            urllib.request.urlopen(request, timeout=5)
    finally:
        theirs.stop()


def test_metrics_are_served_by_the_bounded_server() -> None:
    registry = CollectorRegistry()
    Counter("airlock_test_things", "Things.", registry=registry).inc()
    url = start_metrics("127.0.0.1:0", registry)
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert b"airlock_test_things_total 1.0" in resp.read()
