"""gateway._audit.JsonlAuditSink: one fsynced JSON line per event, and a
failed write is an AuditError, never a silent drop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from airlock.v1 import audit_pb2, call_pb2
from gateway._audit import SCHEMA_VERSION, JsonlAuditSink, render
from gateway._errors import AuditError


def _event(kind: str, decision_id: str) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        schema_version=SCHEMA_VERSION,
        kind=kind,
        decision_id=decision_id,
        decision="deny",
        reasons=[call_pb2.Reason(code="tool_not_granted", message="no")],
    )


def test_render_keeps_default_fields() -> None:
    doc = json.loads(render(audit_pb2.AuditEvent(kind="decision")))
    assert doc["kind"] == "decision"
    # Unset scalars are still present, so every line has the same keys.
    assert doc["decision_id"] == ""
    assert doc["arguments_bytes"] in (0, "0")
    assert "\n" not in render(_event("decision", "d1"))


def test_jsonl_sink_appends_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"

    async def go() -> None:
        sink = JsonlAuditSink(path)
        try:
            await sink.write(_event("decision", "d1"))
            await sink.write(_event("execution", "d1"))
        finally:
            sink.close()
        # A restarted gateway appends; it never truncates.
        again = JsonlAuditSink(path)
        try:
            await again.write(_event("decision", "d2"))
        finally:
            again.close()

    asyncio.run(go())
    lines = path.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines]
    assert [(d["kind"], d["decision_id"]) for d in docs] == [
        ("decision", "d1"),
        ("execution", "d1"),
        ("decision", "d2"),
    ]
    assert docs[0]["reasons"] == [{"code": "tool_not_granted", "message": "no"}]
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to make writes fail")
def test_failed_write_raises_audit_error() -> None:
    async def go() -> None:
        sink = JsonlAuditSink(Path("/dev/full"))
        try:
            await sink.write(_event("decision", "d1"))
        finally:
            sink.close()

    with pytest.raises(AuditError) as info:
        asyncio.run(go())
    assert info.value.code == "audit_failed"
    assert "/dev/full" in str(info.value)
