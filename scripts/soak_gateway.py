"""A bounded soak of one gateway under faults (issue 18): prints what it saw
and exits 1 when an invariant broke. Not part of every CI run (it takes
about two minutes); run it with:

    .venv/bin/python scripts/soak_gateway.py [--seconds 60] [--rps 1000]

What it starts, all its own and on loopback or Unix sockets:
  - an `airlock up` stack, for its executor, agents and signed bundle;
  - its own OPA serving that bundle on a loopback port (so it can be
    restarted without stopping the stack);
  - a redis-server with ACL users (tests/fixtures/redis.py), the gateway's
    budget store;
  - a gateway using both (budget.store: redis).
Then ghz drives Decide for an allowed python call at --rps for --seconds;
a third of the way in OPA is stopped and started again, two thirds of the
way in Redis is. Afterwards it checks, from ghz's report and the gateway's
audit log:
  - every answer has exactly one decision event (one call id per request);
    only requests ghz itself cuts when the run ends ("transport is closing")
    may have none, if they never reached the gateway;
  - no allow without a valid decision: every allow event carries a policy
    revision and a policy result that said allow;
  - calls during the outages were denied with their own reason codes
    (policy_unreachable, budget_unavailable), counted;
  - the audit log verifies (`airlock audit verify`);
  - the gateway's RSS before and after;
  - one more call after the faults is allowed (it serves normally).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "integration")]

from bench_gateway import cpu_s, free_port, ghz, ghz_argv, rss_kib, tool, wait_healthy  # noqa: E402
from fixtures.redis import RedisServer  # noqa: E402
from helpers import Stack, make_gateway_config, start_daemon, stop_daemon  # noqa: E402

from airlock.cli._launch import launch  # noqa: E402
from airlock.cli._layout import Layout  # noqa: E402


class Opa:
    """OPA on a fixed loopback port, restartable."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                tool("opa"),
                "run",
                "--server",
                "--skip-version-check",
                "--log-level=error",
                f"--addr=127.0.0.1:{self.port}",
                f"--verification-key={self.layout.bundle_public_key}",
                "--bundle",
                str(self.layout.bundle),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_healthy(f"{self.url}/health")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def ghz_load(address: str, token: str, rps: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    load = ["-c", "32", "-r", str(rps), "-z", f"{seconds}s", "--timeout", "5s", "-o", str(out)]
    # One call id per request (ghz's template), so an answer without its
    # decision event can be named.
    return subprocess.Popen(ghz_argv(address, token, "soak-{{.RequestNumber}}", *load), stdout=subprocess.DEVNULL)


def check_events(audit: Path) -> tuple[list[str], dict[str, Any]]:
    """Problems found in the log, and counts for the report."""
    problems: list[str] = []
    verdicts: collections.Counter[str] = collections.Counter()
    ids: collections.Counter[str] = collections.Counter()
    last_bench = ""
    calls: set[str] = set()
    for n, line in enumerate(audit.read_text().splitlines(), 1):
        event = json.loads(line)
        if event.get("kind") == "decision" and event.get("call_id") == "bench":
            last_bench = event["decision"]
        if event.get("kind") != "decision" or not str(event.get("call_id")).startswith("soak-"):
            continue
        ids[event["decision_id"]] += 1
        if event["call_id"] in calls:
            problems.append(f"line {n}: a second decision event for {event['call_id']}")
        calls.add(event["call_id"])
        codes = ",".join(r.get("code", "") for r in event.get("reasons") or [])
        verdicts[f"{event['decision']} {codes}"] += 1
        if event["decision"] == "allow":
            result = event.get("result") or {}
            if not event.get("policy_revision") or result.get("allow") is not True:
                problems.append(f"line {n}: an allow without a valid decision ({event['decision_id']})")
    problems += [f"decision {d} has {k} events" for d, k in ids.items() if k != 1]
    return problems, {"events": sum(ids.values()), "verdicts": dict(verdicts), "last_bench": last_bench, "calls": calls}


def main() -> int:  # noqa: PLR0915 - one step after another reads best
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--rps", type=int, default=1000)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))
    home.chmod(0o755)
    running = launch(home)
    if running.proc.stdout is not None:  # drained, so the daemons never block on a full pipe
        threading.Thread(target=deque, args=(running.proc.stdout, 0), daemon=True).start()
    stack = Stack(home, running.info.as_dict(), running.proc)
    redis = RedisServer(home / "redis")
    opa = Opa(stack.layout)
    gateway: subprocess.Popen[bytes] | None = None
    problems: list[str] = []
    try:
        redis.start()
        opa.start()
        folder = home / "soak-gateway"
        config = make_gateway_config(
            folder,
            stack,
            opa={"url": opa.url, "token_file": None, "timeout_ms": 250},
            budget={"store": "redis", "redis": redis.budget_config(timeout_ms=100)},
        )
        gateway, ready = start_daemon("gateway", config, folder)
        address = str(ready["listen"])
        ghz(address, stack.token, 4, 300)  # warm-up
        rss_before, cpu_before = rss_kib(gateway.pid), cpu_s(gateway.pid)

        report = home / "ghz.json"
        load = ghz_load(address, stack.token, args.rps, args.seconds, report)
        third = args.seconds / 3
        time.sleep(third)
        print(f"t={third:.0f}s: OPA stopped", flush=True)
        opa.stop()
        time.sleep(2)
        opa.start()
        print(f"t={third + 2:.0f}s: OPA started again", flush=True)
        time.sleep(third - 2)
        print(f"t={2 * third:.0f}s: Redis stopped", flush=True)
        redis.stop()
        time.sleep(2)
        redis.start()
        print(f"t={2 * third + 2:.0f}s: Redis started again", flush=True)
        load.wait(args.seconds + 120)
        rss_after, cpu_after = rss_kib(gateway.pid), cpu_s(gateway.pid)
        after = ghz(address, stack.token, 1, 1)  # serves normally afterwards (and the next check sees it)

        result = json.loads(report.read_text())
        answered = int(result["count"])
        statuses = result.get("statusCodeDistribution") or {}
        time.sleep(1)  # the last group commit
        found, counts = check_events(Path(config["audit"]["path"]))
        problems += found
        # A fail-closed deny is answered with an error status carrying the
        # decision (UNAVAILABLE for an outage): every answer counts.
        # ghz ends the run by closing its connection: requests in flight then
        # are "answered" on the client side ("transport is closing"), and one
        # that never reached the gateway has no event. Every other answer
        # needs exactly one event (unique call ids are checked above).
        closing = sum(1 for d in result.get("details") or [] if "transport is closing" in str(d.get("error", "")))
        numbers = {int(c.removeprefix("soak-")) for c in counts["calls"] if c.removeprefix("soak-").isdigit()}
        missing = sorted(set(range(answered)) - numbers)
        if len(missing) > closing or counts["events"] > answered:
            problems.append(
                f"{answered} answers ({closing} cut by the client at the end) but {counts['events']} decision "
                f"events (no event: {missing[:10]})"
            )
        errors = collections.Counter(
            f"{d.get('status')}: {d.get('error', '')[:120]}" for d in result.get("details") or [] if d.get("error")
        )
        for error, n in errors.most_common(5):
            print(f"  {n:7d}  answered with an error: {error}")
        verify = subprocess.run(
            [sys.executable, "-m", "airlock.cli", "audit", "verify", "--public-key", str(folder / "audit-signing.pub"),
             config["audit"]["path"]],
            check=False,
            capture_output=True,
            text=True,
        )  # fmt: skip
        if verify.returncode != 0:
            problems.append(f"audit verify failed: {verify.stdout}{verify.stderr}")
        if after["errors"] or counts["last_bench"] != "allow":
            problems.append(f"the call after the faults was not allowed ({counts['last_bench'] or 'no answer'})")
        print(
            f"ghz: {answered} calls in {args.seconds} s at --rps {args.rps}: {result['rps']:.0f}/s; statuses {statuses}"
        )
        print(f"decision events for them: {counts['events']} ({len(missing)} without one, cut by ghz at the end)")
        print("by verdict and reason:")
        for verdict, n in sorted(counts["verdicts"].items(), key=lambda kv: -kv[1]):
            print(f"  {n:7d}  {verdict}")
        print(f"gateway CPU: {(cpu_after - cpu_before) / max(answered, 1) * 1000:.2f} ms per decision")
        print(f"gateway RSS: {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after")
        print(f"audit verify: {'ok' if verify.returncode == 0 else 'FAILED'}")
        print(f"a call after the faults: {counts['last_bench'] or 'no answer'}")
    finally:
        if gateway is not None:
            stop_daemon(gateway)
        opa.stop()
        redis.stop()
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(60)
        shutil.rmtree(home, ignore_errors=True)
    for p in problems:
        print(f"PROBLEM: {p}")
    print("soak: ok" if not problems else f"soak: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
