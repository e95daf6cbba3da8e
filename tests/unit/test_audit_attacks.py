"""Regressions for an attack run against the audit chain on a running stack.
Each finding has a test here that failed on the code it was found in:

1. a log with every checkpoint dropped (and the chain recomputed) verified
   as ok with the public key;
2. every chain's start checkpoint signed the same text, so a real one could
   head an invented log;
3. deleting the live file together with its head record made the gateway
   continue the chain from the rotated files over a silent cut;
4. ``audit verify audit.jsonl*`` read the head's temporary file as a log;
5. ``audit verify --strict --public-key`` passed a log cut back after a
   checkpoint when its head record was deleted, or when a decoy head record
   sat next to a rotated file (two head records: neither was used).

The masking gaps of the same run are rows of the table in test_mask.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from airlock.cli._main import main as airlock_main
from airlock.common import auditlog
from airlock.gateway._audit import SCHEMA_VERSION, JsonlAuditSink, log_files, render
from airlock.gateway._config import RetentionConfig
from airlock.gateway._errors import AuditError
from airlock.gateway._mask import Masker
from airlock.gateway._metrics import GatewayMetrics
from airlock.v1 import audit_pb2

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key()
WAIT = 10.0


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


def _event(decision_id: str) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        schema_version=SCHEMA_VERSION, kind="decision", decision_id=decision_id, decision="deny"
    )


def _write(path: Path, n: int, **kw: Any) -> None:
    async def go() -> None:
        sink = _sink(path, **kw)
        try:
            for i in range(n):
                await asyncio.wait_for(sink.write(_event(f"d{i}")), WAIT)
        finally:
            sink.close()

    asyncio.run(go())


def _docs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reseal(docs: list[dict[str, Any]]) -> bytes:
    """What an attacker with write access can do: renumber and relink."""
    prev, out = auditlog.GENESIS, []
    for seq, doc in enumerate(docs, start=1):
        d = dict(doc)
        d.pop("hash", None)
        d["seq"], d["prev_hash"] = str(seq), prev
        line, prev = auditlog.seal(json.dumps(d))
        out.append(line)
    return b"".join(out)


@pytest.fixture
def pub_file(tmp_path: Path) -> Path:
    public = tmp_path / "audit.pub"
    public.write_bytes(PUB.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return public


def _cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    code = airlock_main(["audit", "verify", *map(str, args)])
    return code, capsys.readouterr().out


# -- 1: a log without checkpoints ---------------------------------------------------


def test_verify_with_a_key_fails_a_log_whose_checkpoints_were_all_dropped(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real" / "audit.jsonl"
    _write(real, 5)
    forged = tmp_path / "forged" / "audit.jsonl"
    forged.parent.mkdir()
    forged.write_bytes(_reseal([d for d in _docs(real) if d["kind"] == "decision"]))
    code, out = _cli(capsys, "--public-key", pub_file, forged)
    assert code == 1, out
    assert f"FAIL {forged}:1 (seq 1): unsigned: a complete chain opens with its signed start checkpoint" in out
    assert "unsigned: no checkpoint in the log verifies with key" in out
    # --partial takes away the opening, not the need for a signature.
    code, out = _cli(capsys, "--public-key", pub_file, "--partial", forged)
    assert code == 1, out
    assert "no checkpoint in the log verifies" in out


@pytest.mark.parametrize(("invented", "ok"), [(3, True), (4, False)])
def test_signed_checkpoints_must_reach_within_their_promise_of_the_end(tmp_path: Path, invented: int, ok: bool) -> None:
    """The unsigned tail may be at most max_events lines (held before the fix
    too; kept here beside the rule it completes)."""
    real = tmp_path / "real" / "audit.jsonl"
    _write(real, 1, checkpoint_events=3)
    docs = _docs(real)
    forged = tmp_path / "forged" / "audit.jsonl"
    forged.parent.mkdir()
    forged.write_bytes(_reseal([docs[0], *[dict(docs[1], decision_id=f"fake{i}") for i in range(invented)]]))
    report = auditlog.verify([forged], public_key=PUB)
    assert report.ok is ok, [str(p) for p in report.problems]
    assert report.unsigned_tail == invented
    if not ok:
        assert [(p.kind, p.line) for p in report.problems] == [("deleted", 5)]
        assert "more than 3 lines without a signed checkpoint" in report.problems[0].detail


# -- 2: a replayed start checkpoint --------------------------------------------------


def test_start_checkpoints_of_two_chains_sign_different_texts(tmp_path: Path) -> None:
    """Ed25519 is deterministic: the same text signed twice gives the same
    signature, so identical signatures mean a replayable start checkpoint."""
    a, b = tmp_path / "a" / "audit.jsonl", tmp_path / "b" / "audit.jsonl"
    _write(a, 1)
    _write(b, 1)
    start_a, start_b = _docs(a)[0]["checkpoint"], _docs(b)[0]["checkpoint"]
    assert start_a["reason"] == start_b["reason"] == "start"
    assert (start_a["covers_seq"], start_a["covers_hash"]) == (start_b["covers_seq"], start_b["covers_hash"])
    assert start_a["signature"] != start_b["signature"]


def test_a_replayed_start_checkpoint_heading_invented_lines_is_never_called_verified(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real" / "audit.jsonl"
    _write(real, 3)
    docs = _docs(real)
    forged = tmp_path / "forged" / "audit.jsonl"
    forged.parent.mkdir()
    invented = [dict(docs[1], decision_id=f"fake{i}", decision="allow") for i in range(999)]
    forged.write_bytes(_reseal([docs[0], *invented]))
    # The log alone cannot tell this from a crash's tail, so it is not a
    # failure by default -- but it is never "verified". (It has no head
    # record: --no-head, to see what the chain alone says.)
    code, out = _cli(capsys, "--public-key", pub_file, "--no-head", forged)
    assert code == 0, out
    assert (
        f"WARNING: 999 event(s) after the last signed checkpoint (seq 1, signed {docs[0]['timestamp']}) "
        "are NOT verified" in out
    )
    summary = out.splitlines()[-1]
    assert summary.startswith("ok: 1000 line(s)")
    assert f"chain {docs[0]['checkpoint']['chain_id']}" in summary
    assert "; 999 event(s) after the last signed checkpoint are NOT verified; " in summary
    # --strict (archived logs, or after a clean shutdown) fails on it ...
    code, out = _cli(capsys, "--public-key", pub_file, "--strict", "--no-head", forged)
    assert code == 1, out
    assert f"FAIL {forged}:2: unsigned: 999 event(s) after the last signed checkpoint" in out
    # ... and passes the real log, which its close checkpoint signs to the end.
    code, out = _cli(capsys, "--public-key", pub_file, "--strict", real)
    assert code == 0, out
    assert "NOT verified" not in out
    assert _cli(capsys, "--strict", real)[0] == 2  # --strict without a key cannot hold


def test_every_checkpoint_and_the_head_carry_one_chain_id_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 4, checkpoint_events=2)
    _write(path, 1)  # a restart continues the chain, and its id
    ids = {d["checkpoint"]["chain_id"] for d in _docs(path) if d["kind"] in auditlog.CHECKPOINT_KINDS}
    (chain_id,) = ids
    assert re.fullmatch(r"[0-9a-f]{32}", chain_id)
    assert json.loads(auditlog.head_path(path).read_text())["chain_id"] == chain_id
    report = auditlog.verify([path], public_key=PUB, head=auditlog.read_head(auditlog.head_path(path)))
    assert report.ok, report.problems
    assert report.chain_id == chain_id


def _signed_checkpoint(after: dict[str, Any], chain_id: str) -> bytes:
    """A checkpoint the gateway's key signed, for another chain (one key
    signs every chain a gateway ever writes)."""
    state = auditlog.ChainState(int(after["seq"]), after["hash"])
    timestamp = "2026-01-01T00:00:00.000000Z"
    message = auditlog.checkpoint_message(state, chain_id=chain_id, reason="interval", time=timestamp, max_events=1000)
    event = audit_pb2.AuditEvent(
        schema_version=SCHEMA_VERSION,
        kind="checkpoint",
        timestamp=timestamp,
        seq=state.seq + 1,
        prev_hash=state.hash,
        checkpoint=audit_pb2.AuditCheckpoint(
            reason="interval",
            covers_seq=state.seq,
            covers_hash=state.hash,
            key_id=auditlog.key_id(PUB),
            signature=auditlog.sign(KEY, message),
            max_events=1000,
            chain_id=chain_id,
        ),
    )
    return auditlog.seal(render(event))[0]


def test_verify_reports_a_checkpoint_or_a_head_record_of_another_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 2)
    other = auditlog.new_chain_id()
    with path.open("ab") as f:
        f.write(_signed_checkpoint(_docs(path)[-1], other))
    report = auditlog.verify([path], public_key=PUB)
    assert [(p.kind, p.line) for p in report.problems] == [("wrong chain", 5)], [str(p) for p in report.problems]
    assert f"a checkpoint of chain {other} in chain {_docs(path)[0]['checkpoint']['chain_id']}" in str(
        report.problems[0]
    )
    # A head record of another chain next to the log.
    last = _docs(path)[-1]
    head = auditlog.make_head(KEY, auditlog.ChainState(int(last["seq"]), last["hash"]), auditlog.new_chain_id())
    report = auditlog.verify([path], public_key=PUB, head=head, head_file="audit.jsonl.head")
    assert ("wrong chain", "audit.jsonl.head") in [(p.kind, p.file) for p in report.problems]


# -- 3: the head record deleted ------------------------------------------------------


@pytest.mark.parametrize("lost", ["live file and head", "head only", "head, live file emptied"])
def test_a_restart_on_audit_files_without_their_head_record_is_refused(tmp_path: Path, lost: str) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 40, max_bytes=3000)
    rotated = sorted(p for p in log_files(path) if p != path)
    assert rotated
    auditlog.head_path(path).unlink()
    if lost == "live file and head":
        path.unlink()
    elif lost == "head, live file emptied":
        path.write_bytes(b"")
    kept = {p.name: p.read_bytes() for p in rotated}
    live = path.read_bytes() if path.exists() else b""
    with pytest.raises(AuditError) as info:
        _sink(path, max_bytes=3000)
    message = str(info.value)
    assert info.value.code == "audit_failed"
    assert "have no head record audit.jsonl.head" in message
    assert f"move audit.jsonl, its rotated files and audit.jsonl.head out of {tmp_path}" in message
    # Nothing was continued: no seq was reused.
    assert {p.name: p.read_bytes() for p in rotated} == kept
    assert (path.read_bytes() if path.exists() else b"") == live
    assert not auditlog.head_path(path).exists()
    # The operator's way out: move every file aside; a new chain starts at seq 1.
    archive = tmp_path / "archive"
    archive.mkdir()
    for p in log_files(path):
        p.rename(archive / p.name)
    _write(path, 1)
    assert [int(d["seq"]) for d in _docs(path)] == [1, 2, 3]


@pytest.mark.parametrize("how", ["signed by another key", "naming another key"])
def test_a_head_record_the_gateway_did_not_sign_is_refused(tmp_path: Path, how: str) -> None:
    """Otherwise a made-up head record would take the place of a deleted one."""
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    hp = auditlog.head_path(path)
    head = auditlog.read_head(hp)
    assert head is not None
    if how == "signed by another key":
        other = Ed25519PrivateKey.generate()
        forged = auditlog.make_head(other, auditlog.ChainState(1, _docs(path)[0]["hash"]), head.chain_id)
    else:
        forged = dataclasses.replace(head, seq=1, hash=_docs(path)[0]["hash"], key_id="0" * 16)
    auditlog.write_head(hp, forged)
    with pytest.raises(AuditError, match=r"head record .* is not signed by the audit key"):
        _sink(path)


def test_a_crash_before_a_new_chains_first_checkpoint_reached_its_head_is_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal must not catch an honest crash: a new chain writes its
    head record (seq 0) before its first line."""
    path = tmp_path / "live" / "audit.jsonl"
    crashed = tmp_path / "crashed"
    real_write_head = auditlog.write_head

    def write_head(target: Path, head: auditlog.Head) -> None:
        # The moment the start checkpoint is on disk and its head record is
        # not: what a SIGKILL here leaves behind.
        if not crashed.exists() and path.exists() and path.stat().st_size > 0:
            shutil.copytree(path.parent, crashed)
        real_write_head(target, head)

    monkeypatch.setattr(auditlog, "write_head", write_head)
    _write(path, 1)
    monkeypatch.undo()
    assert [d["checkpoint"]["reason"] for d in _docs(crashed / "audit.jsonl")] == ["start"]
    _write(crashed / "audit.jsonl", 1)
    report = auditlog.verify(
        [crashed / "audit.jsonl"], public_key=PUB, head=auditlog.read_head(crashed / "audit.jsonl.head")
    )
    assert report.ok, report.problems
    assert report.lines == 4


