"""The audit sink and the chain: one fsynced, sealed JSON line per event,
signed checkpoints verifiable with the public key alone, a writer that no
event and no disk failure can stop, cuts and replaced files refused, and a
`verify` that reports every problem.

Writes fail here through real causes where the kernel offers one (a full
tmpfs, a deleted or replaced file); the remaining failures (EIO from fsync, a
rename that raises) are injected at the seam, which a unit test may do."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from airlock.cli._main import main as airlock_main
from airlock.common import ConfigError, auditlog, parse_config
from airlock.gateway import _audit
from airlock.gateway._audit import SCHEMA_VERSION, JsonlAuditSink, log_files, render
from airlock.gateway._config import AuditConfig, RetentionConfig, load_gateway_config
from airlock.gateway._errors import AuditError
from airlock.gateway._mask import Masker
from airlock.v1 import audit_pb2, call_pb2

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key()
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
WAIT = 10.0  # seconds a test waits for something that takes milliseconds; on the old code it would hang


def _event(kind: str, decision_id: str) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        schema_version=SCHEMA_VERSION,
        kind=kind,
        decision_id=decision_id,
        decision="deny",
        reasons=[call_pb2.Reason(code="tool_not_granted", message="no")],
    )


def _nan_event() -> audit_pb2.AuditEvent:
    event = _event("decision", "nan")
    event.input.update({"x": float("nan")})
    return event


def _sink(path: Path, **kw: Any) -> JsonlAuditSink:
    args: dict[str, Any] = {
        "signing_key": KEY,
        "masker": Masker(),
        "max_bytes": 1 << 30,
        "group_commit": True,
        "checkpoint_events": 1000,
        "checkpoint_seconds": 60.0,
        "retention": RetentionConfig(),
    }
    args.update(kw)
    return JsonlAuditSink(path, **args)


def _write(path: Path, n: int, **kw: Any) -> None:
    async def go() -> None:
        sink = _sink(path, **kw)
        try:
            # One at a time: each write is a batch, so rotation and pruning
            # get their chance between events.
            for i in range(n):
                await asyncio.wait_for(sink.write(_event("decision", f"d{i}")), WAIT)
        finally:
            sink.close()

    asyncio.run(go())


def _verify(path: Path, *, key: Any = PUB, head: bool = True) -> auditlog.Report:
    hp = auditlog.head_path(path)
    return auditlog.verify(
        auditlog.order_files(log_files(path)),
        public_key=key,
        head=auditlog.read_head(hp) if head else None,
        head_file=str(hp),
    )


def _docs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


# -- format ------------------------------------------------------------------------


def test_render_keeps_default_fields_and_leaves_hash_to_the_seal() -> None:
    doc = json.loads(render(audit_pb2.AuditEvent(kind="decision")))
    assert doc["kind"] == "decision"
    assert doc["decision_id"] == ""
    assert "hash" not in doc
    assert "\n" not in render(_event("decision", "d1"))


def test_lines_are_ascii_escaped(tmp_path: Path) -> None:
    """U+2028, U+2029 and U+0085 are line breaks to some readers: never raw."""
    path = tmp_path / "audit.jsonl"

    async def go() -> None:
        sink = _sink(path)
        event = _event("decision", "d1")
        event.session_id = "a\u2028b\u2029c\u0085d\u00e9"
        await sink.write(event)
        sink.close()

    asyncio.run(go())
    raw = path.read_bytes()
    assert raw.isascii()
    assert b"\\u2028" in raw
    assert b"\\u0085" in raw
    assert _docs(path)[1]["session_id"] == "a\u2028b\u2029c\u0085d\u00e9"
    with pytest.raises(ValueError, match="ASCII"):
        auditlog.seal('{"x": "\u2028"}')


# -- the chain and its checkpoints -------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
def test_sink_appends_sealed_lines_and_a_restart_continues_the_chain(tmp_path: Path, group: bool) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    _write(path, 5, group_commit=group)
    _write(path, 3, group_commit=group)  # a restarted gateway appends and links on
    docs = _docs(path)
    run1 = ["checkpoint", *["decision"] * 5, "checkpoint"]
    run2 = ["checkpoint", *["decision"] * 3, "checkpoint"]
    assert [d["kind"] for d in docs] == run1 + run2
    assert [d["checkpoint"]["reason"] for d in docs if d["kind"] == "checkpoint"] == ["start", "close"] * 2
    assert [int(d["seq"]) for d in docs] == list(range(1, 13))
    assert docs[0]["prev_hash"] == auditlog.GENESIS
    assert all(docs[i]["prev_hash"] == docs[i - 1]["hash"] for i in range(1, 12))
    assert path.stat().st_mode & 0o777 == 0o600
    report = _verify(path)
    assert report.ok, report.problems
    assert (report.lines, report.checkpoints, report.unsigned_tail) == (12, 4, 0)
    assert report.signed_through == 11


def test_a_checkpoint_every_n_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 7, checkpoint_events=3)
    kinds = [d["kind"] for d in _docs(path)]
    # start, one after every 3 lines, close
    run = ["decision"] * 3
    assert kinds == ["checkpoint", *run, "checkpoint", *run, "checkpoint", "decision", "checkpoint"]
    assert [d["checkpoint"]["reason"] for d in _docs(path) if d["kind"] == "checkpoint"] == [
        "start",
        "interval",
        "interval",
        "close",
    ]
    assert all(d["checkpoint"]["max_events"] == "3" for d in _docs(path) if d["kind"] == "checkpoint")
    report = _verify(path)
    assert report.ok, report.problems
    assert report.unsigned_tail == 0


def test_a_checkpoint_after_s_seconds_without_traffic(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    async def go() -> None:
        sink = _sink(path, checkpoint_seconds=0.2)
        await sink.write(_event("decision", "d1"))
        # No more traffic: the event is signed within the interval anyway.
        deadline = time.monotonic() + WAIT
        while _docs(path)[-1]["kind"] != "checkpoint" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert _docs(path)[-1]["checkpoint"]["reason"] == "interval"
        assert _verify(path).unsigned_tail == 0
        sink.close()

    asyncio.run(go())
    assert [d["kind"] for d in _docs(path)] == ["checkpoint", "decision", "checkpoint"]  # nothing new to close


def test_a_crash_leaves_an_unsigned_tail_that_is_a_warning_not_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    crashed = tmp_path / "crashed" / "audit.jsonl"

    async def go() -> None:
        sink = _sink(path)
        for i in range(4):
            await sink.write(_event("decision", f"d{i}"))
        # What a SIGKILL leaves: the file as it is now, with no close checkpoint.
        crashed.parent.mkdir(mode=0o700)
        shutil.copy(path, crashed)
        sink.close()

    asyncio.run(go())
    report = _verify(crashed, head=False)
    assert report.ok, report.problems
    assert report.unsigned_tail == 4
    assert any("4 event(s) after the last signed checkpoint (seq 1, signed " in w for w in report.warnings)
    assert "are NOT verified" in report.warnings[0]


def test_without_the_public_key_links_are_checked_and_signatures_are_not(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    report = _verify(path, key=None)
    assert report.ok
    assert not report.signatures_checked
    assert any("signatures not checked" in n for n in report.notices)


def test_rotation_keeps_one_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 6, max_bytes=2500)
    _write(path, 6, max_bytes=2500)
    files = log_files(path)
    assert len(files) > 2, files
    report = _verify(path)
    assert report.ok, report.problems
    assert report.lines == 16
    # Verifying the rotated files out of order on the command line still
    # works: files are put in chain order by their first seq.
    assert auditlog.verify(auditlog.order_files(sorted(files, reverse=True)), public_key=PUB).ok


@pytest.mark.parametrize(
    ("tamper", "kind", "line"),
    [
        ("edit", "edited", 3),
        ("delete", "deleted", 3),
        ("insert_copy", "inserted", 4),
        ("swap", "reordered", 3),
        ("strip_hash", "unreadable", 2),
        ("edit_last_event", "edited", 7),
    ],
)
def test_verify_reports_a_tampered_event_once(tmp_path: Path, tamper: str, kind: str, line: int) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 6)
    lines = _lines(path)  # checkpoint, 6 decisions, checkpoint
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
    elif tamper == "edit_last_event":
        lines[6] = lines[6].replace("tool_not_granted", "allowed")
    path.write_text("".join(lines))
    report = _verify(path, head=False)
    assert [(p.kind, p.line) for p in report.problems] == [(kind, line)], [str(p) for p in report.problems]


def test_verify_reports_every_problem_not_only_the_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 12)
    lines = _lines(path)  # 1 checkpoint, 12 decisions (lines 2..13), 1 checkpoint
    lines[2] = lines[2].replace('"decision": "deny"', '"decision": "allow"')  # line 3 edited
    lines[5] = '{"garbage"\n'  # line 6 unreadable
    lines[8], lines[9] = lines[9], lines[8]  # lines 9/10 reordered
    del lines[11]  # line 12 (seq 12) deleted
    path.write_text("".join(lines))
    report = _verify(path, head=False)
    found = [(p.kind, p.line, p.seq) for p in report.problems]
    assert found == [
        ("edited", 3, 3),
        ("unreadable", 6, None),
        ("reordered", 9, 10),
        ("deleted", 12, 13),
    ], [str(p) for p in report.problems]
    assert all(p.file == str(path) for p in report.problems)


def test_a_rewritten_chain_fails_at_the_next_signed_checkpoint(tmp_path: Path) -> None:
    """SHA-256 is public, so an attacker can recompute every hash after an
    edit; the signature on the next checkpoint is what they cannot make."""
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    docs = _docs(path)
    docs[2]["decision"] = "allow"
    prev = auditlog.GENESIS
    forged = []
    for d in docs:
        d.pop("hash")
        d["prev_hash"] = prev
        if d["kind"] == "checkpoint":
            d["checkpoint"]["covers_hash"] = prev  # even "fixing" what it covers
        line, prev = auditlog.seal(json.dumps(d))
        forged.append(line)
    path.write_bytes(b"".join(forged))
    assert _verify(path, key=None, head=False).ok  # consistent links ...
    report = _verify(path, head=False)  # ... but not under the gateway's key
    assert [(p.kind, p.line) for p in report.problems] == [("bad signature", 5)], [str(p) for p in report.problems]


def test_a_checkpoint_signed_by_another_key_or_moved_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    report = _verify(path, key=OTHER_KEY.public_key(), head=False)
    assert [p.kind for p in report.problems] == ["bad signature", "bad signature", "unsigned"]
    assert "no checkpoint in the log verifies" in report.problems[2].detail
    assert f"signed by key {auditlog.key_id(PUB)}" in report.problems[0].detail
    # A genuine checkpoint copied to another place in another chain.
    other = tmp_path / "other" / "audit.jsonl"
    _write(other, 1)
    docs = _docs(path)
    moved = json.loads(_lines(other)[-1])  # a close checkpoint that covers other's seq 2
    moved.pop("hash")
    moved["seq"], moved["prev_hash"] = str(int(docs[1]["seq"]) + 1), docs[1]["hash"]
    line, _ = auditlog.seal(json.dumps(moved))
    lines = _lines(path)
    lines[2] = line.decode()
    path.write_text("".join(lines[:3]))
    report = _verify(path, head=False)
    assert ("forged checkpoint", 3) in [(p.kind, p.line) for p in report.problems], [str(p) for p in report.problems]


def test_an_unsigned_run_longer_than_promised_means_a_checkpoint_was_removed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 8, checkpoint_events=3)
    docs = _docs(path)
    # Drop the checkpoints after the first and relink the rest.
    kept = [docs[0]] + [d for d in docs[1:] if d["kind"] != "checkpoint"]
    prev, forged = auditlog.GENESIS, []
    for seq, d in enumerate(kept, start=1):
        d.pop("hash")
        d["seq"], d["prev_hash"] = str(seq), prev
        line, prev = auditlog.seal(json.dumps(d))
        forged.append(line)
    path.write_bytes(b"".join(forged))
    report = _verify(path, head=False)
    assert [(p.kind, p.line) for p in report.problems] == [("deleted", 5)], [str(p) for p in report.problems]
    assert "more than 3 lines without a signed checkpoint" in report.problems[0].detail


def test_a_sink_refuses_to_extend_a_chain_whose_tail_was_edited(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    lines = _lines(path)
    lines[-1] = lines[-1].replace('"close"', '"clos3"')
    path.write_text("".join(lines))
    with pytest.raises(AuditError, match="does not match its hash"):
        _sink(path)


# -- keys ----------------------------------------------------------------------------


def test_generate_signing_key_writes_a_0600_private_and_0644_public_pem(tmp_path: Path) -> None:
    private, public = tmp_path / "audit-signing.pem", tmp_path / "audit-signing.pub"
    old = os.umask(0o077)
    try:
        auditlog.generate_signing_key(private, public)
    finally:
        os.umask(old)
    assert private.stat().st_mode & 0o777 == 0o600
    assert public.stat().st_mode & 0o777 == 0o644
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key, pub = auditlog.load_signing_key(private), auditlog.load_public_key(public)
    assert auditlog.key_id(key.public_key()) == auditlog.key_id(pub)
    with pytest.raises(FileExistsError):
        auditlog.generate_signing_key(private, public)  # never overwrites a key


# -- the writer never dies -----------------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
def test_an_event_that_cannot_be_rendered_fails_only_its_caller(tmp_path: Path, group: bool) -> None:
    path = tmp_path / "audit.jsonl"

    async def go() -> None:
        sink = _sink(path, group_commit=group)
        results = await asyncio.wait_for(
            asyncio.gather(sink.write(_nan_event()), sink.write(_event("decision", "normal")), return_exceptions=True),
            WAIT,
        )
        assert isinstance(results[0], AuditError)
        assert results[0].code == "audit_failed"
        assert results[1] is None
        await asyncio.wait_for(sink.write(_event("decision", "later")), WAIT)  # the writer is alive
        assert sink.healthy
        sink.close()

    asyncio.run(go())
    assert [d["decision_id"] for d in _docs(path) if d["kind"] == "decision"] == ["normal", "later"]
    assert _verify(path).ok


def test_a_rotation_that_raises_fails_its_batch_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    real_rename = Path.rename
    broken = {"on": True}

    def rename(self: Path, target: Any) -> Any:
        if broken["on"]:
            raise OSError(5, "Input/output error (injected)")
        return real_rename(self, target)

    async def go() -> None:
        sink = _sink(path, max_bytes=1)  # every batch rotates first
        monkeypatch.setattr(Path, "rename", rename)
        with pytest.raises(AuditError) as info:
            await asyncio.wait_for(sink.write(_event("decision", "lost")), WAIT)
        assert info.value.code == "audit_failed"
        assert not sink.healthy
        broken["on"] = False
        await asyncio.wait_for(sink.write(_event("decision", "kept")), WAIT)
        assert sink.healthy
        sink.close()

    asyncio.run(go())
    assert len(log_files(path)) >= 2
    report = _verify(path)
    assert report.ok, report.problems
    ids = [d["decision_id"] for f in log_files(path) for d in _docs(f) if d["kind"] == "decision"]
    assert ids == ["kept"]


def test_health_goes_false_on_a_failure_and_back_without_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    monkeypatch.setattr(_audit, "RETRY_SECONDS", 0.1)
    real_write_all = _audit._write_all
    broken = {"on": False}
    attempts = {"n": 0}

    def write_all(fd: int, data: bytes) -> None:
        attempts["n"] += 1
        if broken["on"]:
            # Half the data reaches the file before the error, like a disk
            # filling up mid-batch.
            os.write(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device (injected)")
        real_write_all(fd, data)

    monkeypatch.setattr(_audit, "_write_all", write_all)
    heard: list[tuple[bool, bool]] = []

    async def go() -> None:
        loop_thread = threading.get_ident()

        def on_health(ok: bool) -> None:
            heard.append((ok, threading.get_ident() == loop_thread))

        # A short interval, so signing d1 is overdue while the sink is
        # unhealthy: still only the retries may touch the disk.
        sink = _sink(path, on_health=on_health, checkpoint_seconds=0.2)
        await sink.write(_event("decision", "d1"))
        size = path.stat().st_size
        broken["on"] = True
        with pytest.raises(AuditError, match="No space left"):
            await asyncio.wait_for(sink.write(_event("decision", "d2")), WAIT)
        assert not sink.healthy
        assert path.stat().st_size == size  # the fragment was cut off
        assert path.read_bytes().endswith(b"\n")
        attempts["n"] = 0
        await asyncio.sleep(0.5)  # retries keep failing: still unhealthy
        assert not sink.healthy
        # About one retry per RETRY_SECONDS, not a loop hammering the disk.
        assert 1 <= attempts["n"] <= 10, attempts
        broken["on"] = False
        deadline = time.monotonic() + WAIT
        while not sink.healthy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sink.healthy
        await asyncio.sleep(0.05)
        sink.close()

    asyncio.run(go())
    assert heard == [(False, True), (True, True)]
    docs = _docs(path)
    assert [d["kind"] for d in docs] == ["checkpoint", "decision", "checkpoint"]
    assert docs[-1]["checkpoint"]["reason"] == "retry"
    assert _verify(path).ok


def test_masking_runs_in_the_writer_thread_and_covers_the_whole_event(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    threads: list[int] = []

    class Recording(Masker):
        def mask_event(self, doc: dict[str, Any]) -> list[str]:
            threads.append(threading.get_ident())
            return super().mask_event(doc)

    async def go() -> None:
        sink = _sink(path, masker=Recording())
        event = _event("decision", "d1")
        event.session_id = "sk-live-0123456789abcdefXYZ"
        event.input.update({"call": {"arguments": {"password": "CorrectHorse1"}, "arguments_raw": "x"}})
        event.reasons[0].message = "'CorrectHorse1' is too long"
        await sink.write(event)
        sink.close()

    asyncio.run(go())
    assert threads
    assert threading.get_ident() not in threads
    raw = path.read_text()
    assert "CorrectHorse1" not in raw
    assert "0123456789abcdef" not in raw
    (doc,) = [d for d in _docs(path) if d["kind"] == "decision"]
    assert doc["masked"] == ["/input/call/arguments/password", "/reasons/0/message", "/session_id"]


# -- cuts and replaced files ---------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "renamed", "replaced"])
def test_a_live_file_deleted_renamed_or_replaced_is_refused(tmp_path: Path, how: str) -> None:
    path = tmp_path / "audit.jsonl"

    async def go() -> None:
        sink = _sink(path)
        await sink.write(_event("decision", "d1"))
        if how == "deleted":
            path.unlink()
        elif how == "renamed":
            path.rename(tmp_path / "elsewhere.jsonl")
        else:
            tmp = tmp_path / "new.jsonl"
            tmp.write_text("")
            tmp.replace(path)
        with pytest.raises(AuditError, match=r"deleted or renamed away|replaced by another file") as info:
            await asyncio.wait_for(sink.write(_event("decision", "d2")), WAIT)
        assert info.value.code == "audit_failed"
        assert not sink.healthy
        sink.close()

    asyncio.run(go())
    if how == "replaced":
        assert path.read_text() == ""  # nothing was written into the newcomer


def test_a_restart_after_the_log_was_deleted_is_refused_naming_both_seqs(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5)  # seq 1..7 (start, 5 events, close)
    path.unlink()
    with pytest.raises(AuditError) as info:
        _sink(path)
    message = str(info.value)
    assert "ends at seq 0" in message
    assert "says seq 7 was written" in message
    assert "audit.jsonl.head" in message


def test_a_restart_after_the_log_was_cut_back_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5)
    path.write_text("".join(_lines(path)[:4]))  # seq 1..4 left
    with pytest.raises(AuditError, match=r"ends at seq 4 but the head record .* says seq 7"):
        _sink(path)
    report = _verify(path)
    assert [(p.kind, p.seq) for p in report.problems] == [("deleted", 7)]
    assert "seq 5..7 were cut off" in report.problems[0].detail


def test_a_log_replaced_by_another_chain_of_the_same_length_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    other = tmp_path / "o" / "audit.jsonl"
    _write(other, 3)
    shutil.copy(other, path)
    with pytest.raises(AuditError, match="the log was replaced"):
        _sink(path)


def test_a_restart_is_refused_when_the_line_the_head_record_names_is_gone(tmp_path: Path) -> None:
    """The head's line rotated away, then its file deleted: the live file
    alone must not be continued."""
    path = tmp_path / "live" / "audit.jsonl"
    crashed = tmp_path / "crashed"

    async def go() -> None:
        sink = _sink(path, max_bytes=2500)
        for i in range(12):
            await asyncio.wait_for(sink.write(_event("decision", f"d{i}")), WAIT)
        shutil.copytree(path.parent, crashed)  # a crash: no close checkpoint, the head still says seq 1
        sink.close()

    asyncio.run(go())
    head = auditlog.read_head(crashed / "audit.jsonl.head")
    assert head is not None
    assert head.seq == 1
    first = auditlog.order_files(log_files(crashed / "audit.jsonl"))[0]  # holds seq 1
    assert first.name != "audit.jsonl"
    first.unlink()
    with pytest.raises(AuditError, match=r"has no readable seq 1, which the head record .* names"):
        _sink(crashed / "audit.jsonl", max_bytes=2500)


def test_starting_over_on_purpose_moves_the_log_and_its_head_aside(tmp_path: Path) -> None:
    """The documented way: move the log, its rotated files and the head out."""
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    archive = tmp_path / "old-chain"
    archive.mkdir()
    for f in [*log_files(path), auditlog.head_path(path)]:
        f.rename(archive / f.name)
    _write(path, 1)
    assert int(_docs(path)[0]["seq"]) == 1
    assert _verify(path).ok


def test_a_torn_last_line_from_a_crash_is_cut_off_at_start(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    with path.open("ab") as f:
        f.write(b'{"schema_version": 1, "kind": "deci')  # a crash mid-write
    _write(path, 1)
    report = _verify(path)
    assert report.ok, report.problems


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(mode=0o700)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


def _fill(filler: Path) -> None:
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    _mount_tmpfs(where, "256k")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_filesystem_cuts_the_fragment_off_and_the_sink_restarts_on_the_file(small_fs: Path) -> None:
    path = small_fs / "audit" / "audit.jsonl"
    filler = small_fs / "filler"
    big = "x" * 3000

    async def go() -> int:
        sink = _sink(path)
        # Fill the disk, then leave 12 KiB: a few events fit, then one runs
        # out of space mid-write.
        _fill(filler)
        os.truncate(filler, filler.stat().st_size - 12 * 1024)
        failures = ok = 0
        messages: list[str] = []
        for i in range(200):
            event = _event("decision", f"d{i}")
            event.reasons[0].message = big
            try:
                await asyncio.wait_for(sink.write(event), WAIT)
                ok += 1
            except AuditError as exc:
                messages.append(str(exc))
                failures += 1
                # Never a fragment: the file ends on a whole line that verifies.
                assert path.read_bytes().endswith(b"\n")
                if failures >= 3:
                    break
        assert failures >= 3
        assert all("No space left" in m for m in messages), messages
        assert not sink.healthy
        filler.unlink()  # space again: the sink recovers
        await asyncio.wait_for(sink.write(_event("decision", "after")), WAIT)
        assert sink.healthy
        sink.close()
        return ok

    ok = asyncio.run(go())
    assert ok >= 1
    assert _verify(path).ok
    _write(path, 1)  # a restarted gateway takes the file as it is
    ids = [d["decision_id"] for d in _docs(path) if d["kind"] == "decision"]
    assert ids == [*(f"d{i}" for i in range(ok)), "after", "d0"]
    report = _verify(path)
    assert report.ok, report.problems


def test_a_full_filesystem_at_start_refuses_to_start(small_fs: Path) -> None:
    path = small_fs / "audit" / "audit.jsonl"
    path.parent.mkdir(mode=0o700)
    _fill(small_fs / "filler")
    with pytest.raises(AuditError, match="No space left"):
        _sink(path)
    assert path.read_bytes() == b""


# -- files -------------------------------------------------------------------------


def test_a_symlink_at_the_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target.jsonl"
    target.write_text("")
    (tmp_path / "audit.jsonl").symlink_to(target)
    with pytest.raises(AuditError, match="is a symlink"):
        _sink(tmp_path / "audit.jsonl")


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o1777])
def test_a_group_or_world_writable_folder_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(AuditError, match="group- or world-writable"):
        _sink(folder / "audit.jsonl")


def test_a_folder_owned_by_another_uid_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    folder = tmp_path / "logs"
    folder.mkdir(mode=0o755)
    os.chown(folder, 65534, 65534)
    with pytest.raises(AuditError, match="owned by uid 65534"):
        _sink(folder / "audit.jsonl")


# -- retention ---------------------------------------------------------------------


def test_pruning_is_recorded_first_and_verify_accepts_the_rest_without_partial(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 12, max_bytes=2500, retention=RetentionConfig(keep_files=1))
    rotated = [f for f in log_files(path) if f != path]
    assert len(rotated) == 1
    pruned = [d for f in auditlog.order_files(log_files(path)) for d in _docs(f) if d["kind"] == "pruned"]
    assert pruned
    cp = pruned[-1]["checkpoint"]
    assert cp["reason"] == "prune"
    assert cp["pruned_files"]
    # The remaining files start mid-chain, where the signed record says.
    report = _verify(path)
    assert report.ok, [str(p) for p in report.problems]
    assert report.first_seq == int(cp["pruned_through_seq"]) + 1
    assert any("were pruned, as recorded" in n for n in report.notices)
    # An unrecorded cut of the same kind is still a problem.
    (min(rotated, key=lambda p: p.name)).unlink()
    cut = _verify(path)
    assert not cut.ok


def test_archive_dir_moves_pruned_files_and_the_whole_chain_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    archive = tmp_path / "archive"
    _write(path, 12, max_bytes=2500, retention=RetentionConfig(keep_files=0, archive_dir=str(archive)))
    assert [f for f in log_files(path) if f != path] == []
    archived = sorted(archive.iterdir())
    assert archived
    everything = auditlog.order_files([*archived, *log_files(path)])
    report = auditlog.verify(everything, public_key=PUB)
    assert report.ok, [str(p) for p in report.problems]
    assert report.first_seq == 1


def test_max_age_prunes_old_rotated_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 12, max_bytes=2500)
    rotated = [f for f in log_files(path) if f != path]
    old = time.time() - 3 * 86400
    for f in rotated:
        os.utime(f, (old, old))
    _write(path, 1, max_bytes=1 << 30, retention=RetentionConfig(max_age_days=1))
    assert [f for f in log_files(path) if f != path] == []
    assert _verify(path).ok


def test_retention_config_defaults_keep_everything_and_bad_values_are_refused() -> None:
    cfg = parse_config({"path": "/x/audit.jsonl"}, AuditConfig, source="gateway.yaml", key="audit")
    assert cfg.retention == RetentionConfig(None, None, None)
    assert not cfg.retention.prunes
    assert (cfg.checkpoint_events, cfg.checkpoint_seconds) == (1000, 10.0)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"retention": {"keep_files": -1}}, "keep_files must be >= 0"),
        ({"retention": {"archive_dir": "/a"}}, "archive_dir needs keep_files or max_age_days"),
        ({"checkpoint_events": 0}, "checkpoint_events must be >= 1"),
        ({"key_file": "/k"}, "unknown key"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_config({"path": "/x", **bad}, AuditConfig, source="gateway.yaml", key="audit")


# -- the command -----------------------------------------------------------------------


def test_airlock_audit_verify_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    public = tmp_path / "audit.pub"
    public.write_bytes(PUB.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert airlock_main(["audit", "verify", str(path), "--public-key", str(public)]) == 0
    out = capsys.readouterr().out
    chain = _docs(path)[0]["checkpoint"]["chain_id"]
    assert out.splitlines()[-1].startswith(
        f"ok: 5 line(s) in 1 file(s), seq 1..5, chain intact; chain {chain}, 2 checkpoint(s), signatures checked"
    )
    assert "; signed through seq 5 (checkpoint of " in out.splitlines()[-1]
    assert "NOT verified" not in out
    assert "head file" in out
    assert airlock_main(["audit", "verify", str(path)]) == 0
    assert "signatures NOT checked" in capsys.readouterr().out
    lines = _lines(path)
    lines[1] = lines[1].replace('"rpc": "', '"rpc": "X', 1)
    lines[2] = lines[2].replace('"rpc": "', '"rpc": "X', 1)
    path.write_text("".join(lines))
    assert airlock_main(["audit", "verify", str(path), "--public-key", str(public)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {path}:2 (seq 2): edited" in out
    assert f"FAIL {path}:3 (seq 3): edited" in out
    assert "FAIL: 2 problem(s)" in out
    with pytest.raises(SystemExit):
        airlock_main(["audit", "verify", str(path), "--key-file", str(public)])


def test_verify_command_takes_the_live_files_head_and_needs_no_head_for_an_archive_without_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Retention moves rotated files to an archive folder (``.dup<n>`` when
    the name is taken there): with the live folder they are one log whose
    head record is the live file's; alone they are files without a head
    record, which is a failure unless --no-head says so."""
    path = tmp_path / "live" / "audit.jsonl"
    archive = tmp_path / "archive"
    _write(path, 30, max_bytes=2500, retention=RetentionConfig(keep_files=0, archive_dir=str(archive)))
    archived = sorted(archive.iterdir())
    assert any(p.name.startswith("audit.jsonl.1.dup") for p in archived), archived
    public = tmp_path / "audit.pub"
    public.write_bytes(PUB.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    key = ["--public-key", str(public)]

    def verify(*args: str | Path) -> tuple[int, str]:
        code = airlock_main(["audit", "verify", *key, *map(str, args)])
        return code, capsys.readouterr().out

    code, out = verify("--strict", *archived, *sorted(path.parent.glob("audit.jsonl*")))
    assert code == 0, out
    assert f"notice: head file {path}.head agrees" in out
    assert out.splitlines()[-1].startswith("ok: ")
    code, out = verify(*archived)
    assert code == 1, out
    ordered = auditlog.order_files(archived)
    assert [x for x in out.splitlines() if x.startswith("FAIL ")] == [
        (
            f"FAIL {ordered[-1]}: not one log: only rotated files given ({', '.join(map(str, ordered[:5]))}), no "
            "live file: its head record is what shows whether the newest lines were cut off; pass the live file too "
            "(or --no-head, for files archived without their head record)"
        )
    ]
    code, out = verify("--no-head", *archived)
    assert code == 0, out
    assert "WARNING: --no-head: no head record was checked, so lines cut off the end of the chain CANNOT be" in out
    assert out.splitlines()[-1].endswith("; NO head record checked (--no-head): a cut tail cannot be detected")


def test_audit_paths_in_gateway_yaml_resolve_against_its_folder(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    cfg_file = conf / "gateway.yaml"
    cfg_file.write_text(
        json.dumps(
            {
                "version": 1,
                "registry": "tool_registry.yaml",
                "executor": {"socket": "run/executor.sock", "token_file": "executor.token"},
                "audit": {
                    "path": "audit/audit.jsonl",
                    "signing_key_file": "keys/audit.pem",
                    "retention": {"keep_files": 3, "archive_dir": "../archive"},
                },
                "agents": [{"id": "alice", "token_file": "alice.token"}],
            }
        )
    )
    audit = load_gateway_config(cfg_file).audit
    base = conf.resolve()
    assert audit.signing_key_file == str(base / "keys" / "audit.pem")
    assert audit.retention.archive_dir == str(tmp_path.resolve() / "archive")
    assert audit.retention.keep_files == 3
