"""executor._capture.OutputCapture: head forwarded, tail kept, middle counted."""

from __future__ import annotations

import random
import re

import pytest

from airlock.executor._capture import STDERR_TAIL_BYTES, OutputCapture
from airlock.executor._model import Chunk
from airlock.executor._runner import RUNSC_WAIT_FAILED

MARKER_RE = re.compile(rb"^\n\[airlock: output truncated, (\d+) bytes omitted\]\n$")


def test_under_budget_nothing_is_truncated() -> None:
    cap = OutputCapture(100)
    assert cap.add("stdout", b"a" * 30) == Chunk("stdout", b"a" * 30)
    # The head has 20 bytes left: they go now, the rest waits for finish().
    assert cap.add("stderr", b"b" * 40) == Chunk("stderr", b"b" * 20)
    assert cap.add("stdout", b"c" * 10) is None
    assert cap.finish() == [Chunk("stderr", b"b" * 20), Chunk("stdout", b"c" * 10)]
    assert cap.truncated is False
    assert cap.dropped == 0
    assert cap.totals == {"stdout": 40, "stderr": 40}


def test_exactly_at_budget_is_not_truncated() -> None:
    cap = OutputCapture(10)
    assert cap.add("stdout", b"0123456789") == Chunk("stdout", b"01234")
    assert cap.finish() == [Chunk("stdout", b"56789")]
    assert cap.truncated is False


def test_over_budget_keeps_head_and_tail_with_a_marker() -> None:
    data = bytes(range(100))
    cap = OutputCapture(20)
    head = cap.add("stdout", data)
    assert head == Chunk("stdout", data[:10])
    rest = cap.finish()
    assert rest == [
        Chunk("stdout", b"\n[airlock: output truncated, 80 bytes omitted]\n"),
        Chunk("stdout", data[-10:]),
    ]
    assert cap.truncated is True
    assert cap.dropped == 80
    assert cap.totals == {"stdout": 100, "stderr": 0}
    # finish() hands the tail over once.
    assert cap.finish() == [Chunk("stdout", b"\n[airlock: output truncated, 80 bytes omitted]\n")]


def test_mixed_streams_keep_their_names_and_order() -> None:
    cap = OutputCapture(20)
    assert cap.add("stdout", b"A" * 8) == Chunk("stdout", b"A" * 8)
    assert cap.add("stderr", b"B" * 8) == Chunk("stderr", b"BB")
    assert cap.add("stdout", b"C" * 30) is None
    assert cap.add("stderr", b"D" * 4) is None
    # The stderr bytes were the first to go, so the marker is on stderr.
    assert cap.finish() == [
        Chunk("stderr", b"\n[airlock: output truncated, 30 bytes omitted]\n"),
        Chunk("stdout", b"C" * 6),
        Chunk("stderr", b"D" * 4),
    ]
    assert cap.totals == {"stdout": 38, "stderr": 12}
    assert cap.dropped == 30


def test_zero_budget_keeps_nothing_but_counts_everything() -> None:
    cap = OutputCapture(0)
    assert cap.add("stdout", b"xyz") is None
    assert cap.add("stderr", b"12") is None
    (marker,) = cap.finish()
    assert marker == Chunk("stdout", b"\n[airlock: output truncated, 5 bytes omitted]\n")
    assert cap.totals == {"stdout": 3, "stderr": 2}


@pytest.mark.parametrize("seed", range(25))
def test_invariants_hold_for_random_output(seed: int) -> None:
    rng = random.Random(seed)
    budget = rng.choice([1, 2, 7, 64, 1000, 4096])
    cap = OutputCapture(budget)
    written: list[Chunk] = []
    forwarded: list[Chunk] = []
    for i in range(rng.randint(1, 60)):
        stream = rng.choice(["stdout", "stderr"])
        data = bytes([65 + i % 26]) * rng.randint(0, 300)
        written.append(Chunk(stream, data))
        head = cap.add(stream, data)
        if head is not None:
            assert len(head.data) <= len(data)
            assert head.stream == stream
            forwarded.append(head)
        # Memory stays at the budget whatever is written.
        assert cap._tail_size <= budget - budget // 2
    rest = cap.finish()
    total = sum(len(c.data) for c in written)
    marker = [c for c in rest if MARKER_RE.match(c.data)]
    tail = [c for c in rest if not MARKER_RE.match(c.data)]
    kept = b"".join(c.data for c in forwarded) + b"".join(c.data for c in tail)
    everything = b"".join(c.data for c in written)
    assert cap.totals["stdout"] + cap.totals["stderr"] == total
    assert cap.totals["stdout"] == sum(len(c.data) for c in written if c.stream == "stdout")
    assert len(kept) == min(total, budget)
    assert len(kept) + cap.dropped == total
    head_bytes = b"".join(c.data for c in forwarded)
    tail_bytes = b"".join(c.data for c in tail)
    assert everything.startswith(head_bytes)
    assert everything.endswith(tail_bytes)
    if total > budget:
        assert cap.truncated
        assert len(marker) == 1
        assert rest[0] is marker[0]
        match = MARKER_RE.match(marker[0].data)
        assert match is not None
        assert int(match.group(1)) == total - budget
    else:
        assert not cap.truncated
        assert marker == []
        assert kept == everything


def test_stderr_tail_is_kept_whatever_the_budget() -> None:
    # The runtime's own message about a failed exec is the last thing on
    # stderr; the executor reads it there even when the output was cut.
    cap = OutputCapture(16)
    cap.add("stderr", b"x" * 5000)
    cap.add("stdout", b"y" * 100)
    message = b'waiting on pid 20: waiting on PID 20 in sandbox "9ce41e6008": urpc method failed: EOF\n'
    cap.add("stderr", message)
    assert cap.stderr_tail.endswith(message)
    assert len(cap.stderr_tail) == STDERR_TAIL_BYTES
    assert RUNSC_WAIT_FAILED.search(cap.stderr_tail)
    assert not RUNSC_WAIT_FAILED.search(b"waiting on pid 20 in my program\n")
