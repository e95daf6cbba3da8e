"""Small pieces the daemons need: a bounded HTTP server (the /metrics
endpoint, the dev stack's bundle server), the ready file ``airlock up``
waits on, and signal-driven shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

#: Requests served at once by one of our HTTP endpoints; more connections
#: are closed at once instead of each getting a thread of its own.
HTTP_MAX_CLIENTS = 16
#: Of those, at most this many from one peer uid (every peer whose uid
#: cannot be read counts as one, UNKNOWN_PEER), so no local user can hold
#: every slot.
HTTP_MAX_PER_PEER = 4
#: A client must send its whole request and read the whole answer within
#: this time from its accept; then its socket is shut down, whatever it is
#: doing (a per-read timeout alone lets one byte every few seconds hold a
#: slot for ever).
HTTP_TIMEOUT_S = 5.0
#: The one count shared by every peer whose uid cannot be read.
UNKNOWN_PEER = "unknown"

# A listener is what an exact lookup falls back to: never a connection's end.
_LISTEN = 10
# sock_diag (linux/inet_diag.h): one exact lookup of a socket by its address
# pair, answered by the kernel's hash table whatever the number of sockets.
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, _NLMSG_ERROR = 4, 20, 1, 2
_NLMSG_HEADER = struct.Struct("=IHHII")
_DIAG_NO_COOKIE = 0xFFFFFFFF
# inet_diag_msg: family, state, timer, retrans, the 48-byte socket id,
# expires, rqueue, wqueue, uid, inode.
_DIAG_STATE, _DIAG_UID, _DIAG_INODE = 1, 4 + 48 + 12, 4 + 48 + 16
# A /proc/net/tcp line from the local address on: local remote state
# tx:rx tr:when retransmits uid timeout inode ...
_PROC_UID, _PROC_INODE = 6, 8


def _sock_diag_uid(family: int, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The uid of the socket at ``local`` connected to ``remote``, from the
    kernel (None: there is none); OSError when sock_diag is unavailable."""

    def ip(host: str) -> bytes:
        return socket.inet_pton(family, host).ljust(16, b"\0")

    request = (
        struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)  # any state
        + struct.pack("!HH", local[1], remote[1])
        + ip(local[0])
        + ip(remote[0])
        + struct.pack("=III", 0, _DIAG_NO_COOKIE, _DIAG_NO_COOKIE)
    )
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1)
        diag.send(header + request)
        answer = diag.recv(8192)
    kind = _NLMSG_HEADER.unpack_from(answer)[1]
    body = _NLMSG_HEADER.size
    if kind == _NLMSG_ERROR or len(answer) < body + _DIAG_INODE + 4:
        return None  # ENOENT: no such socket on this host
    uid, inode = struct.unpack_from("=II", answer, body + _DIAG_UID)
    # Inode 0: a closed socket the kernel keeps for TIME_WAIT or FIN_WAIT2,
    # which reports uid 0 whoever owned it.
    if answer[body + _DIAG_STATE] == _LISTEN or inode == 0:
        return None
    return int(uid)


