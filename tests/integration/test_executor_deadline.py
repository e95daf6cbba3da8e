"""Sandboxes end on their own, what runs is exactly argv, and only registry
images run: a real executor daemon on real Docker (runc and gVisor).

A SIGKILLed executor cannot kill its sandboxes. Each one still ends at its
deadline: the deadline wrapper (PID 1 of the container) kills the tool at
timeout + 2 s, and the reaper (a process of its own) removes the container
once the executor is gone. A sandbox that freezes its wrapper (SIGSTOP to
PID 1, which gVisor delivers) is removed by the reaper at its reap_at.

Timing asserts here are deadlines plus generous slack, never speed."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from helpers import start_daemon, stop_daemon

from airlock.executor._options import REAP_AT_LABEL, WRAPPER_GRACE_MS
from airlock.executor._runner import RUN_ERRORS
from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

pytestmark = pytest.mark.integration
IMAGE = "airlock/sandbox-python:4"
#: An image whose own ENTRYPOINT would swallow the tool's argv.
ENTRY_IMAGE = "airlock-test/entrypoint:1"
#: Slack on top of a deadline for a loaded 2-core CI machine.
SLACK_S = 15


@dataclass
class Daemon:
    proc: Any
    info: dict[str, Any]
    token: str
    folder: Path

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.info['socket']}")


def _start(folder: Path, **config: Any) -> Daemon:
    token = uuid.uuid4().hex * 2
    (folder / "executor.token").write_text(token)
    (folder / "executor.token").chmod(0o600)
    base = {
        "socket": str(folder / "run" / "executor.sock"),
        "token_file": str(folder / "executor.token"),
        "metrics_listen": "127.0.0.1:0",
        "runtimes": ["runc", "runsc"],
        "egress": {"enabled": False},
    }
    proc, info = start_daemon("executor", {**base, **config}, folder)
    return Daemon(proc, info, token, folder)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = _start(tmp_path, allowed_images=[IMAGE])
    yield d
    if d.proc.poll() is None:
        stop_daemon(d.proc)


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def _spec(argv: list[str], *, image: str = IMAGE, runtime: str = "runc", timeout_ms: int = 20_000) -> Any:
    return executor_pb2.RunSpec(
        run_id=str(uuid.uuid4()),
        tool="python",
        image=image,
        argv=argv,
        limits=call_pb2.Limits(timeout_ms=timeout_ms),
        network=call_pb2.Network(mode=call_pb2.NETWORK_MODE_NONE),
        runtime=runtime,
    )


def _run(d: Daemon, spec: Any) -> tuple[bytes, Any]:
    out = bytearray()
    result = None
    with d.channel() as channel:
        for event in executor_pb2_grpc.ExecutorServiceStub(channel).Run(
            executor_pb2.RunRequest(spec=spec), metadata=(("authorization", f"Bearer {d.token}"),), timeout=120
        ):
            if event.WhichOneof("event") == "output":
                out.extend(event.output.data)
            elif event.WhichOneof("event") == "result":
                result = event.result
    return bytes(out), result


def _container(client: docker.DockerClient, run_id: str) -> Any | None:
    # docker-py inspects each listed container: one removed in between is a
    # 404 from the listing itself, which here means it is gone.
    for _ in range(3):
        try:
            found = client.containers.list(all=True, filters={"label": f"airlock.run_id={run_id}"})
        except docker.errors.NotFound:
            continue
        return found[0] if found else None
    return None


def _wait_for(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def _docker_time(text: str) -> float:
    # Docker's RFC 3339 with nanoseconds; fromisoformat takes microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


def _start_orphan(d: Daemon, client: docker.DockerClient, spec: Any) -> tuple[Any, threading.Thread]:
    """Starts a run, waits until its container runs, then SIGKILLs the executor."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _run(d, spec)
        except grpc.RpcError as exc:  # the executor dies under it
            errors.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    container = _wait_for(
        "the sandbox to start",
        lambda: (c := _container(client, spec.run_id)) is not None and c.status == "running" and c,
        60,
    )
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(10)
    return container, caller


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_sandbox_ends_at_its_deadline_after_the_executor_is_sigkilled(
    daemon: Daemon, docker_client: docker.DockerClient, runtime: str
) -> None:
    """The reported case: still up at 24 s with a 10 s limit, until the next
    executor start. Now the wrapper ends it at timeout + 2 s (which also
    shows the seccomp profile lets GNU timeout work, under runc and gVisor),
    and the reaper removes it; then the reaper exits."""
    timeout_ms = 5000
    spec = _spec(["python3", "-c", "import time; time.sleep(600)"], runtime=runtime, timeout_ms=timeout_ms)
    container, caller = _start_orphan(daemon, docker_client, spec)
    started = _docker_time(container.attrs["State"]["StartedAt"])
    died = _death(docker_client, container.id, started, timeout_ms / 1000 + SLACK_S + 10)
    lived = died["time"] - started
    print(f"\n{runtime}: orphaned sandbox lived {lived:.1f} s (timeout {timeout_ms / 1000:.0f} s)")
    assert lived <= (timeout_ms + WRAPPER_GRACE_MS) / 1000 + SLACK_S
    assert lived >= timeout_ms / 1000  # ended by the deadline, not by the kill of the executor
    assert died["exitCode"] == "137"  # the wrapper's SIGKILL
    # The reaper collects the stopped container of the dead executor ...
    _wait_for("the reaper to remove it", lambda: _container(docker_client, spec.run_id) is None, SLACK_S + 10)
    # ... and, with nothing of its executor left, exits.
    reaper = daemon.info["reaper_pid"]
    _wait_for("the reaper to exit", lambda: not Path(f"/proc/{reaper}").exists() or _zombie(reaper), SLACK_S)
    caller.join(30)


