"""Prints the audit write cost per event (fsync each vs group commit, at
several concurrencies) and the metrics overhead per call. Numbers only; no
targets. Usage: .venv/bin/python scripts/bench_audit.py [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from airlock.gateway._audit import SCHEMA_VERSION, JsonlAuditSink
from airlock.gateway._config import RetentionConfig
from airlock.gateway._mask import Masker
from airlock.gateway._metrics import GatewayMetrics
from airlock.v1 import audit_pb2, call_pb2


def _event(i: int) -> audit_pb2.AuditEvent:
    e = audit_pb2.AuditEvent(
        schema_version=SCHEMA_VERSION,
        kind="decision",
        decision_id=f"d{i}",
        principal="dev-agent",
        tool="python",
        item_type="function_call",
        call_id=f"c{i}",
        decision="allow",
        path="airlock/decision",
        reasons=[call_pb2.Reason(code="allowed", message="tool is granted")],
    )
    e.input.update({"call": {"tool": "python", "arguments": {"code": "print(2+2)"}}})
    return e


async def _run(path: Path, *, group: bool, events: int, concurrency: int) -> float:
    sink = JsonlAuditSink(
        path,
        signing_key=Ed25519PrivateKey.generate(),
        masker=Masker(),
        max_bytes=1 << 40,
        group_commit=group,
        checkpoint_events=1000,
        checkpoint_seconds=10.0,
        retention=RetentionConfig(),
    )
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await sink.write(_event(i))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(events)))
    elapsed = time.perf_counter() - t0
    sink.close()
    return elapsed / events


def _metrics_overhead(calls: int) -> float:
    """The metric updates one allowed Invoke makes, timed in a loop."""
    m = GatewayMetrics(CollectorRegistry(), ["python", "shell"], {"default"})
    t0 = time.perf_counter()
    for _ in range(calls):
        m.in_flight.inc()
        with m.decision_seconds.labels("Invoke").time():
            pass
        m.opa_eval_seconds.observe(0.0003)
        m.policy_revision("abc")
        m.decisions.labels(m.tool_label("python"), "allow", m.reason_label("allowed"), m.profile_label("default")).inc()
        m.audit_write_seconds.observe(0.0002)
        m.audit_events.labels("decision").inc()
        m.audit_last_seq.set(1)
        m.executions.labels("python", "ok").inc()
        m.execution_seconds.labels("python").observe(0.05)
        m.audit_events.labels("execution").inc()
        m.in_flight.dec()
        m.invoke_seconds.labels("python").observe(0.3)
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="airlock-audit-bench-", dir="/var/tmp") as tmp:
        for concurrency in (1, 8, 64):
            for group in (False, True):
                runs = [
                    asyncio.run(
                        _run(
                            Path(tmp) / f"a-{group}-{concurrency}-{r}.jsonl",
                            group=group,
                            events=args.events,
                            concurrency=concurrency,
                        )
                    )
                    for r in range(3)
                ]
                mode = "group commit" if group else "fsync each  "
                print(
                    f"audit {mode} concurrency {concurrency:3d}: {statistics.median(runs) * 1e6:8.1f} us/event "
                    f"(median of 3 x {args.events} events)"
                )
    per_call = [_metrics_overhead(20000) for _ in range(3)]
    print(f"metrics updates per allowed Invoke: {statistics.median(per_call) * 1e6:.1f} us (median of 3 x 20000)")


if __name__ == "__main__":
    main()