def test_the_last_signed_seq_is_a_gauge_for_a_witness_outside_the_gateway(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, ["python"])

    def gauge() -> float | None:
        return registry.get_sample_value("airlock_gateway_audit_last_signed_seq")

    async def go() -> None:
        sink = _sink(path, checkpoint_events=3)
        metrics.audit_last_signed_seq.set_function(lambda: sink.last_signed_seq)
        assert gauge() == 1  # the start checkpoint
        for i in range(4):
            await asyncio.wait_for(sink.write(_event(f"d{i}")), WAIT)
        # seq 2..4 events, 5 a checkpoint, 6 an event not yet signed
        assert (sink.last_seq, gauge()) == (6, 5)
        assert auditlog.read_head(auditlog.head_path(path)) is not None
        sink.close()
        assert gauge() == 7
        head = auditlog.read_head(auditlog.head_path(path))
        assert head is not None
        assert head.seq == 7

    asyncio.run(go())


# -- 4: what a shell glob brings -------------------------------------------------------


def test_verify_skips_the_head_record_and_temporary_files_a_glob_brings(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    _write(path, 2)
    # A head rewrite cut short leaves its temporary file.
    (path.parent / "audit.jsonl.head.tmp").write_text('{"seq": 4, "ha')
    glob = sorted(path.parent.glob("audit.jsonl*"))
    assert [p.name for p in glob] == ["audit.jsonl", "audit.jsonl.head", "audit.jsonl.head.tmp"]
    code, out = _cli(capsys, "--public-key", pub_file, *glob)
    assert code == 0, out
    assert f"notice: skipped {path}.head" in out
    assert f"notice: skipped {path}.head.tmp" in out
    assert f"head file {path}.head agrees (seq 4)" in out
    assert out.splitlines()[-1].startswith("ok: 4 line(s) in 1 file(s)")


# -- 5: which head record counts ----------------------------------------------------------
#
# The log: seq 1 start, 2-4 events, 5 checkpoint, 6-8 events, 9 checkpoint,
# 10-11 events, 12 the close checkpoint (the head record's seq). The cut
# keeps seq 1..9: signed to its end, so even --strict has nothing to say
# about it; only the head record shows seq 10..12 are gone.

OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
CUT_AT = 9


def _log(folder: Path, *, cut: bool, split: bool = False) -> Path:
    """The live file (and its real head record), optionally cut back to seq
    1..9 and split into a rotated file (seq 1..5) and the live file."""
    path = folder / "audit.jsonl"
    _write(path, 8, checkpoint_events=3)
    lines = path.read_bytes().splitlines(keepends=True)
    assert [int(json.loads(x)["seq"]) for x in lines] == list(range(1, 13))
    assert json.loads(lines[CUT_AT - 1])["kind"] == "checkpoint"
    if cut:
        lines = lines[:CUT_AT]
    if split:
        (folder / "audit.jsonl.1").write_bytes(b"".join(lines[:5]))
        lines = lines[5:]
    path.write_bytes(b"".join(lines))
    return path


def _verify_glob(capsys: pytest.CaptureFixture[str], pub_file: Path, path: Path, *extra: str | Path) -> tuple[int, str]:
    """What an operator runs: the shell glob of the audit folder."""
    return _cli(capsys, "--strict", "--public-key", pub_file, *extra, *sorted(path.parent.glob("audit.jsonl*")))


def _fails(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL ")]


def test_a_cut_log_without_its_head_record_fails_unless_no_head_is_given(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Case A: cut after the seq 9 checkpoint and delete the head record."""
    path = _log(tmp_path, cut=True)
    auditlog.head_path(path).unlink()
    code, out = _verify_glob(capsys, pub_file, path)
    assert code == 1, out
    assert _fails(out) == [
        (
            f"FAIL {path}.head: no head record: the live file {path} has no head record next to it, so lines cut off "
            "the end of the chain cannot be detected: the gateway writes one before a chain's first line and keeps "
            "it, so it was deleted or not copied; pass --no-head only for files archived without their head record"
        )
    ]
    # An archive without its head record: the operator says so, and is told
    # loudly what that costs.
    code, out = _verify_glob(capsys, pub_file, path, "--no-head")
    assert code == 0, out
    assert (
        "WARNING: --no-head: no head record was checked, so lines cut off the end of the chain CANNOT be detected: "
        f"nothing here shows that seq {CUT_AT} was the last line the gateway wrote" in out
    )
    assert out.splitlines()[-1].endswith("; NO head record checked (--no-head): a cut tail cannot be detected")


def test_no_head_is_a_failure_when_a_head_record_is_there(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-head must not become a habit that throws away the cut check."""
    path = _log(tmp_path, cut=True)
    code, out = _verify_glob(capsys, pub_file, path, "--no-head")
    assert code == 1, out
    assert _fails(out) == [
        (
            f"FAIL {path}.head: unexpected head record: --no-head says these files have no head record, but this one "
            "is there: verify without --no-head so that it is checked"
        )
    ]


@pytest.mark.parametrize("decoy", [b"x", None], ids=["garbage", "copy of the real head"])
def test_a_decoy_head_record_next_to_a_rotated_file_does_not_hide_a_cut(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str], decoy: bytes | None
) -> None:
    """Case B: the real head record kept, the cut log split in two, and a
    second head record (any content) next to the rotated file."""
    path = _log(tmp_path, cut=True, split=True)
    real = auditlog.head_path(path)
    (tmp_path / "audit.jsonl.1.head").write_bytes(real.read_bytes() if decoy is None else decoy)
    code, out = _verify_glob(capsys, pub_file, path)
    assert code == 1, out
    assert _fails(out) == [
        (
            f"FAIL {path}.1.head: unexpected head record: the gateway writes a head record only next to the live file "
            f"({real}), never next to a rotated file or anywhere else: this one was put there, and only the live "
            "file's counts"
        ),
        (
            f"FAIL {real}:1 (seq 12): deleted: the log ends at seq 9 but the head file records seq 12: seq 10..12 "
            "were cut off"
        ),
    ]


def test_the_same_cut_with_only_the_real_head_record_fails(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: what case B was built to avoid (held before the fix)."""
    path = _log(tmp_path, cut=True, split=True)
    code, out = _verify_glob(capsys, pub_file, path)
    assert code == 1, out
    assert _fails(out) == [
        (
            f"FAIL {path}.head:1 (seq 12): deleted: the log ends at seq 9 but the head file records seq 12: seq 10..12 "
            "were cut off"
        )
    ]
    assert _verify_glob(capsys, pub_file, _log(tmp_path / "whole", cut=False, split=True))[0] == 0


def _confused_head(path: Path, confusion: str) -> auditlog.Head:
    head = auditlog.read_head(auditlog.head_path(path))
    assert head is not None
    if confusion == "another chain":
        return auditlog.make_head(KEY, head.state, auditlog.new_chain_id())
    if confusion == "beyond the files":
        return auditlog.make_head(KEY, auditlog.ChainState(head.seq + 5, "a" * 64), head.chain_id)
    assert confusion == "another key"
    return auditlog.make_head(OTHER, head.state, head.chain_id)


@pytest.mark.parametrize("decoy", [False, True], ids=["alone", "with a decoy"])
@pytest.mark.parametrize(
    ("confusion", "kind", "detail"),
    [
        ("another chain", "wrong chain", "the head file belongs to chain {head}, the log to chain {log}"),
        ("beyond the files", "deleted", "the log ends at seq 12 but the head file records seq 17: seq 13..17 were"),
        (
            "another key",
            "bad signature",
            (
                "the head record's signature does not verify with key {key} (it names key {other}): the gateway did "
                "not write it"
            ),
        ),
    ],
    ids=["another chain", "beyond the files", "another key"],
)
def test_a_head_record_that_does_not_belong_to_the_files_is_reported(
    tmp_path: Path,
    pub_file: Path,
    capsys: pytest.CaptureFixture[str],
    confusion: str,
    kind: str,
    detail: str,
    decoy: bool,
) -> None:
    """The live file's head record replaced by one of another chain, one
    past the files' end, or one signed by another key; "with a decoy", the
    real one sits next to the rotated file as well (which once made verify
    use neither)."""
    path = _log(tmp_path, cut=False, split=True)
    real = auditlog.head_path(path)
    if decoy:
        shutil.copyfile(real, tmp_path / "audit.jsonl.1.head")
    head = _confused_head(path, confusion)
    auditlog.write_head(real, head)
    code, out = _verify_glob(capsys, pub_file, path)
    assert code == 1, out
    fails = _fails(out)
    expected = detail.format(
        head=head.chain_id,
        log=_docs(path.with_name("audit.jsonl.1"))[0]["checkpoint"]["chain_id"],
        key=auditlog.key_id(PUB),
        other=auditlog.key_id(OTHER.public_key()),
    )
    assert any(f.startswith(f"FAIL {real}:1 (seq {head.seq}): {kind}: {expected}") for f in fails), out
    assert any(f.startswith(f"FAIL {path}.1.head: unexpected head record: ") for f in fails) is decoy, out


@pytest.mark.parametrize(
    "setup",
    [
        "head next to the rotated file only",
        "two live files",
        "head given as an argument",
        "head a symlink",
        "head a fifo",
    ],
)
def test_a_head_record_anywhere_but_next_to_the_one_live_file_is_reported(
    tmp_path: Path, pub_file: Path, capsys: pytest.CaptureFixture[str], setup: str
) -> None:
    """Whole, intact logs: the head record's place alone is the problem."""
    path = _log(tmp_path, cut=False, split=True)
    real = auditlog.head_path(path)
    extra: list[Path] = []
    if setup == "head next to the rotated file only":
        real.rename(tmp_path / "audit.jsonl.1.head")
        expected = [
            (
                f"FAIL {path}.1.head: unexpected head record: the gateway writes a head record only next to the live "
                f"file ({real}), "
            ),
            f"FAIL {real}: no head record: the live file {path} has no head record next to it",
        ]
    elif setup == "two live files":
        # The newer half renamed to a name the glob brings, with a head record
        # (here: the real one) next to it.
        path.rename(tmp_path / "audit.jsonl.new")
        real.rename(tmp_path / "audit.jsonl.new.head")
        (tmp_path / "audit.jsonl.1").rename(path)
        shutil.copyfile(tmp_path / "audit.jsonl.new.head", real)
        expected = [
            f"FAIL {real}: unexpected head record: no head record counts for files that are not one log",
            f"FAIL {path}.new.head: unexpected head record: no head record counts for files that are not one log",
            f"FAIL {path}.new: not one log: 2 live files given ({path}, {path}.new): one log at a time",
        ]
    elif setup == "head given as an argument":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        extra.append(elsewhere / "audit.jsonl.head")
        shutil.copyfile(real, extra[0])
        expected = [f"FAIL {extra[0]}: unexpected head record: the gateway writes a head record only next to the live "]
    else:
        real.rename(tmp_path / "real.head")
        if setup == "head a symlink":
            real.symlink_to(tmp_path / "real.head")
        else:
            os.mkfifo(real)  # opening it to read would wait for a writer forever
        expected = [f"FAIL {real}: unreadable: not a regular file, which is what the gateway writes (a symbolic link?)"]
    code, out = _verify_glob(capsys, pub_file, path, *extra)
    assert code == 1, out
    fails = _fails(out)
    assert len(fails) == len(expected), out
    for fail, start in zip(fails, expected, strict=True):
        assert fail.startswith(start), out
