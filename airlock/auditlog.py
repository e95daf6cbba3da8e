"""The audit log's on-disk format: JSON lines sealed into a keyed hash chain.

Each line is one ``airlock.v1.AuditEvent`` rendered as JSON, with two
fields the chain adds: ``seq`` (1, 2, 3, ... across rotated files) and
``prev_hash`` (the previous line's ``hash``), and it ends with
``"hash": "<hex>"`` -- an HMAC-SHA256, under the audit key, of the line's
bytes before that field. So:

- an edited line no longer matches its own hash;
- a deleted, inserted or reordered line breaks ``seq`` or ``prev_hash``;
- forging a consistent chain needs the key (kept 0600 next to the gateway);
  without a key, plain SHA-256 still catches naive edits but not a rewrite.

What a chain cannot show on its own is the loss of its newest lines; the
gateway exports the last ``seq`` as a metric so monitoring can notice. Both
the gateway (writing) and ``airlock audit verify`` (reading) use this module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64
_SUFFIX = re.compile(rb', "hash": "([0-9a-f]{64})"\}$')


def digest(key: bytes | None, body: bytes) -> str:
    if key:
        return hmac.new(key, body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


def seal(body: str, key: bytes | None) -> tuple[bytes, str]:
    """Appends the hash field to a rendered JSON object; returns the line
    (with newline) and its hash."""
    if not body.endswith("}"):
        raise ValueError("an audit body is a JSON object")
    raw = body.encode()
    h = digest(key, raw)
    return raw[:-1] + f', "hash": "{h}"}}\n'.encode(), h


@dataclass(frozen=True)
class ChainState:
    """Where a chain ends: the next writer continues from here."""

    seq: int = 0
    hash: str = GENESIS


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    seq: int | None
    kind: str  # edited, deleted, inserted, reordered, unreadable
    detail: str

    def __str__(self) -> str:
        at = f"{self.file}:{self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{at}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Report:
    events: int
    files: int
    first_seq: int | None
    last: ChainState
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _lines(paths: Iterable[Path]) -> Iterator[tuple[str, int, bytes]]:
    for path in paths:
        with path.open("rb") as f:
            for n, line in enumerate(f, start=1):
                yield str(path), n, line


def order_files(paths: Iterable[Path]) -> list[Path]:
    """Rotated files in chain order: by the seq of their first event."""

    def first_seq(p: Path) -> int:
        with p.open("rb") as f:
            head = f.readline()
        try:
            return int(json.loads(head)["seq"]) if head.strip() else 1 << 62
        except (ValueError, KeyError, TypeError):
            return 1 << 62

    return sorted(paths, key=first_seq)


def verify(paths: Iterable[Path], key: bytes | None, *, start: ChainState | None = None) -> Report:
    """Checks every line and the links between them; stops at the first problem.

    ``start`` is where the chain is expected to begin (seq 0 and the genesis
    hash for a complete log); pass None to accept whatever the first line
    links to, e.g. when the oldest rotated files were archived away.
    """
    files = list(paths)
    # A first pass over the seq numbers tells a gap that shows up later
    # (reordered) from one that never does (deleted).
    seen = _all_seqs(files)
    expect = start
    count = 0
    first: int | None = None
    prev_at: tuple[str, int] | None = None

    def fail(problem: Problem) -> Report:
        return Report(count, len(files), first, expect or ChainState(), problem)

    for file, n, line in _lines(files):
        m = _SUFFIX.search(line.rstrip(b"\n"))
        if not line.endswith(b"\n") or m is None:
            return fail(Problem(file, n, None, "unreadable", "not a sealed audit line (torn, or hash field removed)"))
        body = line.rstrip(b"\n")[: m.start()] + b"}"
        try:
            event = json.loads(body)
            seq = int(event["seq"])
            prev = str(event["prev_hash"])
        except (ValueError, KeyError, TypeError):
            return fail(Problem(file, n, None, "unreadable", "not a JSON audit event"))
        if not hmac.compare_digest(digest(key, body), m.group(1).decode()):
            return fail(Problem(file, n, seq, "edited", "the line does not match its hash (edited, or another key)"))
        if expect is not None:
            problem = _link(file, n, seq, prev, expect=expect, prev_at=prev_at, seen=seen)
            if problem is not None:
                return fail(problem)
        if first is None:
            first = seq
        expect = ChainState(seq, m.group(1).decode())
        prev_at = (file, n)
        count += 1
    return Report(count, len(files), first, expect or ChainState(), None)


def _all_seqs(files: list[Path]) -> set[int]:
    seqs: set[int] = set()
    for _, _, line in _lines(files):
        m = re.search(rb'"seq": "?(\d+)"?', line)
        if m:
            seqs.add(int(m.group(1)))
    return seqs


def _link(
    file: str,
    n: int,
    seq: int,
    prev: str,
    *,
    expect: ChainState,
    prev_at: tuple[str, int] | None,
    seen: set[int],
) -> Problem | None:
    where = f"{prev_at[0]}:{prev_at[1]}" if prev_at else "the start of the log"
    if seq == expect.seq + 1 and prev == expect.hash:
        return None
    if seq > expect.seq + 1:
        if expect.seq + 1 in seen:
            return Problem(file, n, seq, "reordered", f"seq {seq} comes before seq {expect.seq + 1}, after {where}")
        return Problem(file, n, seq, "deleted", f"seq {expect.seq + 1}..{seq - 1} missing after {where}")
    if seq <= expect.seq:
        kind = "inserted" if seq == expect.seq else "reordered"
        return Problem(file, n, seq, kind, f"seq {seq} follows seq {expect.seq} at {where}")
    return Problem(file, n, seq, "inserted", f"prev_hash does not link to the event at {where}")


def tail_state(paths: Iterable[Path], key: bytes | None) -> ChainState:
    """The chain's end, from the last sealed line of the newest file."""
    state = ChainState()
    for path in order_files([p for p in paths if p.exists() and p.stat().st_size > 0]):
        last = b""
        with path.open("rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    last = line
        m = _SUFFIX.search(last.rstrip(b"\n"))
        if m is None:
            continue
        body = last.rstrip(b"\n")[: m.start()] + b"}"
        if digest(key, body) != m.group(1).decode():
            raise ValueError(f"{path}: the last audit line does not match its hash; refusing to extend the chain")
        state = ChainState(int(json.loads(body)["seq"]), m.group(1).decode())
    return state
