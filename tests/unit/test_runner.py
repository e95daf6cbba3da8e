"""executor._runner.Runner with a fake ContainerRuntime: refusals, outcomes,
timeouts, and the container removed on every path."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from docker.errors import APIError, ImageNotFound
from prometheus_client import CollectorRegistry

from airlock import ConfigError
from executor._config import ExecutorConfig
from executor._metrics import ExecutorMetrics
from executor._model import Chunk, RunRefused, RunResult, RunSpec
from executor._options import DEFAULT_SECCOMP_PROFILE, executor_instance
from executor._runner import Runner
from executor.egress import Egress

CID = "c0ffee"


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
    ) -> None:
        self.frames = frames
        self.exit_code = exit_code
        self.oom = oom
        self.block_until_killed = block_until_killed
        self.fail = fail or {}
        self.leftovers = list(leftovers)
        self.calls: list[tuple[str, Any]] = []
        self.options: dict[str, Any] = {}
        # Set by kill() or remove(): a dead container ends its attach stream.
        self.gone = threading.Event()

    def _call(self, name: str, arg: Any) -> None:
        self.calls.append((name, arg))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def create(self, options: dict[str, Any]) -> str:
        self.options = options
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

    def wait(self, container_id: str) -> tuple[int, bool]:
        self._call("wait", container_id)
        return self.exit_code, self.oom

    def remove(self, container_id: str) -> None:
        self._call("remove", container_id)
        self.gone.set()

    def list_managed(self, instance: str) -> list[str]:
        self._call("list_managed", instance)
        return list(self.leftovers)


class Emitted:
    def __init__(self) -> None:
        self.items: list[Chunk | str] = []

    async def __call__(self, item: Chunk | str) -> None:
        self.items.append(item)


def _spec(**kw: Any) -> RunSpec:
    base: dict[str, Any] = {"run_id": "run-1", "tool": "python", "image": "img:1", "argv": ("python3", "-c", "1")}
    base.update(kw)
    return RunSpec(**base)


def _runner(runtime: FakeRuntime, prom: CollectorRegistry, **cfg: Any) -> Runner:
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
def test_unsafe_specs_are_refused_before_anything_is_created(prom, spec, code) -> None:
    runtime = FakeRuntime()
    with pytest.raises(RunRefused) as info:
        _run(runtime, prom, spec)
    assert info.value.code == code
    assert runtime.calls == []
    assert _value(prom, "airlock_executor_refused_runs_total", reason=code) == 1


def test_missing_image_is_refused_and_never_pulled(prom) -> None:
    runtime = FakeRuntime(fail={"create": ImageNotFound("no such image")})
    with pytest.raises(RunRefused) as info:
        _run(runtime, prom, _spec())
    assert info.value.code == "image_missing"
    assert runtime.names() == ["create"]
    assert _value(prom, "airlock_executor_refused_runs_total", reason="image_missing") == 1
    assert _value(prom, "airlock_executor_running_containers") == 0


# -- normal runs -------------------------------------------------------------------


def test_normal_run_emits_the_id_then_output(prom) -> None:
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


def test_run_uses_clamped_hardened_options(prom) -> None:
    runtime = FakeRuntime()
    _run(runtime, prom, _spec(memory_bytes=10**12, pids=8, env={"A": "b"}))
    opts = runtime.options
    assert opts["mem_limit"] == 512 * 1024**2
    assert opts["memswap_limit"] == opts["mem_limit"]
    assert opts["pids_limit"] == 8
    assert opts["network_mode"] == "none"
    assert opts["read_only"] is True
    assert opts["environment"] == {"A": "b"}
    assert opts["name"] == "airlock-run-1"
    seccomp = [o for o in opts["security_opt"] if o.startswith("seccomp=")]
    assert len(seccomp) == 1
    assert json.loads(seccomp[0].removeprefix("seccomp=")) == json.loads(DEFAULT_SECCOMP_PROFILE.read_text())


def test_runner_refuses_to_start_without_its_seccomp_profile(prom, tmp_path) -> None:
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
def test_outcome_from_exit(prom, exit_code, oom, outcome) -> None:
    runtime = FakeRuntime(((b"x", None),), exit_code=exit_code, oom=oom)
    result, _ = _run(runtime, prom, _spec())
    assert (result.outcome, result.exit_code) == (outcome, exit_code)
    assert runtime.names()[-1] == "remove"
    assert _value(prom, "airlock_executor_runs_total", outcome=outcome, runtime="runc") == 1


def test_output_over_budget_is_truncated(prom) -> None:
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


def test_timeout_kills_and_removes(prom) -> None:
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


def test_cancel_kills_a_running_container(prom) -> None:
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


@pytest.mark.parametrize("failing", ["attach", "start", "wait"])
def test_docker_errors_after_create_still_remove(prom, failing) -> None:
    runtime = FakeRuntime(((b"x", None),), fail={failing: APIError(f"{failing} failed")})
    result, _ = _run(runtime, prom, _spec())
    assert result.outcome == "error"
    assert result.exit_code == -1
    assert f"{failing} failed" in result.error
    assert runtime.calls[-1] == ("remove", CID)
    assert runtime.names().count("remove") == 1
    assert _value(prom, "airlock_executor_runs_total", outcome="error", runtime="runc") == 1
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_create_failure_has_nothing_to_remove(prom) -> None:
    runtime = FakeRuntime(fail={"create": APIError("daemon said no")})
    result, emit = _run(runtime, prom, _spec())
    assert result.outcome == "error"
    assert "daemon said no" in result.error
    assert runtime.names() == ["create"]
    assert emit.items == []
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_emit_failure_still_removes(prom) -> None:
    runtime = FakeRuntime(((b"x", None),))

    async def broken_emit(_item: Chunk | str) -> None:
        raise ConnectionResetError("client went away")

    async def go() -> RunResult:
        return await _runner(runtime, prom).run(_spec(), broken_emit)

    with pytest.raises(ConnectionResetError):
        asyncio.run(go())
    assert runtime.calls[-1] == ("remove", CID)
    assert _value(prom, "airlock_executor_running_containers") == 0


def test_cancelled_caller_still_removes(prom) -> None:
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


def test_remove_failure_does_not_hide_the_result(prom) -> None:
    runtime = FakeRuntime(((b"x", None),), fail={"remove": APIError("remove failed")})
    result, _ = _run(runtime, prom, _spec())
    assert result.outcome == "ok"
    assert runtime.calls[-1] == ("remove", CID)


def test_remove_leftovers(prom) -> None:
    runtime = FakeRuntime(leftovers=("old-1", "old-2"))

    async def go() -> int:
        return _runner(runtime, prom).remove_leftovers()

    assert asyncio.run(go()) == 2
    # Only this executor's containers: the instance is a digest of its socket path.
    instance = executor_instance(ExecutorConfig(socket="/x", token_file="/y"))
    assert runtime.calls == [("list_managed", instance), ("remove", "old-1"), ("remove", "old-2")]
    assert instance != executor_instance(ExecutorConfig(socket="/other", token_file="/y"))


def test_remove_leftovers_with_none_left(prom) -> None:
    runtime = FakeRuntime()

    async def go() -> int:
        return _runner(runtime, prom).remove_leftovers()

    assert asyncio.run(go()) == 0
    assert runtime.names() == ["list_managed"]


def test_cancel_during_create_still_removes(prom) -> None:
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
    """Stands in for Docker: the "internal network" gateway is loopback."""

    def ensure_internal_network(self, name: str, bridge: str) -> str:
        del name, bridge
        return "127.0.0.1"


def _egress_run(runtime: FakeRuntime, prom: CollectorRegistry, spec: RunSpec, *, start: bool = True) -> RunResult:
    config = ExecutorConfig(socket="/x", token_file="/y")
    metrics = ExecutorMetrics(prom, config.runtimes)

    async def go() -> RunResult:
        egress = Egress(config.egress, metrics, firewall=NoFirewall)
        if start:
            await egress.start(LoopbackNetwork())
        try:
            return await Runner(config, runtime, metrics, egress).run(spec, Emitted())
        finally:
            await egress.stop()

    return asyncio.run(go())


EGRESS_SPEC = _spec(network_mode="egress", egress_allowlist=("a.example:443",), env={"HTTPS_PROXY": "http://evil"})


def test_egress_run_joins_the_internal_network_with_its_own_proxy_credential(prom) -> None:
    runtime = FakeRuntime()
    result = _egress_run(runtime, prom, EGRESS_SPEC)
    assert result.outcome == "ok"
    assert runtime.options["network_mode"] == "airlock-egress"
    url = runtime.options["environment"]["HTTPS_PROXY"]
    assert url.startswith("http://airlock:")
    assert url.endswith("@127.0.0.1:" + url.rsplit(":", 1)[1])
    assert runtime.options["environment"]["NO_PROXY"] == ""
    assert runtime.options["dns"] == ["127.0.0.1"]
    assert result.egress == ()


def test_egress_is_refused_when_the_proxy_did_not_start(prom) -> None:
    runtime = FakeRuntime()
    with pytest.raises(RunRefused) as info:
        _egress_run(runtime, prom, EGRESS_SPEC, start=False)
    assert info.value.code == "egress_unavailable"
    assert "has not started" in str(info.value)
    assert runtime.calls == []


def test_egress_is_refused_under_gvisor(prom) -> None:
    runtime = FakeRuntime()
    with pytest.raises(RunRefused) as info:
        _egress_run(runtime, prom, replace(EGRESS_SPEC, runtime="runsc"))
    assert info.value.code == "egress_unavailable"
    assert "--network=none" in str(info.value)
    assert runtime.calls == []


def test_close_sweeps_this_executors_containers_after_shutdown(prom) -> None:
    """A run the server's grace period cut short may leave its container; close() removes it."""
    runtime = FakeRuntime(leftovers=("cut-short",))

    async def go() -> int:
        return await _runner(runtime, prom).close()

    assert asyncio.run(go()) == 1
    assert runtime.names() == ["list_managed", "remove"]
