"""The executor socket's front door: who is calling, checked by the kernel,
before gRPC sees a byte.

grpc-python does not expose a Unix peer's credentials, so the gRPC server
listens on an inner socket in a 0700 folder only the executor's uid can
open, and this gate owns the public socket the gateway connects to. For
every connection it reads SO_PEERCRED (the peer's uid as of its connect(2),
which the peer cannot forge); a uid outside allowed_peer_uids is logged with
its uid and pid, counted (airlock_executor_refused_peers_total) and closed at
once, unread. An allowed peer's bytes are relayed both ways to the inner
socket, where the token check (TokenInterceptor) still applies.

The public socket's folder is 0750 (setgid) and the socket 0660, both of
socket_group, so the gateway's uid, running apart from the executor's, can
connect through that group; without socket_group they are 0700 and 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
import time
from pathlib import Path

from airlock.common import ConfigError
from airlock.executor._metrics import ExecutorMetrics

log = logging.getLogger("airlock.executor")

#: struct ucred: pid, uid, gid.
_UCRED = struct.Struct("3i")
#: Bytes moved per read; gRPC frames are at most 16 KiB by default.
RELAY_CHUNK = 64 * 1024
#: The longest a Unix socket path may be (sun_path less its NUL).
MAX_SOCKET_PATH = 107
#: How long a closing relay may take to flush to a peer that stopped reading.
CLOSE_TIMEOUT_S = 5
#: At most this many refused-peer log lines per window; the rest are counted
#: in the next line (the metric counts every one).
LOG_BURST = 10
LOG_WINDOW_S = 60.0


def inner_socket_path(public: Path) -> Path:
    """Where the gRPC server listens: a private folder beside the public socket."""
    return public.parent / f".{public.name}.inner" / "grpc.sock"


def prepare_socket_folders(public: Path, group: int | None) -> Path:
    """Creates (or re-moulds) the public folder and the private inner one,
    removes stale sockets, and returns the inner socket's path."""
    inner = inner_socket_path(public)
    for path in (public, inner):
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ConfigError(str(path), "socket", f"a Unix socket path must be at most {MAX_SOCKET_PATH} bytes")
    folder = public.parent
    folder.mkdir(parents=True, exist_ok=True)
    _refuse_symlink(folder)
    if group is not None:
        # Leave a folder that is already right alone: `airlock up` (root)
        # makes it setgid with the gateway's group, and an executor that is
        # not in that group could not set the bit again (the kernel drops
        # it) or chown to the group. chown before chmod: a chown clears it.
        st = folder.stat()
        # A failure is reported below, in one line naming what is wrong.
        with contextlib.suppress(PermissionError):
            if st.st_gid != group:
                os.chown(folder, -1, group)
            if stat.S_IMODE(folder.stat().st_mode) != 0o2750:  # noqa: PLR2004 - the mode itself
                folder.chmod(0o2750)
        st = folder.stat()
        if stat.S_IMODE(st.st_mode) != 0o2750 or st.st_gid != group:  # noqa: PLR2004 - the mode itself
            # The kernel drops a setgid bit set by a non-member silently.
            raise ConfigError(
                str(folder),
                "socket_group",
                f"the socket folder must be mode 2750 with group {group}, and this process cannot make it so "
                f"(it is {stat.S_IMODE(st.st_mode):o}, group {st.st_gid}); prepare it as root",
            )
    else:
        folder.chmod(0o700)
    inner.parent.mkdir(mode=0o700, exist_ok=True)
    _refuse_symlink(inner.parent)
    # mkdir's mode is filtered by the umask, and an old folder keeps its own.
    inner.parent.chmod(0o700)
    for path in (public, inner):
        if path.is_socket() or path.exists():
            path.unlink()
    return inner


def _refuse_symlink(path: Path) -> None:
    if stat.S_ISLNK(os.lstat(path).st_mode):
        raise ConfigError(str(path), "socket", "the socket folder must not be a symbolic link")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of a connected Unix socket's peer."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid


class PeerGate:
    """The public socket; relays allowed peers to the inner gRPC socket."""

    def __init__(
        self,
        public: Path,
        inner: Path,
        allowed_uids: tuple[int, ...],
        group: int | None,
        metrics: ExecutorMetrics,
    ) -> None:
        self._public = public
        self._inner = inner
        self._allowed = frozenset(allowed_uids)
        self._group = group
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._window_start = 0.0
        self._logged = 0
        self._unlogged = 0

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self._public))
            # Mode and group are set before listen(): until then a connect
            # is refused, so there is no moment with the umask's mode.
            if self._group is not None:
                # A setgid folder of that group (what `airlock up` makes)
                # already gives the socket its group; a process that is not
                # in the group could not chown to it anyway.
                if self._public.stat().st_gid != self._group:
                    os.chown(self._public, -1, self._group)
                self._public.chmod(0o660)
            else:
                self._public.chmod(0o600)
            sock.listen(128)
            sock.setblocking(False)
            self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=RELAY_CHUNK)
        except BaseException:
            sock.close()
            raise

    async def stop_accepting(self) -> None:
        """No new connections (shutdown); open relays go on until closed."""
        if self._server is not None:
            self._server.close()
            # No wait_closed(): on 3.12+ it waits for every open connection.

    async def close(self) -> None:
        """Ends every open relay."""
        await self.stop_accepting()
        for task in list(self._relays):
            task.cancel()
        if self._relays:
            await asyncio.gather(*self._relays, return_exceptions=True)

    @property
    def open_relays(self) -> int:
        return len(self._relays)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        try:
            await self._admit_and_relay(reader, writer)
        finally:
            self._relays.discard(task)

    async def _admit_and_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        try:
            pid, uid, gid = peer_credentials(raw)
        except OSError:
            pid, uid, gid = 0, -1, -1
        if uid not in self._allowed:
            self._metrics.refused_peers.inc()
            self._log_refusal(pid, uid, gid)
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self._inner), limit=RELAY_CHUNK)
        except OSError as exc:
            log.error("cannot reach the gRPC server at %s: %s", self._inner, exc)  # noqa: TRY400 - the cause is the message
            writer.transport.abort()
            return
        out = asyncio.ensure_future(_pump(reader, up_writer))
        back = asyncio.ensure_future(_pump(up_reader, writer))
        try:
            # gRPC over HTTP/2 never half-closes: either side ending ends both.
            await asyncio.wait({out, back}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (out, back):
                t.cancel()
            await asyncio.gather(out, back, return_exceptions=True)
            await asyncio.gather(_close(writer), _close(up_writer))

    def _log_refusal(self, pid: int, uid: int, gid: int) -> None:
        # A process that may open the socket could otherwise fill the log.
        now = time.monotonic()
        if now - self._window_start > LOG_WINDOW_S:
            self._window_start, self._logged = now, 0
        if self._logged >= LOG_BURST:
            self._unlogged += 1
            return
        self._logged += 1
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        self._unlogged = 0
        log.warning(
            "refused a connection to the executor socket from uid %d (pid %d, gid %d): "
            "not in allowed_peer_uids%s",
            uid, pid, gid, more,
        )  # fmt: skip


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(RELAY_CHUNK):
            dst.write(data)
            await dst.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT_S)
    except (TimeoutError, ConnectionError, OSError):
        # A peer that stopped reading must not pin the descriptors.
        writer.transport.abort()