def _death(client: docker.DockerClient, container_id: str, since: float, timeout_s: float) -> dict[str, Any]:
    """The container's "die" event: when (Docker's clock) and its exit code.
    Events, not inspect: the reaper may remove the container right after."""
    events = client.events(
        since=int(since) - 1,
        until=int(time.time() + timeout_s),
        filters={"container": container_id, "event": "die"},
        decode=True,
    )
    try:
        for event in events:
            return {"time": event["timeNano"] / 1e9, "exitCode": event["Actor"]["Attributes"].get("exitCode")}
    finally:
        events.close()
    raise AssertionError(f"the sandbox did not die within {timeout_s:.0f} s")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


FREEZE_PID1 = """
import os, signal, time
os.kill(1, signal.SIGSTOP)  # the deadline wrapper
print("froze pid 1", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_a_sandbox_that_freezes_its_wrapper_is_still_removed(
    daemon: Daemon, docker_client: docker.DockerClient, runtime: str
) -> None:
    """Under runc the kernel does not deliver SIGSTOP to the namespace's
    init from inside, so the wrapper still fires; gVisor does deliver it,
    and then the reaper removes the container at its reap_at label."""
    timeout_ms = 3000
    spec = _spec(["python3", "-c", FREEZE_PID1], runtime=runtime, timeout_ms=timeout_ms)
    container, caller = _start_orphan(daemon, docker_client, spec)
    reap_at = int(container.labels[REAP_AT_LABEL])
    _wait_for(
        "the frozen sandbox to be gone or stopped",
        lambda: (c := _container(docker_client, spec.run_id)) is None or c.status == "exited",
        max(reap_at - time.time(), 0) + SLACK_S + 5,
    )
    _wait_for("its container to be removed", lambda: _container(docker_client, spec.run_id) is None, SLACK_S + 5)
    print(f"\n{runtime}: frozen-wrapper sandbox gone {time.time() - reap_at:+.1f} s from its reap_at")
    caller.join(30)


# -- exactly argv, and only registry images -------------------------------------------------


@pytest.fixture(scope="module")
def entry_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """The sandbox image plus an ENTRYPOINT, built locally (no pull)."""
    dockerfile = f'FROM {IMAGE}\nENTRYPOINT ["/bin/echo", "ENTRYPOINT-RAN"]\n'.encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=ENTRY_IMAGE, pull=False, rm=True)
    yield ENTRY_IMAGE
    docker_client.images.remove(ENTRY_IMAGE, force=True)


@pytest.fixture(scope="module")
def registry_daemon(tmp_path_factory: pytest.TempPathFactory, entry_image: str) -> Iterator[Daemon]:
    folder = tmp_path_factory.mktemp("registry-daemon")
    registry = folder / "tool_registry.yaml"
    _write_registry(registry, IMAGE, entry_image)
    d = _start(folder, registry_file=str(registry))
    yield d
    stop_daemon(d.proc)


def _write_registry(path: Path, *images: str) -> None:
    tools = {f"tool{i}": {"image": image, "argv": ["{code}"]} for i, image in enumerate(images)}
    path.write_text(yaml.safe_dump({"version": 1, "tools": tools}))


def test_what_runs_is_exactly_argv_whatever_the_images_entrypoint(registry_daemon: Daemon, entry_image: str) -> None:
    spec = _spec(["python3", "-c", "import sys; print(sys.argv)", "a b"], image=entry_image)
    out, result = _run(registry_daemon, spec)
    assert result.outcome == executor_pb2.OUTCOME_OK
    # Before: "ENTRYPOINT-RAN python3 -c ..." (the argv appended to the image's entrypoint).
    assert out == b"['-c', 'a b']\n"


def test_an_image_the_registry_does_not_name_is_refused(
    registry_daemon: Daemon, docker_client: docker.DockerClient
) -> None:
    for image in ("alpine:3.19", f"{IMAGE}-other", "docker.io/airlock/sandbox-python:4"):
        spec = _spec(["true"], image=image)
        with registry_daemon.channel() as channel, pytest.raises(grpc.RpcError) as info:
            list(
                executor_pb2_grpc.ExecutorServiceStub(channel).Run(
                    executor_pb2.RunRequest(spec=spec),
                    metadata=(("authorization", f"Bearer {registry_daemon.token}"),),
                    timeout=30,
                )
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (info.value.details() or "").startswith("image_not_allowed: ")
        assert _container(docker_client, spec.run_id) is None


def test_the_registry_is_reread_when_it_changes(registry_daemon: Daemon, entry_image: str) -> None:
    registry = Path(registry_daemon.folder / "tool_registry.yaml")
    try:
        _write_registry(registry, IMAGE)
        os.utime(registry, ns=(time.time_ns() + 10**9,) * 2)
        with pytest.raises(grpc.RpcError) as info:
            _run(registry_daemon, _spec(["true"], image=entry_image))
        assert (info.value.details() or "").startswith("image_not_allowed: ")
        _, result = _run(registry_daemon, _spec(["true"]))
        assert result.outcome == executor_pb2.OUTCOME_OK
    finally:
        _write_registry(registry, IMAGE, entry_image)
        os.utime(registry, ns=(time.time_ns() + 2 * 10**9,) * 2)


def test_without_a_registry_nothing_runs(tmp_path: Path) -> None:
    """Fail closed: an executor.yaml with neither registry_file nor allowed_images refuses every image."""
    d = _start(tmp_path)
    try:
        with pytest.raises(grpc.RpcError) as info:
            _run(d, _spec(["true"]))
        assert (info.value.details() or "").startswith("image_not_allowed: ")
    finally:
        stop_daemon(d.proc)


def test_docker_error_text_is_not_returned(registry_daemon: Daemon) -> None:
    """Docker refuses a 1 MiB memory limit; the caller (and so the model)
    gets a reason code and a fixed message, not Docker's words."""
    spec = _spec(["true"])
    spec.limits.memory_bytes = 1024 * 1024
    _, result = _run(registry_daemon, spec)
    assert result.outcome == executor_pb2.OUTCOME_ERROR
    assert result.error == f"docker_error: {RUN_ERRORS['docker_error']}"
    assert "Minimum memory" not in result.error
