"""The audit sink and the chain: one fsynced, sealed JSON line per event; a
failed write is an AuditError, never a silent drop; and `verify` finds the
first edited, deleted, inserted or reordered event, across rotated files and
restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from airlock import auditlog
from airlock.v1 import audit_pb2, call_pb2
from gateway._audit import SCHEMA_VERSION, JsonlAuditSink, log_files, render
from gateway._errors import AuditError

KEY = b"test-audit-key-0123456789"


def _event(kind: str, decision_id: str) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        schema_version=SCHEMA_VERSION,
        kind=kind,
        decision_id=decision_id,
        decision="deny",
        reasons=[call_pb2.Reason(code="tool_not_granted", message="no")],
    )


def _write(path: Path, n: int, *, key: bytes | None = KEY, max_bytes: int = 1 << 30, group: bool = True) -> None:
    async def go() -> None:
        sink = JsonlAuditSink(path, key=key, max_bytes=max_bytes, group_commit=group)
        try:
            await asyncio.gather(*(sink.write(_event("decision", f"d{i}")) for i in range(n)))
        finally:
            sink.close()

    asyncio.run(go())


def _verify(path: Path, key: bytes | None = KEY) -> auditlog.Report:
    return auditlog.verify(auditlog.order_files(log_files(path)), key, start=auditlog.ChainState())


def test_render_keeps_default_fields_and_leaves_hash_to_the_seal() -> None:
    doc = json.loads(render(audit_pb2.AuditEvent(kind="decision")))
    assert doc["kind"] == "decision"
    assert doc["decision_id"] == ""
    assert "hash" not in doc
    assert "\n" not in render(_event("decision", "d1"))


@pytest.mark.parametrize("group", [True, False])
def test_sink_appends_sealed_lines_and_a_restart_continues_the_chain(tmp_path: Path, group: bool) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    _write(path, 5, group=group)
    _write(path, 3, group=group)  # a restarted gateway appends and links on
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [int(d["seq"]) for d in docs] == list(range(1, 9))
    assert docs[0]["prev_hash"] == auditlog.GENESIS
    assert all(docs[i]["prev_hash"] == docs[i - 1]["hash"] for i in range(1, 8))
    assert path.stat().st_mode & 0o777 == 0o600
    report = _verify(path)
    assert report.ok, report.problem
    assert report.events == 8


def test_rotation_keeps_one_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 6, max_bytes=1500)
    _write(path, 6, max_bytes=1500)
    files = log_files(path)
    assert len(files) > 2, files
    assert _verify(path).ok
    assert _verify(path).events == 12
    # Verifying the rotated files out of order on the command line still
    # works: files are put in chain order by their first seq.
    assert auditlog.verify(auditlog.order_files(sorted(files, reverse=True)), KEY, start=auditlog.ChainState()).ok


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("tamper", "kind", "line"),
    [
        ("edit", "edited", 3),
        ("delete", "deleted", 3),
        ("insert_copy", "inserted", 4),
        ("swap", "reordered", 3),
        ("strip_hash", "unreadable", 2),
        ("edit_last", "edited", 6),
    ],
)
def test_verify_reports_the_first_tampered_event(tmp_path: Path, tamper: str, kind: str, line: int) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 6)
    lines = _lines(path)
    if tamper == "edit":
        lines[2] = lines[2].replace('"decision": "deny"', '"decision": "allow"')
    elif tamper == "delete":
        del lines[2]
    elif tamper == "insert_copy":
        lines.insert(3, lines[2])
    elif tamper == "swap":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "strip_hash":
        lines[1] = lines[1].rsplit(', "hash"', 1)[0] + "}\n"
    elif tamper == "edit_last":
        lines[5] = lines[5].replace("tool_not_granted", "allowed")
    path.write_text("".join(lines))
    report = _verify(path)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.line) == (kind, line), str(report.problem)


def test_a_rewritten_chain_needs_the_key(tmp_path: Path) -> None:
    """Recomputing every hash without the key still fails verification."""
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    docs = [json.loads(line) for line in _lines(path)]
    docs[1]["decision"] = "allow"
    prev = auditlog.GENESIS
    forged = []
    for d in docs:
        d.pop("hash")
        d["prev_hash"] = prev
        line, prev = auditlog.seal(json.dumps(d), None)  # no key: plain SHA-256
        forged.append(line)
    path.write_bytes(b"".join(forged))
    assert _verify(path, key=None).ok  # consistent as a keyless chain ...
    report = _verify(path, key=KEY)  # ... but not under the gateway's key
    assert report.problem is not None
    assert (report.problem.kind, report.problem.line) == ("edited", 1)


def test_a_sink_refuses_to_extend_a_chain_whose_tail_was_edited(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    lines = _lines(path)
    lines[-1] = lines[-1].replace("deny", "allow")
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match="does not match its hash"):
        JsonlAuditSink(path, key=KEY, max_bytes=1 << 30)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to make writes fail")
@pytest.mark.parametrize("group", [True, False])
def test_failed_write_raises_audit_error(group: bool) -> None:
    async def go() -> None:
        sink = JsonlAuditSink(Path("/dev/full"), key=KEY, max_bytes=1 << 30, group_commit=group)
        try:
            await sink.write(_event("decision", "d1"))
        finally:
            sink.close()

    with pytest.raises(AuditError) as info:
        asyncio.run(go())
    assert info.value.code == "audit_failed"
    assert "/dev/full" in str(info.value)