def _proc_address(family: int, host: str, port: int) -> str:
    """An address as /proc/net/tcp{,6} spells it: the IP as 32-bit words in
    host byte order, then the port, in upper-case hex."""
    packed = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _proc_uid(family: int, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The same from /proc/net/tcp{,6}, which the kernel writes out whole at
    every read (tens of ms with 10,000 sockets): only if sock_diag is missing."""
    needle = f" {_proc_address(family, *local)} {_proc_address(family, *remote)} ".encode()
    data = Path("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp").read_bytes()
    at = data.find(needle)
    while at >= 0:
        end = data.find(b"\n", at)
        fields = data[at : end if end >= 0 else None].split()
        if len(fields) > _PROC_INODE and int(fields[_PROC_INODE]) != 0:  # 0: closed, see above
            return int(fields[_PROC_UID])
        at = data.find(needle, at + 1)
    return None


def peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the other end of a TCP connection on this host (Linux:
    the socket whose local/remote pair is ours reversed), or None when that
    is unknown (a remote peer, one already gone, no way to ask)."""
    try:
        ours, theirs = sock.getsockname()[:2], sock.getpeername()[:2]
        with contextlib.suppress(OSError):
            uid = _sock_diag_uid(sock.family, theirs, ours)
            # Not found: trusted only if sock_diag finds our own end (a
            # kernel without inet_diag answers "not found" to everything).
            if uid is not None or _sock_diag_uid(sock.family, ours, theirs) is not None:
                return uid
        return _proc_uid(sock.family, theirs, ours)
    except (OSError, ValueError, struct.error):
        return None


class _Deadlines:
    """Shuts a connection's socket down when its time is up, whatever its
    reads and writes are doing (the handler then sees EOF or EPIPE and
    ends). One thread for all of a server's connections."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[socket.socket, float] = {}
        self._closed = False
        threading.Thread(target=self._run, name="http-deadlines", daemon=True).start()

    def add(self, sock: socket.socket, seconds: float) -> None:
        with self._cond:
            self._due[sock] = time.monotonic() + seconds
            self._cond.notify()

    def discard(self, sock: socket.socket) -> None:
        """Call before closing ``sock``: after this the watcher never touches
        it, so it cannot shut down a descriptor number reused meanwhile."""
        with self._cond:
            self._due.pop(sock, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for sock, due in list(self._due.items()):
                    if due <= now:
                        del self._due[sock]
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                self._cond.wait(min(self._due.values(), default=now + 60.0) - now)


class BoundedHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that cannot be made to grow or be held: at
    most ``max_clients`` requests in service (one thread each), at most
    ``max_per_peer`` of them from one peer uid, and one deadline for each
    whole request. With ``allowed_uids``, peers of any other uid (or of no
    known uid) are closed unread. The stdlib server starts a thread per
    connection without bound: partial requests from any local user once
    drove a gateway to 10,000 threads, and its decisions into policy_timeout;
    a per-read timeout alone let one slow client per slot hold the bundle
    server, and with it a policy revocation, for as long as it liked."""

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
        max_per_peer: int = HTTP_MAX_PER_PEER,
        timeout_s: float = HTTP_TIMEOUT_S,
        allowed_uids: Collection[int] | None = None,
        uid_of: Callable[[socket.socket], int | None] = peer_uid,
    ) -> None:
        super().__init__(address, handler)
        self._max_clients = max_clients
        self._max_per_peer = max_per_peer
        self._timeout_s = timeout_s
        self._allowed = None if allowed_uids is None else frozenset(allowed_uids)
        self._uid_of = uid_of
        self._lock = threading.Lock()
        self._in_service: dict[int | str, int] = {}
        self._deadlines = _Deadlines()
        self.refused = 0

    def _admit(self, request: socket.socket) -> int | str | None:
        """The peer's count to charge, or None to refuse the connection."""
        with self._lock:
            if sum(self._in_service.values()) >= self._max_clients:
                return None  # full: refused without a uid lookup
        uid = self._uid_of(request)
        if self._allowed is not None and uid not in self._allowed:
            return None
        peer: int | str = UNKNOWN_PEER if uid is None else uid
        with self._lock:
            if (
                sum(self._in_service.values()) >= self._max_clients
                or self._in_service.get(peer, 0) >= self._max_per_peer
            ):
                return None
            self._in_service[peer] = self._in_service.get(peer, 0) + 1
        return peer

    def _release(self, peer: int | str) -> None:
        with self._lock:
            self._in_service[peer] -= 1
            if not self._in_service[peer]:
                del self._in_service[peer]

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = self._admit(request)
        if peer is None:
            self.refused += 1
            self.shutdown_request(request)
            return
        request.settimeout(self._timeout_s)
        self._deadlines.add(request, self._timeout_s)
        try:
            threading.Thread(target=self._serve, args=(request, client_address, peer), daemon=True).start()
        except BaseException:
            self._deadlines.discard(request)
            self._release(peer)
            raise

    def _serve(self, request: Any, client_address: Any, peer: int | str) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver's own thread does
            self.handle_error(request, client_address)
        finally:
            self._deadlines.discard(request)
            self.shutdown_request(request)
            self._release(peer)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that times out or goes away is not worth a traceback.
        del request, client_address

    def server_close(self) -> None:
        super().server_close()
        self._deadlines.close()


def serve_http(
    host: str,
    port: int,
    handler: type[http.server.BaseHTTPRequestHandler],
    *,
    allowed_uids: Collection[int] | None = None,
) -> BoundedHTTPServer:
    """Starts a BoundedHTTPServer in a daemon thread (``allowed_uids``: see there)."""
    server = BoundedHTTPServer((host, port), handler, allowed_uids=allowed_uids)
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


#: How long a health probe waits for the daemon's /metrics.
HEALTH_TIMEOUT_S = 3.0


def probe_health(ready_file: str, *, gauge: str | None = None) -> str | None:
    """For container healthchecks: None when the daemon that wrote
    ``ready_file`` is alive and answers on its /metrics (and ``gauge``, when
    given, reads 1 there); otherwise what is wrong, in one line. The ready
    file is written only once the daemon serves, so a daemon still starting
    or stopped on a misconfiguration is never reported healthy."""
    import urllib.request  # noqa: PLC0415 - only the probe needs it

    try:
        info = json.loads(Path(ready_file).read_text(encoding="utf-8"))
        pid = int(info["pid"])
        url = str(info["metrics"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"not serving: no usable ready file {ready_file} ({exc})"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"not serving: pid {pid} of {ready_file} is gone"
    except PermissionError:
        pass  # alive, someone else's
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as resp:  # noqa: S310 - our own metrics URL
            body = resp.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"metrics {url} do not answer: {exc}"
    if gauge is not None:
        for line in body.splitlines():
            name, _, value = line.partition(" ")
            if name == gauge:
                return None if float(value) == 1.0 else f"{gauge} is {value}"
        return f"{gauge} is missing from {url}"
    return None
