"""Decision throughput and latency of the gateway, against its floors.

Starts its own `airlock up` in a temporary home (the shipped defaults: OPA
on the same machine, over its Unix socket), then prints, for concurrency 1,
8 and 32:
  1. `Decide` for an allowed python call, driven by ghz (a real gRPC load
     tool, pinned in scripts/bootstrap): p50, p99, decisions/s;
  2. OPA alone under the same load: its REST Data API with the input the
     gateway sent for that decision (taken from the audit log), driven by
     hey (pinned in scripts/bootstrap). The stack's OPA serves its Data API
     on a Unix socket only, which hey cannot reach, so this is a second OPA
     on loopback TCP running the same signed bundle;
  3. OPA's own evaluation time for that decision (its metrics timer);
  4. the fsync floor: a 400-byte append + fsync on the audit log's disk,
     which every durable decision pays at least once per batch.
No asserts and no targets: it prints what it measured on this machine.

Usage: .venv/bin/python scripts/bench_gateway.py [--calls 4000] [--levels 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

from airlock.cli._launch import launch
from airlock.cli._layout import Layout
from airlock.cli._stackconf import opa_query
from airlock.gateway._registry import load_registry

REPO = Path(__file__).resolve().parent.parent
TOOLS = Path(os.environ.get("AIRLOCK_TOOLS", "/opt/airlock/tools"))
ARGUMENTS = json.dumps({"code": "print(2+2)"})
MS = 1000.0


def tool(name: str) -> str:
    found = shutil.which(name) or (str(TOOLS / name) if (TOOLS / name).exists() else None)
    if found is None:
        sys.exit(f"{name} not found: run scripts/bootstrap (it installs the pinned version)")
    return found


def ghz_argv(address: str, token: str, call_id: str, *load: str) -> list[str]:
    """ghz driving Decide for an allowed python call; ``load`` says how much
    (-c, -n or -z, -r) and where the JSON report goes."""
    data = {
        "call": {"call_id": call_id, "item_type": "ITEM_TYPE_FUNCTION_CALL", "tool": "python", "arguments": ARGUMENTS}
    }
    return [
        tool("ghz"),
        "--insecure",
        "--proto",
        str(REPO / "proto/airlock/v1/gateway.proto"),
        "--import-paths",
        str(REPO / "proto"),
        "--call",
        "airlock.v1.GatewayService.Decide",
        "-d",
        json.dumps(data),
        "-m",
        json.dumps({"authorization": f"Bearer {token}"}),
        "-O",
        "json",
        *load,
        address,
    ]


def ghz(address: str, token: str, concurrency: int, calls: int) -> dict[str, float]:
    out = subprocess.run(
        ghz_argv(address, token, "bench", "-c", str(concurrency), "-n", str(calls), "--timeout", "10s"),
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout)
    dist = {int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    errors = sum(int(v) for k, v in (report.get("statusCodeDistribution") or {}).items() if k != "OK")
    return {
        "p50": dist.get(50, float("nan")),
        "p99": dist.get(99, float("nan")),
        "rps": report["rps"],
        "errors": errors,
    }


def hey(url: str, body: Path, concurrency: int, calls: int) -> dict[str, float]:
    out = subprocess.run(
        [
            tool("hey"),
            "-n",
            str(calls),
            "-c",
            str(concurrency),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(body),
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    def grab(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    return {
        "p50": grab(r"50%+ in ([\d.]+) secs") * MS,
        "p99": grab(r"99%+ in ([\d.]+) secs") * MS,
        "rps": grab(r"Requests/sec:\s+([\d.]+)"),
        "errors": sum(int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out) if code != "200"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def fsync_floor(directory: Path, n: int = 2000) -> tuple[float, float]:
    line = b"x" * 399 + b"\n"
    lat = []
    fd, name = tempfile.mkstemp(dir=directory, prefix="fsync-floor-")
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, line)
            os.fsync(fd)
            lat.append((time.perf_counter() - t0) * MS)
    finally:
        os.close(fd)
        Path(name).unlink()
    return statistics.median(lat), statistics.quantiles(lat, n=100)[98]


def decision_input(layout: Layout, audit_log: Path) -> dict[str, Any]:
    """The input the gateway sent OPA for the last decision: the audit copy
    names the tool instead of carrying its registry entry, so the entry is
    put back from the registry the gateway reads."""
    last = None
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("kind") == "decision" and event.get("tool") == "python":
            last = event
    if last is None:
        sys.exit("no python decision in the audit log")
    doc: dict[str, Any] = last["input"]
    doc["tool"] = load_registry(layout.gateway_registry).tool_data("python")
    return doc


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (load-independent, unlike
    latency on a busy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_opa_alone(layout: Layout) -> tuple[subprocess.Popen[bytes], str]:
    """A second OPA on loopback TCP with the stack's signed bundle."""
    port = free_port()
    proc = subprocess.Popen(
        [
            tool("opa"),
            "run",
            "--server",
            "--skip-version-check",
            "--log-level=error",
            f"--addr=127.0.0.1:{port}",
            f"--verification-key={layout.bundle_public_key}",
            "--bundle",
            str(layout.bundle),
        ],
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    opa_url = f"{base}/v1/data/airlock/decision?provenance=true&metrics=true"
    wait_healthy(f"{base}/health")
    return proc, opa_url


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def report(
    calls: int,
    rows: list[tuple[int, dict[str, float], dict[str, float]]],
    evals: list[float],
    floor: tuple[float, float],
    rss: tuple[int, int],
) -> None:
    floor_p50, floor_p99 = floor
    rss_before, rss_after = rss
    print(f"machine: {os.cpu_count()} cores; {calls} calls per level; load average {os.getloadavg()[0]:.2f}")
    print()
    print(
        "| concurrency | gateway p50 | gateway p99 | decisions/s | gateway CPU/decision | its OPA CPU/decision "
        "| OPA alone p50 | OPA alone p99 | OPA alone/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for c, g, o in rows:
        errs = f" ({g['errors']:.0f} errors)" if g["errors"] else ""
        oerrs = f" ({o['errors']:.0f} errors)" if o["errors"] else ""
        print(
            f"| {c} | {g['p50']:.2f} ms | {g['p99']:.2f} ms | {g['rps']:.0f}{errs} "
            f"| {g['gw_cpu']:.2f} ms | {g['opa_cpu']:.2f} ms "
            f"| {o['p50']:.2f} ms | {o['p99']:.2f} ms | {o['rps']:.0f}{oerrs} |"
        )
    print()
    print(f"OPA evaluation (timer_rego_query_eval_ns), n=300: p50 {statistics.median(evals):.3f} ms")
    print(f"fsync floor (400-byte append + fsync), n=2000: p50 {floor_p50:.3f} ms, p99 {floor_p99:.3f} ms")
    print(f"gateway RSS: {rss_before / 1024:.1f} MiB after warm-up, {rss_after / 1024:.1f} MiB at the end")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=4000, help="Decide calls per concurrency level")
    ap.add_argument("--levels", default="1,8,32", help="concurrency levels")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    home = Path(tempfile.mkdtemp(prefix="bench-gw-", dir="/tmp"))
    home.chmod(0o755)
    running = launch(home)
    out = running.proc.stdout
    if out is not None:  # drained, so the daemons never block on a full pipe
        threading.Thread(target=deque, args=(out, 0), daemon=True).start()
    stack = running.info.as_dict()
    layout = Layout(home)
    opa_alone: subprocess.Popen[bytes] | None = None
    try:
        token = layout.agent_token("dev-agent").read_text().strip()
        opa_token = (layout.gateway_dir / "opa.token").read_text().strip()
        address = str(stack["gateway"])
        gateway_pid = int(stack["pids"]["gateway"])
        opa_pid = int(stack["pids"]["opa"])
        ghz(address, token, 4, 500)  # warm-up: connections, caches
        rss_before = rss_kib(gateway_pid)
        doc = decision_input(layout, Path(stack["audit_log"]))
        body = home / "opa-input.json"
        body.write_text(json.dumps({"input": doc}))
        opa_alone, opa_url = start_opa_alone(layout)
        with urllib.request.urlopen(
            urllib.request.Request(opa_url, data=body.read_bytes(), headers={"Content-Type": "application/json"}),
            timeout=5,
        ) as resp:
            answer = json.load(resp)
        if answer.get("result", {}).get("allow") is not True:
            sys.exit(f"OPA does not allow the benchmark's input: {answer.get('result')}")
        evals = [
            opa_query(layout, opa_token, "airlock/decision?metrics=true", doc)["metrics"]["timer_rego_query_eval_ns"]
            / 1e6
            for _ in range(300)
        ]
        rows = []
        for c in levels:
            before = cpu_s(gateway_pid), cpu_s(opa_pid)
            g = ghz(address, token, c, args.calls)
            g["gw_cpu"] = (cpu_s(gateway_pid) - before[0]) / args.calls * MS
            g["opa_cpu"] = (cpu_s(opa_pid) - before[1]) / args.calls * MS
            o = hey(opa_url, body, c, args.calls)
            rows.append((c, g, o))
        rss_after = rss_kib(gateway_pid)
        floor_p50, floor_p99 = fsync_floor(Path(stack["audit_log"]).parent)
    finally:
        if opa_alone is not None:
            opa_alone.terminate()
            opa_alone.wait(10)
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(60)
        shutil.rmtree(home, ignore_errors=True)

    report(args.calls, rows, evals, (floor_p50, floor_p99), (rss_before, rss_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
