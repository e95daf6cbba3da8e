"""executor._peer: the gate in front of the executor's gRPC socket, with real
Unix sockets in this process. A peer's uid comes from the kernel
(SO_PEERCRED); here every peer is this process, so "refused" means this uid
is left out of allowed_peer_uids. tests/integration/test_executor_peer.py
connects as other uids to a real executor."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from airlock.common import ConfigError
from airlock.executor._metrics import ExecutorMetrics
from airlock.executor._peer import LOG_BURST, PeerGate, inner_socket_path, peer_credentials, prepare_socket_folders

ME = os.geteuid()
#: A gid no process here has; root may chown to it.
GROUP = 4242


@asynccontextmanager
async def gate(
    folder: Path, prom: CollectorRegistry, allowed: tuple[int, ...], group: int | None = None
) -> AsyncIterator[tuple[Path, list[bytes]]]:
    """A gate at folder/run/executor.sock in front of an echo server on the
    inner socket; yields the public path and what the inner server received."""
    public = folder / "run" / "executor.sock"
    inner = prepare_socket_folders(public, group)
    received: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
            writer.write(b"echo:" + data)
            await writer.drain()
        writer.close()

    inner_server = await asyncio.start_unix_server(echo, str(inner))
    g = PeerGate(public, inner, allowed, group, ExecutorMetrics(prom, ("runc",)))
    await g.start()
    try:
        yield public, received
    finally:
        await g.close()
        inner_server.close()


def _refused(prom: CollectorRegistry) -> float:
    return prom.get_sample_value("airlock_executor_refused_peers_total") or 0.0


def _fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def test_an_allowed_peer_is_relayed_both_ways(tmp_path: Path, prom: CollectorRegistry) -> None:
    async def go() -> None:
        async with gate(tmp_path, prom, (ME,)) as (public, received):
            reader, writer = await asyncio.open_unix_connection(str(public))
            writer.write(b"hello")
            assert await asyncio.wait_for(reader.readexactly(10), 5) == b"echo:hello"
            writer.close()
            assert received == [b"hello"]
            assert _refused(prom) == 0

    asyncio.run(go())


def test_a_peer_of_another_uid_is_closed_unread_and_counted(
    tmp_path: Path, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        async with gate(tmp_path, prom, (ME + 1,)) as (public, received):
            reader, writer = await asyncio.open_unix_connection(str(public))
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                answer = b""
            writer.close()
            assert answer == b""
            # Nothing reached the gRPC side: it never even saw a connection.
            assert received == []
            assert _refused(prom) == 1

    with caplog.at_level(logging.WARNING, "airlock.executor"):
        asyncio.run(go())
    assert f"from uid {ME} (pid {os.getpid()}" in caplog.text


def test_refused_and_relayed_connections_leave_no_descriptors_behind(tmp_path: Path, prom: CollectorRegistry) -> None:
    async def go() -> None:
        async with (
            gate(tmp_path / "a", prom, (ME + 1,)) as (refusing, _),
            gate(tmp_path / "b", CollectorRegistry(), (ME,)) as (relaying, _),
        ):
            before = _fds()
            for _ in range(200):
                _, writer = await asyncio.open_unix_connection(str(refusing))
                writer.close()
                await writer.wait_closed()
            for _ in range(50):
                reader, writer = await asyncio.open_unix_connection(str(relaying))
                writer.write(b"x")
                await reader.readexactly(6)
                writer.close()
                await writer.wait_closed()
            for _ in range(200):  # until the gate has finished closing its ends
                if _fds() <= before:
                    break
                await asyncio.sleep(0.01)
            assert _fds() <= before, (before, _fds())
            assert _refused(prom) == 200

    asyncio.run(go())


def test_refusals_are_logged_in_bursts(
    tmp_path: Path, prom: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A process that may open the socket cannot flood the log; the metric counts all."""

    async def go() -> None:
        async with gate(tmp_path, prom, (ME + 1,)) as (public, _):
            for _ in range(LOG_BURST + 15):
                _, writer = await asyncio.open_unix_connection(str(public))
                writer.close()
                await writer.wait_closed()
            for _ in range(200):
                if _refused(prom) == LOG_BURST + 15:
                    break
                await asyncio.sleep(0.01)

    with caplog.at_level(logging.WARNING, "airlock.executor"):
        asyncio.run(go())
    assert _refused(prom) == LOG_BURST + 15
    assert caplog.text.count("refused a connection to the executor socket") == LOG_BURST


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to a foreign group needs root")
def test_with_a_socket_group_the_folder_is_0750_setgid_and_the_socket_0660(
    tmp_path: Path, prom: CollectorRegistry
) -> None:
    async def go() -> None:
        async with gate(tmp_path, prom, (ME,), group=GROUP) as (public, _):
            folder = public.parent.stat()
            sock = public.stat()
            assert stat.S_IMODE(folder.st_mode) == 0o2750
            assert folder.st_gid == GROUP
            assert stat.S_ISSOCK(sock.st_mode)
            assert stat.S_IMODE(sock.st_mode) == 0o660
            assert sock.st_gid == GROUP
            # The gRPC server's own socket: only this uid can reach it.
            inner = inner_socket_path(public)
            assert stat.S_IMODE(inner.parent.stat().st_mode) == 0o700
            assert inner.parent.stat().st_uid == ME

    asyncio.run(go())


def test_without_a_socket_group_the_socket_is_private(tmp_path: Path, prom: CollectorRegistry) -> None:
    async def go() -> None:
        async with gate(tmp_path, prom, (ME,)) as (public, _):
            assert stat.S_IMODE(public.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(public.stat().st_mode) == 0o600
            assert stat.S_IMODE(inner_socket_path(public).parent.stat().st_mode) == 0o700

    asyncio.run(go())


def test_stale_sockets_are_replaced_and_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    public = tmp_path / "run" / "executor.sock"
    inner = prepare_socket_folders(public, None)
    public.write_text("stale")
    inner.write_text("stale")
    prepare_socket_folders(public, None)
    assert not public.exists()
    assert not inner.exists()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="symbolic link"):
        prepare_socket_folders(tmp_path / "link" / "executor.sock", None)


def test_an_over_long_socket_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at most 107 bytes"):
        prepare_socket_folders(tmp_path / ("x" * 100) / "executor.sock", None)


def test_peer_credentials_are_the_kernels() -> None:
    import socket  # noqa: PLC0415 - only this test needs a raw pair

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == (os.getpid(), os.geteuid(), os.getegid())
