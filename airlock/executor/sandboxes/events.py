"""Session started and ended events, on their way to the gateway's audit log.

The executor cannot write the audit log (it is the gateway's alone), so it
keeps the events in a bounded buffer the gateway drains over the
WatchSessions stream. A gateway that is away for a long time can make the
buffer overflow: the oldest events are then dropped and *counted*, and the
count is the next thing the gateway receives, so the audit log records
that events are missing rather than looking complete.

An event, and a loss count, leave the buffer only when the consumer asks
for the next item, i.e. once the stream took it (``context.write``
returned). That is not an acknowledgement from the gateway: what the
stream had taken when the gateway stopped, crashed or dropped the
connection is gone without a count (docs/sessions.md says what that can
cost and how the audit log shows it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from airlock.common.wire import SessionInfo

#: Events kept for a gateway that is not listening.
DEFAULT_CAPACITY = 4096

EndCause = Literal["idle", "lifetime", "ended", "shutdown", "error", "drained"]
END_CAUSES: tuple[EndCause, ...] = ("idle", "lifetime", "ended", "shutdown", "error", "drained")


@dataclass(frozen=True)
class SessionEvent:
    kind: Literal["started", "ended"]
    session: SessionInfo
    cause: str = ""
    """For "ended": one of END_CAUSES."""


@dataclass(frozen=True)
class EventsLost:
    """This many events were dropped because nobody drained the buffer."""

    count: int


class SessionEvents:
    """A bounded buffer with one consumer at a time."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._buffer: deque[SessionEvent] = deque()
        self._capacity = capacity
        # Dropped events, counted for ever; _lost_sent of them were taken by
        # a consumer. Two totals rather than one counter reset on sending: a
        # send cut short, or two consumers overlapping, must never lose
        # (nor cancel out) a count.
        self._lost = 0
        self._lost_sent = 0
        self._wake = asyncio.Event()
        self._consumer = 0

    def publish(self, event: SessionEvent) -> None:
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._lost += 1
        self._buffer.append(event)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def drain(self) -> AsyncIterator[SessionEvent | EventsLost]:
        """Yields events as they come. A newer consumer takes over: an older
        one's iteration ends (a reconnecting gateway replaces a dead stream)."""
        self._consumer += 1
        me = self._consumer
        while me == self._consumer:
            total = self._lost
            if total > self._lost_sent:
                yield EventsLost(total - self._lost_sent)
                # Only now, once the stream took it: a consumer closed at the
                # yield (the stream broke) leaves the count for the next.
                self._lost_sent = max(self._lost_sent, total)
                continue
            if self._buffer:
                event = self._buffer[0]
                yield event
                # Removed only once the consumer took it: a stream that broke
                # while sending leaves it for the next consumer.
                if self._buffer and self._buffer[0] is event:
                    self._buffer.popleft()
                continue
            self._wake.clear()
            await self._wake.wait()

    def stop_consumers(self) -> None:
        self._consumer += 1
        self._wake.set()
