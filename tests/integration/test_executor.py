"""The executor daemon on real Docker: who may call it, what a container
gets, and that every run's container is gone afterwards.

These tests start an executor of their own (as root, the default peer it
allows), so they do not depend on how `airlock up` lays out its users;
tests/integration/test_executor_peer.py covers the peer check with other
uids."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import grpc
import pytest
import yaml
from helpers import scrape, start_daemon, stop_daemon

from airlock.executor._config import ExecutorConfig
from airlock.executor._options import executor_instance
from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-python:4"


@dataclass(frozen=True)
class Executor:
    socket: str
    executor_token: str
    token_file: Path
    metrics: str

    def metric(self, name: str) -> float:
        return scrape(self.metrics, name)


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Executor]:
    folder = tmp_path_factory.mktemp("executor")
    token = uuid.uuid4().hex * 2
    (folder / "executor.token").write_text(token)
    (folder / "executor.token").chmod(0o600)
    proc, info = start_daemon(
        "executor",
        {
            "socket": str(folder / "run" / "executor.sock"),
            "token_file": str(folder / "executor.token"),
            "metrics_listen": "127.0.0.1:0",
            "allowed_images": [IMAGE],
            "egress": {"enabled": False},
        },
        folder,
    )
    yield Executor(info["socket"], token, folder / "executor.token", info["metrics"])
    assert stop_daemon(proc) == 0


def _channel(ex: Executor) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{ex.socket}")


def _spec(argv: list[str], **limits: int) -> executor_pb2.RunSpec:
    return executor_pb2.RunSpec(
        run_id=str(uuid.uuid4()),
        tool="python",
        image=IMAGE,
        argv=argv,
        limits=call_pb2.Limits(**limits),
        network=call_pb2.Network(mode=call_pb2.NETWORK_MODE_NONE),
        runtime="runc",
    )


def _run(
    ex: Executor, spec: executor_pb2.RunSpec, token: str | None = None
) -> tuple[bytes, bytes, executor_pb2.RunResult]:
    out, err = bytearray(), bytearray()
    result = None
    with _channel(ex) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        md = (("authorization", f"Bearer {token or ex.executor_token}"),)
        for event in stub.Run(executor_pb2.RunRequest(spec=spec), metadata=md, timeout=120):
            if event.WhichOneof("event") == "output":
                (out if event.output.stream == executor_pb2.STREAM_STDOUT else err).extend(event.output.data)
            elif event.WhichOneof("event") == "result":
                result = event.result
    assert result is not None
    return bytes(out), bytes(err), result


def _containers(run_id: str) -> list[object]:
    client = docker.from_env()
    try:
        return list(client.containers.list(all=True, filters={"label": f"airlock.run_id={run_id}"}))
    finally:
        client.close()


def test_socket_is_private_to_the_gateway_user(ex: Executor) -> None:
    """Without socket_group: 0600 in a 0700 folder, and gRPC itself listens
    on an inner socket in a 0700 folder of its own."""
    sock = Path(ex.socket)
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    inner = sock.parent / f".{sock.name}.inner"
    assert stat.S_IMODE(inner.stat().st_mode) == 0o700
    assert stat.S_ISSOCK((inner / "grpc.sock").stat().st_mode)


def test_another_user_cannot_connect(ex: Executor) -> None:
    """A non-root local user cannot even open the socket (the OS refuses).

    The child drops to uid/gid 65534 and tries a plain connect(2), which is
    all a gRPC client could do first; exec is avoided because the
    interpreter may live under a home the other user cannot read.
    """
    before = ex.metric("airlock_executor_requests_total")
    sock_path = ex.socket
    pid = os.fork()
    if pid == 0:  # child
        code = 3
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock_path)
            code = 1  # connected: the test must fail
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "a uid-65534 process could connect to the executor socket"
    assert ex.metric("airlock_executor_requests_total") == before


@pytest.mark.parametrize("token", [None, "not-the-executor-token-123"])
def test_same_user_without_the_token_is_refused(ex: Executor, token: str | None) -> None:
    refused_before = ex.metric("airlock_executor_unauthenticated_requests_total")
    spec = _spec(["python3", "-c", "print(1)"])
    md = () if token is None else (("authorization", f"Bearer {token}"),)
    with _channel(ex) as channel, pytest.raises(grpc.RpcError) as info:
        list(
            executor_pb2_grpc.ExecutorServiceStub(channel).Run(
                executor_pb2.RunRequest(spec=spec), metadata=md, timeout=10
            )
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ex.metric("airlock_executor_unauthenticated_requests_total") == refused_before + 1
    assert _containers(spec.run_id) == []


SELF_AUDIT = r"""
import json, os
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
mounts = {}
for line in open("/proc/self/mounts"):
    dev, mnt, fs, opts = line.split()[:4]
    mounts[mnt] = opts.split(",")
