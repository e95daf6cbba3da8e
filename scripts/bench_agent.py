"""Added latency per tool call of the agent adapter plus the gateway, over a
direct local execution of the same command. Prints numbers (no asserts).

Starts its own `airlock up` in a temporary home, then measures, for the
command `echo hi` (medians over --runs, after warm-up):
  1. direct: `subprocess.run(["sh", "-c", "echo hi"])` on this host;
  2. docker: `docker run --rm` of the sandbox image with the executor's
     hardening flags (what isolation alone costs);
  3. agent: one local-environment shell_call through the agent package
     (agent.execute_item -> Invoke -> OPA -> audit fsync -> executor -> a fresh
     container), the path a model's call takes;
  4. agent, refused: the same path for a command the policy refuses (no
     container), i.e. adapter + gateway + OPA + audit alone.

Usage: .venv/bin/python scripts/bench_agent.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from openai.types.responses import ResponseFunctionShellToolCall

from airlock import agent
from airlock.cli._launch import launch

IMAGE = "airlock/sandbox-python:4"
COMMAND = "echo hi"
HARDENED = [
    "--network", "none", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
    "--user", "65534:65534", "--pids-limit", "64", "--memory", "256m", "--memory-swap", "256m",
    "--tmpfs", "/tmp:rw,nosuid,nodev,noexec,size=64m", "--log-driver", "none",
]  # fmt: skip


def start_stack(home: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    running = launch(home)
    return running.proc, running.info.as_dict()


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def shell_call(command: str) -> ResponseFunctionShellToolCall:
    return ResponseFunctionShellToolCall.model_validate(
        {
            "type": "shell_call",
            "id": f"sh_{uuid.uuid4().hex}",
            "call_id": f"call_bench_{uuid.uuid4().hex[:12]}",
            "status": "completed",
            "action": {"commands": [command]},
            "environment": {"type": "local"},
        }
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()

    def direct() -> None:
        subprocess.run(["sh", "-c", COMMAND], check=True, capture_output=True)

    def docker() -> None:
        subprocess.run(
            ["docker", "run", "--rm", *HARDENED, IMAGE, "sh", "-c", COMMAND], check=True, capture_output=True
        )

    direct_ms = median_ms(direct, args.runs)
    docker_ms = median_ms(docker, args.runs)

    with tempfile.TemporaryDirectory(prefix="airlock-bench-agent-") as tmp:
        home = Path(tmp)
        proc, _ = start_stack(home)
        try:
            with agent.GatewayClient.from_stack(home) as gateway:
                decl = agent.declare(gateway.list_tools())

                def through(command: str, *, allowed: bool) -> Callable[[], None]:
                    def one() -> None:
                        # A session per call, so the budget rules never interfere.
                        ctx = agent.ItemContext(gateway, f"bench-{uuid.uuid4().hex}", decl, 1, None)
                        record = agent.execute_item(ctx, shell_call(command))
                        assert record.result.allowed is allowed, record.result

                    return one

                agent_ms = median_ms(through(COMMAND, allowed=True), args.runs)
                refused_ms = median_ms(through("cat /etc/shadow", allowed=False), args.runs)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)

    print(f"machine: {os.cpu_count()} cores; command {COMMAND!r}; n={args.runs} each (medians)")
    print(f"direct subprocess (sh -c)          {direct_ms:8.1f} ms")
    print(f"docker run --rm, hardened          {docker_ms:8.1f} ms")
    print(f"agent shell_call via gateway       {agent_ms:8.1f} ms")
    print(f"agent shell_call, refused (no run) {refused_ms:8.1f} ms")
    print(f"added per call vs direct           {agent_ms - direct_ms:8.1f} ms")
    print(f"  of which isolation (docker - direct)           {docker_ms - direct_ms:8.1f} ms")
    print(f"  of which adapter+gateway+executor (agent - docker) {agent_ms - docker_ms:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
