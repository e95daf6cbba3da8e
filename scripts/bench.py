"""Benchmarks the core path and prints numbers (no asserts, no targets).

Starts its own `airlock up` in a temporary home, then measures on this
machine, in this run:
  1. `docker run --rm` of the sandbox image running print(2+2) (plain, with
     the executor's hardening flags, and the same under gVisor);
  2. the full `airlock call python '{"code": "print(2+2)"}'` CLI, end to end;
  3. decide-only (Decide RPC) latency over many sequential calls from one
     gRPC client, plus OPA's own eval time for the same decision.

Usage: .venv/bin/python scripts/bench.py [--runs 15] [--decides 2000]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from airlock.cli._launch import launch
from airlock.cli._layout import Layout
from airlock.cli._stackconf import opa_query
from airlock.v1 import call_pb2, gateway_pb2, gateway_pb2_grpc

IMAGE = "airlock/sandbox-python:2"
HARDENED = [
    "--network", "none", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
    "--user", "65534:65534", "--pids-limit", "64", "--memory", "256m", "--memory-swap", "256m",
    "--tmpfs", "/tmp:rw,nosuid,nodev,noexec,size=64m", "--log-driver", "none",
]  # fmt: skip


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def start_stack(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    running = launch(home)
    return running.proc, running.info.as_dict()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15, help="container runs and CLI calls (each)")
    ap.add_argument("--decides", type=int, default=2000, help="sequential Decide calls")
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

    with tempfile.TemporaryDirectory(prefix="airlock-bench-") as tmp:
        home = Path(tmp)
        proc, stack = start_stack(home)
        try:
            env = {**os.environ, "AIRLOCK_HOME": str(home)}
            cli = [sys.executable, "-m", "airlock.cli", "call", "python", '{"code": "print(2+2)"}']
            timed(cli, env)  # warm-up: first connection, page cache
            calls = [timed(cli, env) for _ in range(args.runs)]

            token = Layout(home).agent_token("dev-agent").read_text().strip()
            md = (("authorization", f"Bearer {token}"),)
            call = call_pb2.ToolCall(
                call_id="bench",
                item_type=call_pb2.ITEM_TYPE_FUNCTION_CALL,
                tool="python",
                arguments='{"code": "print(2+2)"}',
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
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    ms = 1000.0
    print(f"machine: {os.cpu_count()} cores; image {IMAGE}")
    print(f"docker run --rm (plain)      n={len(plain):4d}  median {statistics.median(plain) * ms:7.1f} ms")
    print(f"docker run --rm (hardened)   n={len(hardened):4d}  median {statistics.median(hardened) * ms:7.1f} ms")
    print(f"docker run --rm (hardened, runsc) n={len(gvisor):4d}  median {statistics.median(gvisor) * ms:7.1f} ms")
    print(f"airlock call (CLI, e2e)      n={len(calls):4d}  median {statistics.median(calls) * ms:7.1f} ms")
    print(
        f"Decide RPC (decide-only)     n={len(lat):4d}  p50 {pct(lat, 50) * ms:6.2f} ms  "
        f"p99 {pct(lat, 99) * ms:6.2f} ms  max {max(lat) * ms:6.2f} ms"
    )
    print(f"OPA eval (metrics=true)      n={len(evals):4d}  p50 {pct(evals, 50):6.3f} ms  p99 {pct(evals, 99):6.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