def can_write(path):
    try:
        open(path, "w").close(); return True
    except OSError:
        return False
ifaces = [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]]
print(json.dumps({
    "CapEff": status["CapEff"].strip(), "CapPrm": status["CapPrm"].strip(), "CapBnd": status["CapBnd"].strip(),
    "Seccomp": status["Seccomp"].strip(), "NoNewPrivs": status["NoNewPrivs"].strip(),
    "uid": os.getuid(), "gid": os.getgid(), "root": mounts["/"], "tmp": mounts["/tmp"], "work": mounts["/work"],
    "write_root": can_write("/airlock-probe"), "write_tmp": can_write("/tmp/probe"),
    "write_work": can_write("/work/probe"),
    "ifaces": ifaces, "env": dict(os.environ), "docker_sock": os.path.exists("/var/run/docker.sock"),
}))
"""


def test_container_is_hardened(ex: Executor) -> None:
    out, err, result = _run(ex, _spec(["python3", "-I", "-c", SELF_AUDIT]))
    assert result.outcome == executor_pb2.OUTCOME_OK, err
    audit = json.loads(out)
    assert audit["CapEff"] == audit["CapPrm"] == audit["CapBnd"] == "0000000000000000"
    assert audit["Seccomp"] == "2"
    assert audit["NoNewPrivs"] == "1"
    assert audit["uid"] == 65534
    assert audit["gid"] == 65534
    assert "ro" in audit["root"]
    assert {"nosuid", "nodev", "noexec"} <= set(audit["tmp"])
    assert {"nosuid", "nodev"} <= set(audit["work"])
    assert (audit["write_root"], audit["write_tmp"], audit["write_work"]) == (False, True, True)
    assert audit["ifaces"] == ["lo"]
    assert audit["docker_sock"] is False
    assert ex.executor_token not in json.dumps(audit["env"])
    assert set(audit["env"]) <= {"PATH", "HOSTNAME", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE"}


def test_limits_are_applied_to_the_container(ex: Executor) -> None:
    spec = _spec(["sleep", "30"], memory_bytes=64 * 1024 * 1024, pids=16, cpu_millis=250, timeout_ms=20_000)
    client = docker.from_env()
    seen: dict[str, object] = {}

    def inspect() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = client.containers.list(filters={"label": f"airlock.run_id={spec.run_id}"})
            if found:
                seen.update(found[0].attrs["HostConfig"])
                with _channel(ex) as channel:
                    executor_pb2_grpc.ExecutorServiceStub(channel).Cancel(
                        executor_pb2.CancelRequest(run_id=spec.run_id),
                        metadata=(("authorization", f"Bearer {ex.executor_token}"),),
                        timeout=10,
                    )
                return
            time.sleep(0.05)

    t = threading.Thread(target=inspect)
    t.start()
    _, _, result = _run(ex, spec)
    t.join()
    client.close()
    assert result.outcome == executor_pb2.OUTCOME_KILLED
    assert seen["Memory"] == 64 * 1024 * 1024
    assert seen["MemorySwap"] == 64 * 1024 * 1024
    assert seen["PidsLimit"] == 16 + 1  # and one for the deadline wrapper (PID 1)
    assert seen["NanoCpus"] == 250_000_000
    assert seen["NetworkMode"] == "none"
    assert seen["ReadonlyRootfs"] is True
    assert seen["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in seen["SecurityOpt"]  # type: ignore[operator]
    assert _containers(spec.run_id) == []


def test_timeout_kills_the_container(ex: Executor) -> None:
    spec = _spec(["python3", "-c", "while True: pass"], timeout_ms=1000)
    started = time.monotonic()
    _, _, result = _run(ex, spec)
    elapsed = time.monotonic() - started
    assert result.outcome == executor_pb2.OUTCOME_TIMEOUT
    # Generous bound: the point is that it was killed, not left to spin.
    assert elapsed < 15, elapsed
    assert _containers(spec.run_id) == []


def test_output_is_capped_head_and_tail(ex: Executor) -> None:
    code = "import sys\nsys.stdout.write('HEAD' + 'x' * 5_000_000 + 'TAIL')\n"
    out, _, result = _run(ex, _spec(["python3", "-c", code], output_bytes=64 * 1024))
    assert result.output_truncated is True
    assert result.stdout_bytes == 5_000_008
    assert out.startswith(b"HEAD")
    assert out.endswith(b"TAIL")
    assert b"[airlock: output truncated, " in out
    assert len(out) < 64 * 1024 + 200


@pytest.mark.parametrize("setup", ["disabled", "network_not_internal"])
def test_egress_grant_is_refused_when_filtered_egress_is_unavailable(ex: Executor, tmp_path: Path, setup: str) -> None:
    """Fail closed: an executor that cannot filter egress refuses the grant
    and never hands out a network. A pre-existing egress network that is not
    internal (a route out) must not be used."""
    client = docker.from_env()
    open_net = client.networks.create(f"airlock-test-open-{uuid.uuid4().hex[:8]}", driver="bridge")
    egress = {"enabled": False} if setup == "disabled" else {"network": open_net.name, "bridge": "airlock-tst0"}
    proc = None
    try:
        proc, info = start_daemon(
            "executor",
            {
                "socket": str(tmp_path / "run" / "executor.sock"),
                "token_file": str(ex.token_file),
                "metrics_listen": "127.0.0.1:0",
                "allowed_images": [IMAGE],
                "egress": egress,
            },
            tmp_path,
        )
        assert "unavailable" in info["egress"]
        spec = _spec(["python3", "-c", "print(1)"])
        spec.network.mode = call_pb2.NETWORK_MODE_EGRESS
        spec.network.egress_allowlist.append("*.wikipedia.org:443")
        md = (("authorization", f"Bearer {ex.executor_token}"),)
        with grpc.insecure_channel(f"unix:{info['socket']}") as channel:
            stub = executor_pb2_grpc.ExecutorServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Run(executor_pb2.RunRequest(spec=spec), metadata=md))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "egress_unavailable" in (err.value.details() or "")
        assert _containers(spec.run_id) == []
    finally:
        if proc is not None:
            stop_daemon(proc)
        open_net.remove()
        client.close()


def test_client_cancel_removes_the_container(ex: Executor) -> None:
    spec = _spec(["sleep", "60"], timeout_ms=60_000)
    with _channel(ex) as channel:
        call = executor_pb2_grpc.ExecutorServiceStub(channel).Run(
            executor_pb2.RunRequest(spec=spec),
            metadata=(("authorization", f"Bearer {ex.executor_token}"),),
            timeout=120,
        )
        first = next(call)
        assert first.WhichOneof("event") == "started"
        # A warm pool container or a fresh one: either way it goes.
        container_id = first.started.container_id
        assert _exists(container_id)
        call.cancel()
    deadline = time.monotonic() + 20
    while _exists(container_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _exists(container_id)


def _exists(container_id: str) -> bool:
    client = docker.from_env()
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    finally:
        client.close()
    return True


def test_leftover_containers_are_removed_at_startup(ex: Executor, tmp_path: Path) -> None:
    client = docker.from_env()
    socket_path = tmp_path / "run" / "executor.sock"
    mine = executor_instance(ExecutorConfig(socket=str(socket_path.resolve()), token_file="unused"))
    leftover = client.containers.create(
        IMAGE, ["sleep", "600"], labels={"airlock.managed": "true", "airlock.executor": mine}, network_mode="none"
    )
    # Another executor's container on the same engine: not ours to remove.
    theirs = client.containers.create(
        IMAGE, ["sleep", "600"], labels={"airlock.managed": "true", "airlock.executor": "another"}, network_mode="none"
    )
    cfg = tmp_path / "executor.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "socket": str(socket_path),
                "token_file": str(ex.token_file),
                "metrics_listen": "127.0.0.1:0",
            }
        )
    )
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airlock.executor", "serve", "--config", str(cfg), "--ready-file", str(ready)]
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            assert proc.poll() is None
            time.sleep(0.05)
        assert json.loads(ready.read_text())["removed_leftovers"] == 1
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(leftover.id)
        assert client.containers.get(theirs.id).id == theirs.id
    finally:
        theirs.remove(force=True)
        # Already gone when the test passed; removed here when it did not.
        with contextlib.suppress(docker.errors.NotFound):
            leftover.remove(force=True)
        proc.terminate()
        proc.wait(30)
        client.close()
