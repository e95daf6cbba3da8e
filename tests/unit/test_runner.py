"""executor._runner.Runner with a fake ContainerRuntime: refusals, outcomes,
timeouts, the one deadline around a run, images only from the registry, no
Docker text in results, and the container removed on every path."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from docker.errors import APIError, ImageNotFound
from prometheus_client import CollectorRegistry

from airlock.common import ConfigError
from airlock.common.wire import LIMIT_KEYS, Limits
from airlock.executor import _runner as runner_module
from airlock.executor._config import ExecutorConfig
from airlock.executor._errors import RunRefused
from airlock.executor._metrics import ExecutorMetrics
from airlock.executor._model import Chunk, RunResult, RunSpec
from airlock.executor._options import DEFAULT_SECCOMP_PROFILE, clamp, executor_instance
from airlock.executor._runner import Runner
from airlock.executor.egress import Egress
from airlock.executor.egress.network import EgressNetwork

CID = "c0ffee"
IMAGE = "img:1"
FAKE_IMAGE_ID = "sha256:" + "ab" * 32


class FakeRuntime:
    """Records every call; `fail` maps a method name to the exception it raises."""

    def __init__(
        self,
        frames: tuple[tuple[bytes | None, bytes | None], ...] = (),
        *,
        exit_code: int = 0,
        oom: bool = False,
        block_until_killed: bool = False,
        fail: dict[str, Exception] | None = None,
        leftovers: tuple[str, ...] = (),
        hang: tuple[str, ...] = (),
    ) -> None:
        self.frames = frames
        self.exit_code = exit_code
        self.oom = oom
        self.block_until_killed = block_until_killed
        self.fail = fail or {}
        self.leftovers = list(leftovers)
        self.calls: list[tuple[str, Any]] = []
        self.options: dict[str, Any] = {}
        self.created: list[dict[str, Any]] = []
        # A wedged engine: the named calls block until `release` is set.
        self.hang = hang
        self.release = threading.Event()
        self.hanging = threading.Event()
        # Set by kill() or remove(): a dead container ends its attach stream.
        self.gone = threading.Event()

    def _call(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if name in self.hang:
            self.hanging.set()
            # Bounded so a broken runner fails the test instead of hanging it.
            self.release.wait(10)
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def create(self, options: dict[str, Any]) -> str:
        self.options = options
        self.created.append(options)
        self._call("create", options["name"])
        return CID

    def attach(self, container_id: str) -> Iterator[tuple[bytes | None, bytes | None]]:
        self._call("attach", container_id)
        return self._stream()

    def _stream(self) -> Iterator[tuple[bytes | None, bytes | None]]:
        yield from self.frames
        if self.block_until_killed:
            # Bounded so a broken runner fails the test instead of hanging it.
            self.gone.wait(5)

    def start(self, container_id: str) -> None:
        self._call("start", container_id)

    def kill(self, container_id: str) -> None:
        self._call("kill", container_id)
        self.gone.set()

    def wait(self, container_id: str, timeout_s: float) -> tuple[int, bool]:
        assert timeout_s > 0, "wait must be bounded by the run's deadline"
        self._call("wait", container_id)
        return self.exit_code, self.oom

    def remove(self, container_id: str) -> None:
        self._call("remove", container_id)
        self.gone.set()

    def list_managed(self, instance: str) -> list[str]:
        self._call("list_managed", instance)
        return list(self.leftovers)

    def image_id(self, image: str) -> str:
        self._call("image_id", image)
        return FAKE_IMAGE_ID


class Emitted:
    def __init__(self) -> None:
        self.items: list[Chunk | str] = []

    async def __call__(self, item: Chunk | str) -> None:
        self.items.append(item)


def _spec(**kw: Any) -> RunSpec:
    base: dict[str, Any] = {"run_id": "run-1", "tool": "python", "image": IMAGE, "argv": ("python3", "-c", "1")}
    limits = {k: kw.pop(k) for k in list(kw) if k in LIMIT_KEYS}
    base.update(kw)
    return RunSpec(**base, limits=Limits(**limits))


def _runner(runtime: FakeRuntime, prom: CollectorRegistry, **cfg: Any) -> Runner:
    cfg.setdefault("allowed_images", (IMAGE,))
    config = ExecutorConfig(socket="/x", token_file="/y", **cfg)
    return Runner(config, runtime, ExecutorMetrics(prom, config.runtimes))


def _run(runtime: FakeRuntime, prom: CollectorRegistry, spec: RunSpec, **cfg: Any) -> tuple[RunResult, Emitted]:
    emit = Emitted()

    async def go() -> RunResult:
        return await _runner(runtime, prom, **cfg).run(spec, emit)

    return asyncio.run(go()), emit


def _value(prom: CollectorRegistry, name: str, **labels: str) -> float:
    return prom.get_sample_value(name, labels) or 0.0


# -- refusals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        pytest.param(
            _spec(network_mode="egress", egress_allowlist=("a.example:443",)), "egress_unavailable", id="egress"
        ),
        pytest.param(_spec(runtime="runsc"), "runtime_unavailable", id="runtime-not-enabled"),
        pytest.param(_spec(runtime="kata"), "runtime_unavailable", id="runtime-unknown"),
        pytest.param(_spec(argv=()), "spec_invalid", id="no-argv"),
        pytest.param(_spec(image=""), "spec_invalid", id="no-image"),
        pytest.param(_spec(run_id=""), "spec_invalid", id="no-run-id"),
        pytest.param(_spec(network_mode="egress", runtime="kata"), "egress_unavailable", id="egress-checked-first"),
    ],
)
def test_unsafe_specs_are_refused_before_anything_is_created(prom: CollectorRegistry, spec: RunSpec, code: str) -> None:
    runtime = FakeRuntime()
    with pytest.raises(RunRefused) as info:
        _run(runtime, prom, spec)
    assert info.value.code == code
    assert runtime.calls == []
    assert _value(prom, "airlock_executor_refused_runs_total", reason=code) == 1


def test_missing_image_is_refused_and_never_pulled(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(fail={"create": ImageNotFound("no such image")})
    with pytest.raises(RunRefused) as info:
        _run(runtime, prom, _spec())
    assert info.value.code == "image_missing"
    assert runtime.names() == ["create"]
    assert _value(prom, "airlock_executor_refused_runs_total", reason="image_missing") == 1
    assert _value(prom, "airlock_executor_running_containers") == 0


# -- normal runs -------------------------------------------------------------------


def test_normal_run_emits_the_id_then_output(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(((b"hello ", None), (None, b"warn\n"), (b"world\n", None)))
    result, emit = _run(runtime, prom, _spec())
    assert emit.items == [
        CID,
        Chunk("stdout", b"hello "),
        Chunk("stderr", b"warn\n"),
        Chunk("stdout", b"world\n"),
    ]
    assert result.outcome == "ok"
    assert result.exit_code == 0
    assert (result.stdout_bytes, result.stderr_bytes) == (12, 5)
    assert result.output_truncated is False
    assert result.error == ""
    assert runtime.names() == ["create", "attach", "start", "wait", "remove"]
    assert _value(prom, "airlock_executor_runs_total", outcome="ok", runtime="runc") == 1
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_run_uses_clamped_hardened_options(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime()
    _run(runtime, prom, _spec(memory_bytes=10**12, pids=8, env={"A": "b"}))
    opts = runtime.options
    assert opts["mem_limit"] == 512 * 1024**2
    assert opts["memswap_limit"] == opts["mem_limit"]
    assert opts["pids_limit"] == 8 + 1  # the deadline wrapper is one more process
    assert opts["network_mode"] == "none"
    assert opts["read_only"] is True
    assert opts["environment"] == {"A": "b"}
    assert opts["name"] == "airlock-run-1"
    seccomp = [o for o in opts["security_opt"] if o.startswith("seccomp=")]
    assert len(seccomp) == 1
    assert json.loads(seccomp[0].removeprefix("seccomp=")) == json.loads(DEFAULT_SECCOMP_PROFILE.read_text())


def test_runner_refuses_to_start_without_its_seccomp_profile(prom: CollectorRegistry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seccomp_profile"):
        _runner(FakeRuntime(), prom, seccomp_profile=str(tmp_path / "missing.json"))


@pytest.mark.parametrize(
    ("exit_code", "oom", "outcome"),
    [
        pytest.param(0, False, "ok", id="ok"),
        pytest.param(3, False, "nonzero_exit", id="exit-3"),
        pytest.param(1, False, "nonzero_exit", id="exit-1"),
        pytest.param(137, False, "killed", id="sigkill"),
        pytest.param(137, True, "oom_killed", id="oom"),
        pytest.param(0, True, "oom_killed", id="oom-flag-wins"),
    ],
)
def test_outcome_from_exit(prom: CollectorRegistry, exit_code: int, oom: bool, outcome: str) -> None:
    runtime = FakeRuntime(((b"x", None),), exit_code=exit_code, oom=oom)
    result, _ = _run(runtime, prom, _spec())
    assert (result.outcome, result.exit_code) == (outcome, exit_code)
    assert runtime.names()[-1] == "remove"
    assert _value(prom, "airlock_executor_runs_total", outcome=outcome, runtime="runc") == 1


def test_output_over_budget_is_truncated(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(((b"a" * 50, None), (None, b"b" * 50)))
    result, emit = _run(runtime, prom, _spec(output_bytes=20))
    assert result.output_truncated is True
    assert (result.stdout_bytes, result.stderr_bytes) == (50, 50)
    assert emit.items == [
        CID,
        Chunk("stdout", b"a" * 10),
        Chunk("stdout", b"\n[airlock: output truncated, 80 bytes omitted]\n"),
        Chunk("stderr", b"b" * 10),
    ]
    assert _value(prom, "airlock_executor_output_truncations_total") == 1


def test_timeout_kills_and_removes(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(((b"started\n", None),), exit_code=137, block_until_killed=True)
    result, emit = _run(runtime, prom, _spec(timeout_ms=200))
    assert result.outcome == "timeout"
    assert 150 <= result.duration_ms < 2000
    assert ("kill", CID) in runtime.calls
    assert runtime.calls[-1] == ("remove", CID)
    assert runtime.names().index("kill") < runtime.names().index("remove")
    assert emit.items == [CID, Chunk("stdout", b"started\n")]
    assert _value(prom, "airlock_executor_runs_total", outcome="timeout", runtime="runc") == 1
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_cancel_kills_a_running_container(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(exit_code=137, block_until_killed=True)
    emit = Emitted()

    async def go() -> tuple[RunResult, bool, bool]:
        runner = _runner(runtime, prom)
        task = asyncio.create_task(runner.run(_spec(timeout_ms=10_000), emit))
        for _ in range(200):
            if emit.items:
                break
            await asyncio.sleep(0.005)
        cancelled = await runner.cancel("run-1")
        unknown = await runner.cancel("no-such-run")
        return await task, cancelled, unknown

    result, cancelled, unknown = asyncio.run(go())
    assert (cancelled, unknown) == (True, False)
    assert result.outcome == "killed"
    assert ("kill", CID) in runtime.calls
    assert runtime.calls[-1] == ("remove", CID)


# -- the container is removed on every path -----------------------------------


DOCKER_TEXT = "/var/lib/docker/overlay2/3f9a: no space left on device (daemon internals)"


@pytest.mark.parametrize("failing", ["attach", "start", "wait"])
def test_docker_errors_after_create_still_remove(
    prom: CollectorRegistry, failing: str, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = FakeRuntime(((b"x", None),), fail={failing: APIError(f"{failing} failed: {DOCKER_TEXT}")})
    result, _ = _run(runtime, prom, _spec())
    assert result.outcome == "error"
    assert result.exit_code == -1
    # A reason code and a fixed message reach the caller (and the model);
    # what Docker said goes to the executor's log only.
    assert result.error == f"docker_error: {runner_module.RUN_ERRORS['docker_error']}"
    assert DOCKER_TEXT not in result.error
    assert DOCKER_TEXT in caplog.text
    assert runtime.calls[-1] == ("remove", CID)
    assert runtime.names().count("remove") == 1
    assert _value(prom, "airlock_executor_runs_total", outcome="error", runtime="runc") == 1
    assert _value(prom, "airlock_executor_run_errors_total", reason="docker_error") == 1
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_create_failure_has_nothing_to_remove(prom: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    runtime = FakeRuntime(fail={"create": APIError(f"daemon said no: {DOCKER_TEXT}")})
    result, emit = _run(runtime, prom, _spec())
    assert result.outcome == "error"
    assert result.error.startswith("docker_error: ")
    assert "daemon said no" not in result.error
    assert "daemon said no" in caplog.text
    assert runtime.names() == ["create"]
    assert emit.items == []
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_emit_failure_still_removes(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(((b"x", None),))

    async def broken_emit(_item: Chunk | str) -> None:
        raise ConnectionResetError("client went away")

    async def go() -> RunResult:
        return await _runner(runtime, prom).run(_spec(), broken_emit)

    with pytest.raises(ConnectionResetError):
        asyncio.run(go())
    assert runtime.calls[-1] == ("remove", CID)
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_cancelled_caller_still_removes(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(block_until_killed=True)
    emit = Emitted()

    async def go() -> None:
        task = asyncio.create_task(_runner(runtime, prom).run(_spec(timeout_ms=10_000), emit))
        for _ in range(200):
            if emit.items:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert emit.items == [CID]
    assert ("remove", CID) in runtime.calls
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_remove_failure_does_not_hide_the_result(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(((b"x", None),), fail={"remove": APIError("remove failed")})
    result, _ = _run(runtime, prom, _spec())
    assert result.outcome == "ok"
    assert runtime.calls[-1] == ("remove", CID)


def test_remove_leftovers(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime(leftovers=("old-1", "old-2"))

    async def go() -> int:
        return _runner(runtime, prom).remove_leftovers()

    assert asyncio.run(go()) == 2
    # Only this executor's containers: the instance is a digest of its socket path.
    instance = executor_instance(ExecutorConfig(socket="/x", token_file="/y"))
    assert runtime.calls == [("list_managed", instance), ("remove", "old-1"), ("remove", "old-2")]
    assert instance != executor_instance(ExecutorConfig(socket="/other", token_file="/y"))


def test_remove_leftovers_with_none_left(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime()

    async def go() -> int:
        return _runner(runtime, prom).remove_leftovers()

    assert asyncio.run(go()) == 0
    assert runtime.names() == ["list_managed"]


def test_cancel_during_create_still_removes(prom: CollectorRegistry) -> None:
    entered = threading.Event()
    release = threading.Event()

    class SlowCreate(FakeRuntime):
        def create(self, options: dict[str, Any]) -> str:
            entered.set()
            release.wait(5)
            return super().create(options)

    runtime = SlowCreate()

    async def go() -> None:
        task = asyncio.create_task(_runner(runtime, prom).run(_spec(), Emitted()))
        assert await asyncio.to_thread(entered.wait, 5)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):
            if "remove" in runtime.names():
                break
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert runtime.names()[0] == "create"
    assert ("remove", CID) in runtime.calls


# -- egress ------------------------------------------------------------------------


class NoFirewall:
    def __init__(self, bridge: str, gateway_ip: str, port: int) -> None:
        self.rule = (bridge, gateway_ip, port)

    def install(self) -> None:
        pass

    def remove(self) -> None:
        pass


class LoopbackNetwork:
    """Stands in for Docker: the "internal network" is loopback's 127.0.0.0/8."""

    def ensure_internal_network(self, name: str, bridge: str, subnet: str | None) -> EgressNetwork:
        del name, bridge, subnet
        return EgressNetwork(gateway="127.0.0.1", subnet="127.0.0.0/8")


