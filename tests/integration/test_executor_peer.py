"""The executor's peer check on a real executor daemon: who may talk to its
socket is decided by the peer's uid (SO_PEERCRED), before gRPC sees a byte,
and the token check still applies on top.

Clients of other uids are made the way the kernel sees them: a forked child
drops to the uid (and the socket's group, so the file mode lets it open
the socket), connects, and hands the connected socket to this process over
SCM_RIGHTS; SO_PEERCRED keeps the credentials of the connect(2). A small
relay then lets a real gRPC client use that connection."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
from helpers import scrape, start_daemon, stop_daemon

from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-python:4"
#: The socket's group, an allowed uid (the gateway's stand-in) and a uid
#: that has the group (so it can open the socket file) but is not allowed.
GROUP = 4242
GATEWAY_UID = 4243
INTRUDER_UID = 4244
NOBODY = 65534


@dataclass(frozen=True)
class Daemon:
    pid: int
    socket: str
    token: str
    metrics: str

    def metric(self, name: str) -> float:
        return scrape(self.metrics, name)

    def fds(self) -> int:
        return sum(1 for _ in Path(f"/proc/{self.pid}/fd").iterdir())


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    # Not under pytest's tmp_path (/tmp/pytest-of-root is 0700): the other
    # uids must be able to walk to the socket.
    folder = Path(tempfile.mkdtemp(prefix="airlock-peer-", dir="/tmp"))
    folder.chmod(0o711)
    token = uuid.uuid4().hex + uuid.uuid4().hex
    (folder / "executor.token").write_text(token)
    (folder / "executor.token").chmod(0o600)
    proc, info = start_daemon(
        "executor",
        {
            "socket": str(folder / "run" / "executor.sock"),
            "token_file": str(folder / "executor.token"),
            "metrics_listen": "127.0.0.1:0",
            "allowed_peer_uids": [GATEWAY_UID],
            "socket_group": GROUP,
            "allowed_images": [IMAGE],
            "egress": {"enabled": False},
        },
        folder / "conf",
    )
    try:
        yield Daemon(proc.pid, info["socket"], token, info["metrics"])
    finally:
        stop_daemon(proc)
        shutil.rmtree(folder, ignore_errors=True)


def connect_as(uid: int, gid: int, path: str, groups: tuple[int, ...] = ()) -> socket.socket:
    """A socket connected to ``path`` by a process of uid/gid; raises the
    child's connect error (PermissionError, ...) here."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # child: no Python-level clean-up, no grpc
        code = 1
        try:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
            except OSError as exc:
                theirs.sendall(f"E{exc.errno}".encode())
            else:
                socket.send_fds(theirs, [b"S"], [s.fileno()])
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    try:
        msg, fds, _, _ = socket.recv_fds(ours, 16, 1)
    finally:
        ours.close()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    if not fds:
        errno_ = int(msg.decode()[1:])
        raise OSError(errno_, os.strerror(errno_))
    return socket.socket(fileno=fds[0])


