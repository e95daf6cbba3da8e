"""Bounded capture of a run's output: the first half of the budget is
forwarded as it arrives, the last half is kept in a ring and sent at the end,
and what falls between is counted and replaced by one marker. Memory stays at
the budget however much a sandbox writes."""

from __future__ import annotations

from collections import deque
from typing import Literal

from airlock.executor._model import Chunk

StreamName = Literal["stdout", "stderr"]


#: How much of the end of stderr is kept aside (OutputCapture.stderr_tail).
STDERR_TAIL_BYTES = 1024


class OutputCapture:
    def __init__(self, budget: int) -> None:
        self._head_left = budget // 2
        self._tail_budget = budget - budget // 2
        self._tail: deque[Chunk] = deque()
        self._tail_size = 0
        self.dropped = 0
        self.first_drop: StreamName | None = None
        self.totals: dict[StreamName, int] = {"stdout": 0, "stderr": 0}
        #: The last bytes of stderr whatever the budget: where the runtime's
        #: own message about a failed exec ends up.
        self.stderr_tail = b""

    def add(self, stream: StreamName, data: bytes) -> Chunk | None:
        """Takes a chunk; returns the part to forward now, if any."""
        self.totals[stream] += len(data)
        if stream == "stderr":
            self.stderr_tail = (self.stderr_tail + data)[-STDERR_TAIL_BYTES:]
        head: Chunk | None = None
        if self._head_left > 0:
            take = data[: self._head_left]
            self._head_left -= len(take)
            data = data[len(take) :]
            head = Chunk(stream, take)
        if data:
            self._tail.append(Chunk(stream, data))
            self._tail_size += len(data)
            self._trim()
        return head

    def _trim(self) -> None:
        while self._tail_size > self._tail_budget:
            oldest = self._tail[0]
            excess = self._tail_size - self._tail_budget
            if self.first_drop is None:
                self.first_drop = oldest.stream
            if len(oldest.data) <= excess:
                self._tail.popleft()
                self._tail_size -= len(oldest.data)
                self.dropped += len(oldest.data)
            else:
                self._tail[0] = Chunk(oldest.stream, oldest.data[excess:])
                self._tail_size -= excess
                self.dropped += excess

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def finish(self) -> list[Chunk]:
        """The marker (if anything was cut) and the tail, in order."""
        out: list[Chunk] = []
        if self.first_drop is not None:
            marker = f"\n[airlock: output truncated, {self.dropped} bytes omitted]\n".encode()
            out.append(Chunk(self.first_drop, marker))
        out.extend(self._tail)
        self._tail.clear()
        return out