def _egress_run(
    runtime: FakeRuntime, prom: CollectorRegistry, spec: RunSpec, *, start: bool = True
) -> tuple[RunResult, Egress]:
    config = ExecutorConfig(socket="/x", token_file="/y", allowed_images=(IMAGE,))
    metrics = ExecutorMetrics(prom, config.runtimes)
    egress = Egress(config.egress, metrics, firewall=NoFirewall)

    async def go() -> RunResult:
        if start:
            await egress.start(LoopbackNetwork())
        try:
            return await Runner(config, runtime, metrics, egress).run(spec, Emitted())
        finally:
            await egress.stop()

    return asyncio.run(go()), egress


EGRESS_SPEC = _spec(network_mode="egress", egress_allowlist=("a.example:443",), env={"HTTPS_PROXY": "http://evil"})


def test_egress_run_joins_the_internal_network_with_its_own_proxy_credential(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime()
    result, egress = _egress_run(runtime, prom, EGRESS_SPEC)
    assert result.outcome == "ok"
    assert runtime.options["network"] == "airlock-egress"
    assert "network_mode" not in runtime.options
    # A fixed address, decided before the container exists.
    address = runtime.options["networking_config"]["airlock-egress"]["IPAMConfig"]["IPv4Address"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network("127.0.0.0/8")
    assert address != "127.0.0.1"  # never the gateway (the proxy's own address)
    assert egress._in_use == set()  # released when the run ended
    url = runtime.options["environment"]["HTTPS_PROXY"]
    assert url.startswith("http://airlock:")
    assert url.endswith("@127.0.0.1:" + url.rsplit(":", 1)[1])
    assert runtime.options["environment"]["NO_PROXY"] == ""
    assert runtime.options["dns"] == ["127.0.0.1"]
    assert result.egress == ()


def test_egress_is_refused_when_the_proxy_did_not_start(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime()
    with pytest.raises(RunRefused) as info:
        _egress_run(runtime, prom, EGRESS_SPEC, start=False)
    assert info.value.code == "egress_unavailable"
    assert "has not started" in str(info.value)
    assert runtime.calls == []


def test_egress_is_refused_under_gvisor(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime()
    with pytest.raises(RunRefused) as info:
        _egress_run(runtime, prom, replace(EGRESS_SPEC, runtime="runsc"))
    assert info.value.code == "egress_unavailable"
    assert "--network=none" in str(info.value)
    assert runtime.calls == []


def test_close_sweeps_this_executors_containers_after_shutdown(prom: CollectorRegistry) -> None:
    """A run the server's grace period cut short may leave its container; close() removes it."""
    runtime = FakeRuntime(leftovers=("cut-short",))

    async def go() -> int:
        return await _runner(runtime, prom).close()

    assert asyncio.run(go()) == 1
    assert runtime.names() == ["list_managed", "remove"]


def test_a_taken_egress_address_gets_a_fresh_one(prom: CollectorRegistry) -> None:
    """Another executor sharing the network may hold the address: Docker
    refuses the start, and the run is recreated with a new address."""

    class ClashOnce(FakeRuntime):
        def start(self, container_id: str) -> None:
            self._call("start", container_id)
            if self.names().count("start") == 1:
                raise APIError('403 Client Error: Forbidden ("Address already in use")')

    runtime = ClashOnce()
    result, egress = _egress_run(runtime, prom, EGRESS_SPEC)
    assert result.outcome == "ok"
    first, second = (o["networking_config"]["airlock-egress"]["IPAMConfig"]["IPv4Address"] for o in runtime.created)
    assert first != second
    assert runtime.names() == ["create", "attach", "start", "remove", "create", "attach", "start", "wait", "remove"]
    assert egress._in_use == set()


# -- only registry images ----------------------------------------------------------


def _registry(path: Path, *images: str) -> Path:
    tools = {f"t{i}": {"image": image, "argv": ["x"]} for i, image in enumerate(images)}
    tools["hosted"] = {"item_type": "web_search_call"}  # no image: never runs here
    path.write_text(json.dumps({"version": 1, "tools": tools}))
    return path


def test_without_a_registry_every_image_is_refused(prom: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """Fail closed: no registry_file and no allowed_images, no runs at all."""
    runtime = FakeRuntime()
    with pytest.raises(RunRefused) as info:
        _run(runtime, prom, _spec(), allowed_images=())
    assert info.value.code == "image_not_allowed"
    assert runtime.calls == []
    assert _value(prom, "airlock_executor_refused_runs_total", reason="image_not_allowed") == 1
    assert "image 'img:1' is not allowed" in caplog.text


def test_only_images_the_registry_names_run(prom: CollectorRegistry, tmp_path: Path) -> None:
    registry = _registry(tmp_path / "tool_registry.yaml", "airlock/sandbox-python:4")
    runtime = FakeRuntime()
    result, _ = _run(
        runtime, prom, _spec(image="airlock/sandbox-python:4"), registry_file=str(registry), allowed_images=()
    )
    assert result.outcome == "ok"
    for image in ("img:1", "airlock/sandbox-python:latest", "docker.io/airlock/sandbox-python:4", "alpine"):
        with pytest.raises(RunRefused) as info:
            _run(FakeRuntime(), CollectorRegistry(), _spec(image=image), registry_file=str(registry), allowed_images=())
        assert info.value.code == "image_not_allowed"


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        ("", "ok"),  # not pinned: any id runs
        (FAKE_IMAGE_ID, "ok"),
        ("sha256:" + "cd" * 32, "image_mismatch"),  # retagged since the decision
    ],
)
def test_a_pinned_image_runs_only_with_its_digest(prom: CollectorRegistry, digest: str, expected: str) -> None:
    runtime = FakeRuntime()
    if expected == "image_mismatch":
        with pytest.raises(RunRefused, match=f"not {digest}") as info:
            _run(runtime, prom, _spec(image_digest=digest))
        assert info.value.code == expected
        assert _value(prom, "airlock_executor_refused_runs_total", reason="image_mismatch") == 1
        assert runtime.names() == ["image_id"]  # nothing was created
        return
    result, _ = _run(runtime, prom, _spec(image_digest=digest))
    assert result.outcome == expected
    assert ("image_id" in runtime.names()) == bool(digest)
    # The container is made from the pinned id itself, not the tag.
    (created,) = runtime.created
    assert created["image"] == (digest or IMAGE)


def test_the_registry_is_reread_when_it_changes(prom: CollectorRegistry, tmp_path: Path) -> None:
    registry = _registry(tmp_path / "tool_registry.yaml", "old:1")
    runner = _runner(FakeRuntime(), prom, registry_file=str(registry), allowed_images=())

    async def go(image: str) -> str:
        try:
            await runner.run(_spec(image=image, run_id=f"r-{image}"), Emitted())
        except RunRefused as exc:
            return exc.code
        return "ran"

    assert asyncio.run(go("old:1")) == "ran"
    _registry(registry, "new:2")
    os.utime(registry, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert (asyncio.run(go("old:1")), asyncio.run(go("new:2"))) == ("image_not_allowed", "ran")
    # Broken while running: fail closed (nothing of the registry runs) ...
    registry.write_text("tools: [not, a, mapping")
    assert asyncio.run(go("new:2")) == "image_not_allowed"
    # ... until it is fixed.
    _registry(registry, "new:2")
    assert asyncio.run(go("new:2")) == "ran"


def test_an_unreadable_registry_stops_the_executor_at_start(prom: CollectorRegistry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="registry_file"):
        _runner(FakeRuntime(), prom, registry_file=str(tmp_path / "missing.yaml"))


# -- one deadline around the whole run ----------------------------------------------


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(runner_module, "RUN_GRACE_S", 0.5)
    return 0.5


@pytest.mark.parametrize("wedged", ["create", "start", "wait"])
def test_a_wedged_docker_call_cannot_hang_the_run(prom: CollectorRegistry, short_grace: float, wedged: str) -> None:
    """Create, start and wait hanging (an engine that never answers) end the
    run at its deadline, timeout + grace, with a reason code; the clean-up
    goes on without the caller."""
    runtime = FakeRuntime(((b"x", None),), hang=(wedged,))

    async def go() -> tuple[RunResult, bool]:
        result = await _runner(runtime, prom).run(_spec(timeout_ms=200), Emitted())
        # The run came back while Docker was still stuck.
        still_stuck = runtime.hanging.is_set() and not runtime.release.is_set()
        runtime.release.set()
        return result, still_stuck

    result, still_stuck = asyncio.run(go())
    assert still_stuck
    assert result.outcome == "error"
    assert result.error == f"deadline_exceeded: {runner_module.RUN_ERRORS['deadline_exceeded']}"
    assert _value(prom, "airlock_executor_run_errors_total", reason="deadline_exceeded") == 1
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_a_wedged_remove_does_not_hold_the_caller_past_the_deadline(
    prom: CollectorRegistry, short_grace: float
) -> None:
    runtime = FakeRuntime(((b"x", None),), hang=("remove",))
    runner = _runner(runtime, prom)

    async def go() -> tuple[RunResult, bool]:
        result = await runner.run(_spec(timeout_ms=200), Emitted())
        still_stuck = runtime.hanging.is_set() and not runtime.release.is_set()
        runtime.release.set()
        await runner.close()  # shutdown still waits for the clean-up
        return result, still_stuck

    result, still_stuck = asyncio.run(go())
    assert result.outcome == "ok"
    assert still_stuck
    assert runtime.names().count("remove") >= 1


# -- the deadline wrapper --------------------------------------------------------------


def test_the_image_entrypoint_is_replaced_by_the_deadline_wrapper(prom: CollectorRegistry) -> None:
    runtime = FakeRuntime()
    _run(runtime, prom, _spec(argv=("--version", "x y"), timeout_ms=1500))
    assert runtime.options["entrypoint"] == ["/usr/bin/timeout", "-s", "KILL", "3.500s"]
    assert runtime.options["command"] == ["--version", "x y"]


@pytest.mark.parametrize(
    ("exit_code", "ran_ms", "outcome"),
    [
        pytest.param(137, 999, "killed", id="sigkill-before-the-timeout"),
        pytest.param(137, 1000, "timeout", id="wrapper-fired-at-the-deadline"),
        pytest.param(3, 5000, "nonzero_exit", id="other-exit-after-the-timeout"),
    ],
)
def test_a_sigkill_after_the_timeout_is_a_timeout(
    prom: CollectorRegistry, exit_code: int, ran_ms: int, outcome: str
) -> None:
    """The wrapper reports its SIGKILL as 137, like an outside kill; after
    the timeout had passed it is the deadline (our own kill lost the race)."""
    runner = _runner(FakeRuntime(), prom)
    limits = clamp(_spec(timeout_ms=1000), runner._ceilings)
    got = runner._outcome("run-1", exit_code, oom=False, timed_out=False, ran_ms=ran_ms, limits=limits)
    assert got == outcome
