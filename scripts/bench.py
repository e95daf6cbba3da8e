"""Benchmarks the core path and prints numbers (no asserts, no targets).

Starts its own `airlock up` in a temporary home, then measures on this
machine, in this run:
  1. `docker run --rm` of the sandbox image running print(2+2) (plain, with
     the executor's hardening flags, and the same under gVisor);
  2. the full `airlock call python '{"code": "print(2+2)"}'` CLI, end to end;
  3. decide-only (Decide RPC) latency over many sequential calls from one
     gRPC client, plus OPA's own eval time for the same decision;
  4. sandboxes (issue 12), each Invoke timed by the client, over gRPC:
     - the floor: `docker exec` of the same program into one running
       hardened container, as the executor does it (docker SDK) and with
       the docker CLI;
     - ephemeral Invokes served from the warm pool (each waits until the
       pool is full again and settled; only pool hits count);
     - a session's second and later Invokes, back to back;
     - cold Invokes on a second stack whose executor has the pool disabled;
     - bursts of concurrent ephemeral Invokes on a third stack whose pool
       keeps 4 containers per class.
The second and third stacks are the same Stack `airlock up` runs (its
defaults, free ports); only the pool section of their executor.yaml differs,
rewritten after `airlock up` writes the file and before the executor reads
it. airlock up has no option for it: the pool is the executor's business.

Usage: .venv/bin/python scripts/bench.py [--runs 15] [--decides 2000] [--fast-runs 30] [--bursts 3]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import docker
import grpc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from airlock.cli import _stackconf
from airlock.cli._launch import FREE_PORTS, launch
from airlock.cli._layout import Identities, Layout
from airlock.cli._main import _parser
from airlock.cli._paths import DEV_PRINCIPAL
from airlock.cli._stackconf import opa_query
from airlock.cli._up import Stack, UpOptions
from airlock.common import parse_config
from airlock.executor._config import ExecutorConfig
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

IMAGE = "airlock/sandbox-python:4"
HARDENED = [
    "--network", "none", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
    "--user", "65534:65534", "--pids-limit", "64", "--memory", "256m", "--memory-swap", "256m",
    "--tmpfs", "/tmp:rw,nosuid,nodev,noexec,size=64m", "--log-driver", "none",
]  # fmt: skip
#: What every call runs: the python tool's argv for print(2+2).
PROGRAM = ["python3", "-I", "-c", "print(2+2)"]
ARGUMENTS = '{"code": "print(2+2)"}'
#: The executor's defaults: calls run as SANDBOX_USER, a long-lived
#: container's own process (its keeper) as KEEPER_USER.
SANDBOX_USER = "65534:65534"
KEEPER_USER = "65533:65533"
KEEPER_COMMAND = ["timeout", "-s", "KILL", "3600", "sleep", "infinity"]
#: Before each ephemeral call, once the pool is full again: the claimed
#: container's removal and the refill's start have settled.
REFILL_PAUSE_S = 0.5
BURST = 20
BURST_POOL_SIZE = 4
POOL_WARM_TIMEOUT_S = 60.0
ms = 1000.0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def start_stack(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    running = launch(home)
    # Drained, so the daemons never block on a full pipe (they log to it).
    out = running.proc.stdout
    if out is not None:
        threading.Thread(target=deque, args=(out, 0), daemon=True).start()
    return running.proc, running.info.as_dict()


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Our stdout and stderr go to log meanwhile: the daemons a Stack spawns
    inherit them (`airlock up` itself captures them the same way)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def stack_with_pool(pool: dict[str, object]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A stack as `airlock up` starts it (the same Stack, its defaults, free
    ports) whose executor.yaml has these pool settings; yields its home and
    stack.json. The file is rewritten in place (owner and mode stay) after
    `airlock up` wrote it and before the executor starts, and checked with
    the executor's own config parser first."""
    write = _stackconf.write_executor_config

    def write_with_pool(layout: Layout, ids: Identities, metrics_listen: str, egress_config: Path | None) -> None:
        write(layout, ids, metrics_listen, egress_config)
        path = layout.executor_dir / "executor.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc["pool"] = {**doc.get("pool", {}), **pool}
        parse_config(doc, ExecutorConfig, source=str(path))
        text = "# Written by `airlock up`; pool section rewritten by scripts/bench.py.\n"
        path.write_text(text + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    defaults = _parser().parse_args(["up", *FREE_PORTS])
    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        home = Path(tmp)
        names = [f.name for f in dataclasses.fields(UpOptions) if f.name != "home"]
        stack = Stack(UpOptions(home=home, **{name: getattr(defaults, name) for name in names}))
        log = home / "daemons.log"
        try:
            try:
                with output_to(log), mock.patch.object(_stackconf, "write_executor_config", write_with_pool):
                    info = stack.start()
            except Exception:
                print(f"the stack with pool {pool} did not start; its daemons said:\n{log.read_text()[-4000:]}")
                raise
            yield home, info.as_dict()
        finally:
            with output_to(log):
                stack.stop()


# -- the docker exec floor --------------------------------------------------------


@contextlib.contextmanager
def floor_container() -> Iterator[str]:
    """One running hardened container, as the pool keeps them: the hardening
    flags, --init, its own process a deadline-bound sleep as KEEPER_USER."""
    flags = [KEEPER_USER if f == SANDBOX_USER else f for f in HARDENED]
    argv = ["docker", "run", "-d", "--rm", "--init", *flags, IMAGE, *KEEPER_COMMAND]
    cid = subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield cid
    finally:
        subprocess.run(["docker", "rm", "-f", cid], check=False, capture_output=True)


def sdk_exec(api: Any, cid: str) -> float:
    """One exec the way the executor runs a call (airlock/executor/_docker.py):
    create, stream the demuxed output, poll its exit code."""
    t0 = time.perf_counter()
    exec_id = api.exec_create(cid, PROGRAM, stdout=True, stderr=True, stdin=False, tty=False, user=SANDBOX_USER)["Id"]
    out = b"".join(chunk or b"" for chunk, _ in api.exec_start(exec_id, stream=True, demux=True))
    while (found := api.exec_inspect(exec_id))["Running"]:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    if found["ExitCode"] != 0 or out.strip() != b"4":
        raise RuntimeError(f"docker exec: exit {found['ExitCode']}, output {out!r}")
    return elapsed


# -- Invokes through the gateway -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Invoked:
    wall_s: float
    pool_hit: bool
    claim_ms: int
    duration_ms: int
    container_start_ms: int
    session_started: bool


class Agent:
    """dev-agent's gRPC client of one stack."""

    def __init__(self, home: Path, stack: dict[str, Any]) -> None:
        token = Layout(home).agent_token(DEV_PRINCIPAL).read_text().strip()
        self.md = (("authorization", f"Bearer {token}"),)
        self.metrics = str(stack["metrics"]["executor"])
        self.channel = grpc.insecure_channel(str(stack["gateway"]))
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self._ids = iter(range(1 << 30))
        self._lock = threading.Lock()

    def close(self) -> None:
        self.channel.close()

    def invoke(self, session: str = "") -> Invoked:
        with self._lock:
            n = next(self._ids)
        call = call_pb2.ToolCall(
            call_id=f"bench_{n}",
            item_type=call_pb2.ITEM_TYPE_FUNCTION_CALL,
            tool="python",
            arguments=ARGUMENTS,
            session_id=session,
        )
        t0 = time.perf_counter()
        resp = self.stub.Invoke(gateway_pb2.InvokeRequest(call=call), metadata=self.md, timeout=120)
        wall = time.perf_counter() - t0
        result = resp.result
        if result.outcome != executor_pb2.OUTCOME_OK or resp.stdout.strip() != b"4":
            raise RuntimeError(f"Invoke: outcome {result.outcome} {result.error!r}, stdout {resp.stdout!r}")
        want = call_pb2.SANDBOX_MODE_SESSION if session else call_pb2.SANDBOX_MODE_EPHEMERAL
        if result.sandbox.mode != want:
            raise RuntimeError(f"Invoke ran in sandbox mode {result.sandbox.mode}, expected {want}")
        return Invoked(
            wall,
            result.sandbox.pool_hit,
            result.sandbox.claim_ms,
            result.duration_ms,
            result.container_start_ms,
            result.sandbox.session_started,
        )

    def end_session(self, session: str) -> None:
        self.stub.EndSession(gateway_pb2.EndSessionRequest(session_id=session), metadata=self.md, timeout=30)

    def wait_pool_full(self) -> bool:
        """Until every warm class holds its target of idle containers."""
        deadline = time.monotonic() + POOL_WARM_TIMEOUT_S
        while time.monotonic() < deadline:
            gauges = pool_gauges(self.metrics)
            if gauges and all(idle >= target for idle, target in gauges.values()):
                return True
            time.sleep(0.1)
        return False


def pool_gauges(url: str) -> dict[str, tuple[float, float]]:
    """Per pool class: (idle, target) containers, from the executor's /metrics."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as resp:
        text = resp.read().decode()
    idle: dict[str, float] = {}
    target: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "airlock_executor_pool_idle_containers":
                idle[sample.labels["pool"]] = sample.value
            elif sample.name == "airlock_executor_pool_target_containers":
                target[sample.labels["pool"]] = sample.value
    return {pool: (idle.get(pool, 0.0), want) for pool, want in target.items()}


def sequential(agent: Agent, n: int, *, session: str = "", pause_s: float = 0.0, refill: bool = False) -> list[Invoked]:
    """n Invokes one after another. With ``refill``, each waits until the
    pool is full again and then ``pause_s`` (the claimed container's removal
    and the refill's start are done), so a sample is a claim on a quiet
    engine, not a claim racing the last one's clean-up."""
    out = []
    for _ in range(n):
        if refill:
            agent.wait_pool_full()
        time.sleep(pause_s)
        out.append(agent.invoke(session))
    return out


def burst(agent: Agent, n: int) -> list[Invoked]:
    """n Invokes released at once from n threads."""
    gate = threading.Barrier(n)

    def one() -> Invoked:
        gate.wait()
        return agent.invoke()

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(one) for _ in range(n)]
        return [f.result() for f in futures]


# -- output ------------------------------------------------------------------------


def row(label: str, values_s: list[float], extra: str = "") -> None:
    if not values_s:
        print(f"{label:<40} n=   0  (no samples) {extra}")
        return
    print(
        f"{label:<40} n={len(values_s):4d}  p50 {pct(values_s, 50) * ms:7.1f} ms  p99 {pct(values_s, 99) * ms:7.1f} ms"
        f"{'  ' + extra if extra else ''}"
    )


def med(values: list[int]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(label: str, num: float, den: float) -> None:
    print(f"  {label:<52} {num * ms:7.1f} / {den * ms:7.1f} ms = {num / den:5.2f}")


def main() -> int:  # noqa: PLR0915 - one measurement after another reads best
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15, help="container runs, CLI calls and cold Invokes (each)")
    ap.add_argument("--decides", type=int, default=2000, help="sequential Decide calls")
    ap.add_argument("--fast-runs", type=int, default=30, help="docker execs, warm-pool and session Invokes (each)")
    ap.add_argument("--bursts", type=int, default=3, help=f"bursts of {BURST} concurrent Invokes")
    args = ap.parse_args()

    plain = [
        timed(["docker", "run", "--rm", "--network", "none", IMAGE, "python3", "-c", "print(2+2)"])
        for _ in range(args.runs)
    ]
    hardened = [
        timed(["docker", "run", "--rm", *HARDENED, IMAGE, "python3", "-c", "print(2+2)"]) for _ in range(args.runs)
    ]
    # gVisor needs pids headroom for its own kernel threads (see airlock/executor/_options.py).
    gvisor_flags = [f if f != "64" else "128" for f in HARDENED]
    gvisor = [
        timed(["docker", "run", "--rm", "--runtime", "runsc", *gvisor_flags, IMAGE, "python3", "-c", "print(2+2)"])
        for _ in range(args.runs)
    ]

    api = docker.from_env().api
    with floor_container() as cid:
        sdk_exec(api, cid)  # warm-up
        floor_sdk = [sdk_exec(api, cid) for _ in range(args.fast_runs)]
        floor_cli = [timed(["docker", "exec", "-u", SANDBOX_USER, cid, *PROGRAM]) for _ in range(args.fast_runs)]

    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        home = Path(tmp)
        proc, stack = start_stack(home)
        try:
            env = {**os.environ, "AIRLOCK_HOME": str(home)}
            cli = [sys.executable, "-m", "airlock.cli", "call", "python", ARGUMENTS]
            timed(cli, env)  # warm-up: first connection, page cache
            calls = [timed(cli, env) for _ in range(args.runs)]

            token = Layout(home).agent_token("dev-agent").read_text().strip()
            md = (("authorization", f"Bearer {token}"),)
            call = call_pb2.ToolCall(
                call_id="bench",
                item_type=call_pb2.ITEM_TYPE_FUNCTION_CALL,
                tool="python",
                arguments=ARGUMENTS,
            )
            with grpc.insecure_channel(str(stack["gateway"])) as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                for _ in range(50):  # warm-up
                    stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=md, timeout=5)
                lat = []
                for _ in range(args.decides):
                    t0 = time.perf_counter()
                    resp = stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=md, timeout=5)
                    lat.append(time.perf_counter() - t0)
                    assert resp.decision.verdict == call_pb2.VERDICT_ALLOW
            opa_input = {
                "principal": {"id": "dev-agent", "profile": "default"},
                "call": {"tool": "python", "item_type": "function_call", "arguments": {"code": "print(2+2)"}},
            }
            # OPA answers only the gateway (its socket and token): ask as it.
            layout = Layout(home)
            opa_token = (layout.gateway_dir / "opa.token").read_text().strip()
            evals = []
            for _ in range(200):
                answer = opa_query(layout, opa_token, "airlock/decision?metrics=true", opa_input)
                evals.append(answer["metrics"]["timer_rego_query_eval_ns"] / 1e6)

            agent = Agent(home, stack)
            try:
                agent.invoke()  # warm-up; the class the calls need is warm after it
                warm_ok = agent.wait_pool_full()
                ephemeral = sequential(agent, args.fast_runs, pause_s=REFILL_PAUSE_S, refill=True)
                session = f"bench-{os.getpid()}"
                session_calls = sequential(agent, args.fast_runs + 1, session=session)
                agent.end_session(session)
            finally:
                agent.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    with stack_with_pool({"enabled": False}) as (cold_home, cold_stack):
        agent = Agent(cold_home, cold_stack)
        try:
            agent.invoke()  # warm-up
            cold = sequential(agent, args.runs)
        finally:
            agent.close()

    bursts: list[Invoked] = []
    burst_warm = True
    burst_targets: list[int] = []
    with stack_with_pool({"size": BURST_POOL_SIZE}) as (burst_home, burst_stack):
        agent = Agent(burst_home, burst_stack)
        try:
            agent.invoke()  # warm-up
            for _ in range(args.bursts):
                burst_warm = agent.wait_pool_full() and burst_warm
                bursts += burst(agent, BURST)
            burst_targets = sorted({int(target) for _, target in pool_gauges(agent.metrics).values()})
        finally:
            agent.close()

    print(f"machine: {os.cpu_count()} cores; image {IMAGE}; load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    print(f"docker run --rm (plain)      n={len(plain):4d}  median {statistics.median(plain) * ms:7.1f} ms")
    print(f"docker run --rm (hardened)   n={len(hardened):4d}  median {statistics.median(hardened) * ms:7.1f} ms")
    print(f"docker run --rm (hardened, runsc) n={len(gvisor):4d}  median {statistics.median(gvisor) * ms:7.1f} ms")
    print(f"airlock call (CLI, e2e)      n={len(calls):4d}  median {statistics.median(calls) * ms:7.1f} ms")
    print(
        f"Decide RPC (decide-only)     n={len(lat):4d}  p50 {pct(lat, 50) * ms:6.2f} ms  "
        f"p99 {pct(lat, 99) * ms:6.2f} ms  max {max(lat) * ms:6.2f} ms"
    )
    print(f"OPA eval (metrics=true)      n={len(evals):4d}  p50 {pct(evals, 50):6.3f} ms  p99 {pct(evals, 99):6.3f} ms")

    print()
    print("sandboxes (issue 12): python print(2+2); Invokes over gRPC as dev-agent, wall time at the client")
    row("docker run --rm (hardened)", hardened)
    row("docker exec floor (docker SDK)", floor_sdk, "create + stream + inspect, as the executor")
    row("docker exec (docker CLI, reference)", floor_cli)
    hits = [r for r in ephemeral if r.pool_hit]
    row(
        "ephemeral Invoke, warm pool (hits)",
        [r.wall_s for r in hits],
        f"hits {len(hits)}/{len(ephemeral)}; executor claim_ms p50 {med([r.claim_ms for r in hits]):.0f}, "
        f"duration_ms p50 {med([r.duration_ms for r in hits]):.0f}"
        + ("" if warm_ok else "; the pool was not full when they started"),
    )
    later = session_calls[1:]
    row(
        "session Invoke (2nd and later calls)",
        [r.wall_s for r in later],
        f"1st call {session_calls[0].wall_s * ms:.0f} ms (started: {session_calls[0].session_started}); "
        f"executor duration_ms p50 {med([r.duration_ms for r in later]):.0f}",
    )
    row(
        "cold Invoke, pool disabled",
        [r.wall_s for r in cold],
        f"pool hits {sum(r.pool_hit for r in cold)}/{len(cold)}; "
        f"executor container_start_ms p50 {med([r.container_start_ms for r in cold]):.0f}, "
        f"duration_ms p50 {med([r.duration_ms for r in cold]):.0f}",
    )
    burst_s = [r.wall_s for r in bursts]
    cold_p50 = pct([r.wall_s for r in cold], 50)
    print(
        f"{'burst: ' + str(BURST) + ' concurrent, pool size ' + str(BURST_POOL_SIZE):<40} n={len(burst_s):4d}  "
        f"p50 {pct(burst_s, 50) * ms:7.1f} ms  p99 {pct(burst_s, 99) * ms:7.1f} ms  max {max(burst_s) * ms:7.1f} ms  "
        f"hits {sum(r.pool_hit for r in bursts)}/{len(bursts)} (pool target {burst_targets}); "
        f"cold p50 {cold_p50 * ms:.1f} ms" + ("" if burst_warm else "; the pool was not full before every burst")
    )
    print(
        "  (the cold and burst stacks are `airlock up`'s Stack with executor.yaml pool.enabled: false and "
        f"pool.size: {BURST_POOL_SIZE}; one principal's burst also waits for the gateway's per-principal run slots)"
    )
    print("ratios (the issue's targets):")
    floor = pct(floor_sdk, 50)
    if hits:
        ratio("ephemeral p50 / floor p50      (<= 1.3)", pct([r.wall_s for r in hits], 50), floor)
    ratio("session p50 / floor p50        (<= 1.3)", pct([r.wall_s for r in later], 50), floor)
    ratio("cold p50 / docker run --rm hardened p50 (<= 1.1)", cold_p50, statistics.median(hardened))
    ratio("cold p50 / docker run --rm plain p50", cold_p50, statistics.median(plain))
    ratio("burst max / (cold p50 * 1.2)   (<= 1)", max(burst_s), cold_p50 * 1.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