class Relay:
    """A private Unix socket whose one connection is spliced to ``conn``, so
    that a gRPC channel rides the connection another uid made."""

    def __init__(self, conn: socket.socket) -> None:
        self._dir = tempfile.mkdtemp(prefix="airlock-relay-")
        self.path = str(Path(self._dir) / "r.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(1)
        self._conn = conn
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:  # closed before anyone connected
            return
        pumps = [
            threading.Thread(target=_splice, args=(client, self._conn), daemon=True),
            threading.Thread(target=_splice, args=(self._conn, client), daemon=True),
        ]
        for t in pumps:
            t.start()
        for t in pumps:
            t.join()
        client.close()

    def close(self) -> None:
        self._conn.close()
        self._listener.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _splice(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _spec(argv: list[str]) -> executor_pb2.RunSpec:
    return executor_pb2.RunSpec(
        run_id=str(uuid.uuid4()),
        tool="python",
        image=IMAGE,
        argv=argv,
        limits=call_pb2.Limits(timeout_ms=20_000),
        network=call_pb2.Network(mode=call_pb2.NETWORK_MODE_NONE),
        runtime="runc",
    )


def run_over(conn: socket.socket, token: str | None, argv: list[str]) -> tuple[bytes, Any]:
    """One Run RPC over an already connected socket; returns stdout and the result."""
    relay = Relay(conn)
    out = bytearray()
    result = None
    try:
        with grpc.insecure_channel(f"unix:{relay.path}") as channel:
            md = () if token is None else (("authorization", f"Bearer {token}"),)
            for event in executor_pb2_grpc.ExecutorServiceStub(channel).Run(
                executor_pb2.RunRequest(spec=_spec(argv)), metadata=md, timeout=60
            ):
                if event.WhichOneof("event") == "output":
                    out.extend(event.output.data)
                elif event.WhichOneof("event") == "result":
                    result = event.result
    finally:
        relay.close()
    return bytes(out), result


def _containers_now() -> int:
    client = docker.from_env()
    try:
        return len(client.containers.list(all=True, filters={"label": "airlock.managed=true"}))
    finally:
        client.close()


def test_the_socket_is_0660_in_a_0750_setgid_folder_of_the_group(daemon: Daemon) -> None:
    sock = Path(daemon.socket)
    st = sock.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, GROUP)
    folder = sock.parent.stat()
    assert (stat.S_IMODE(folder.st_mode), folder.st_gid) == (0o2750, GROUP)


def test_an_allowed_uid_with_the_token_runs(daemon: Daemon) -> None:
    conn = connect_as(GATEWAY_UID, GROUP, daemon.socket)
    out, result = run_over(conn, daemon.token, ["python3", "-c", "print('from the gateway uid')"])
    assert result is not None
    assert result.outcome == executor_pb2.OUTCOME_OK
    assert out == b"from the gateway uid\n"


def test_an_allowed_uid_without_the_token_is_still_refused(daemon: Daemon) -> None:
    before = daemon.metric("airlock_executor_unauthenticated_requests_total")
    conn = connect_as(GATEWAY_UID, GROUP, daemon.socket)
    with pytest.raises(grpc.RpcError) as info:
        run_over(conn, "not-the-executor-token", ["python3", "-c", "print(1)"])
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert daemon.metric("airlock_executor_unauthenticated_requests_total") == before + 1


@pytest.mark.parametrize(
    ("uid", "gid"),
    [pytest.param(INTRUDER_UID, GROUP, id="another-uid-in-the-group"), pytest.param(0, 0, id="root")],
)
def test_a_uid_that_is_not_allowed_is_refused_even_with_the_token(daemon: Daemon, uid: int, gid: int) -> None:
    """It can open the socket file (group, or root) and holds the token; the
    gate closes the connection before gRPC reads anything."""
    refused = daemon.metric("airlock_executor_refused_peers_total")
    requests = daemon.metric("airlock_executor_requests_total")
    containers = _containers_now()
    conn = connect_as(uid, gid, daemon.socket)
    with pytest.raises(grpc.RpcError) as info:
        run_over(conn, daemon.token, ["python3", "-c", "print('must not run')"])
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert daemon.metric("airlock_executor_refused_peers_total") == refused + 1
    # Not even counted as a request: no byte reached gRPC.
    assert daemon.metric("airlock_executor_requests_total") == requests
    assert _containers_now() == containers


def test_a_uid_without_the_group_cannot_open_the_socket(daemon: Daemon) -> None:
    with pytest.raises(PermissionError):
        connect_as(NOBODY, NOBODY, daemon.socket)


def test_many_refused_and_closed_connections_leave_no_descriptors(daemon: Daemon) -> None:
    """The gate closes refused peers at once and releases both ends of a
    finished relay: the executor's descriptor count stays flat."""
    before = daemon.fds()
    refused = daemon.metric("airlock_executor_refused_peers_total")
    for _ in range(200):
        connect_as(INTRUDER_UID, GROUP, daemon.socket).close()
    for _ in range(50):
        conn = connect_as(GATEWAY_UID, GROUP, daemon.socket)
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        conn.close()
    assert daemon.metric("airlock_executor_refused_peers_total") == refused + 200
    deadline_polls = 100
    for _ in range(deadline_polls):  # closing is asynchronous; wait until it settles
        if daemon.fds() <= before + 2:
            break
        threading.Event().wait(0.1)
    after = daemon.fds()
    print(f"\nexecutor descriptors: {before} before, {after} after 200 refused + 50 relayed connections")
    # A leak would show as hundreds; gRPC may hold a couple of its own.
    assert after <= before + 2, (before, after)
    # And it still serves the gateway.
    out, result = run_over(connect_as(GATEWAY_UID, GROUP, daemon.socket), daemon.token, ["python3", "-c", "print(2)"])
    assert (result.outcome, out) == (executor_pb2.OUTCOME_OK, b"2\n")
