"""Computer use: how long a desktop session takes to its first screenshot,
and an action's round trip (action, then screenshot) through the agent
adapter, the gateway, OPA, the audit log and the executor, against taking
the same screenshot with `docker exec` in the same desktop container.
Prints numbers (no asserts).

Starts its own `airlock up` in a temporary home, then:
  1. session start: a new session's first computer_call (a screenshot):
     container, Xvfb, chromium's first paint, the screenshot (--starts runs);
  2. agent round trip: a computer_call with one click and the screenshot
     after it, through agent.execute_item in one live session (--runs);
  3. floor: `docker exec` of the same act.py with the same click in that
     session's container (what the desktop itself costs).

Usage: .venv/bin/python scripts/bench_computer.py [--runs 50] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from openai.types.responses import ResponseComputerToolCall

from airlock import agent
from airlock.cli._launch import launch

CLICK = {"type": "click", "x": 700, "y": 75, "button": "left"}


def computer_call(actions: list[dict[str, object]]) -> ResponseComputerToolCall:
    return ResponseComputerToolCall.model_validate(
        {
            "type": "computer_call",
            "id": f"cu_{uuid.uuid4().hex}",
            "call_id": f"call_bench_{uuid.uuid4().hex[:12]}",
            "status": "completed",
            "pending_safety_checks": [],
            "actions": actions,
        }
    )


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {statistics.median(ms):8.1f} ms   p99 {p99:8.1f} ms   (n={len(ms)})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="airlock-bench-computer-") as tmp:
        home = Path(tmp)
        running = launch(home)
        try:
            with agent.GatewayClient.from_stack(home, timeout_s=120) as gateway:
                decl = agent.declare(gateway.list_tools())

                def step(session: str, actions: list[dict[str, object]]) -> agent.CallRecord:
                    ctx = agent.ItemContext(gateway, session, decl, 1, None)
                    record = agent.execute_item(ctx, computer_call(actions))
                    if not record.result.allowed or record.result.outcome != "ok":
                        raise SystemExit(f"computer call failed: {record.result}")
                    return record

                starts = []
                for _ in range(args.starts):
                    session = f"bench-start-{uuid.uuid4().hex[:8]}"
                    t0 = time.perf_counter()
                    step(session, [{"type": "screenshot"}])
                    starts.append((time.perf_counter() - t0) * 1000)
                    gateway.end_session(session_id=session)

                session = f"bench-{uuid.uuid4().hex[:8]}"
                first = step(session, [{"type": "screenshot"}])
                assert first.result.run is not None
                container = first.result.run.sandbox.container_id
                step(session, [CLICK])  # warm
                through = timed(lambda: step(session, [CLICK]), args.runs)
                argv = ["python3", "-I", "/usr/local/lib/airlock-desktop/act.py", json.dumps([CLICK])]
                exec_cmd = ["docker", "exec", "-u", "65534:65534", "-e", "DISPLAY=:99", container, *argv]
                subprocess.run(exec_cmd, check=True, capture_output=True)  # warm
                floor = timed(lambda: subprocess.run(exec_cmd, check=True, capture_output=True), args.runs)
                size = len(first.result.stdout.strip()) * 3 // 4
                gateway.end_session(session_id=session)
        finally:
            running.proc.send_signal(signal.SIGTERM)
            running.proc.wait(60)

    print(f"machine: {os.cpu_count()} cores; desktop 1024x768 (Xvfb + kiosk chromium); screenshot ~{size} bytes PNG")
    print(f"session start to first screenshot   {summary(starts)}")
    print(f"click + screenshot via agent        {summary(through)}")
    print(f"click + screenshot via docker exec  {summary(floor)}")
    print(f"added by agent+gateway+executor     p50 {statistics.median(through) - statistics.median(floor):8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
