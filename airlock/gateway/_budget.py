"""Call counters for budget rules: how many calls a principal made in the
trailing window, overall, per tool, per session and per session's tool.

The gateway supplies them in the policy input (``input.counters``); the
policy decides what is too many. Every key starts with the authenticated
principal: a session id is the caller's to choose, so it is only ever a
sub-bucket of its principal (two principals sending the same session string
never share a count, and a fresh session id per call does not escape the
principal-wide counters).

Reservations close the race between parallel calls: an Invoke reserves its
count *before* the policy sees the counters, so concurrent calls each see
the ones in flight; a deny or a failure before the run releases it, an
allowed call keeps it. Decide only reads.

CounterStore is the seam: the store here is in memory (one gateway process);
_budget_redis.py is the one several gateways share.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_WINDOW_SECONDS = 3600
#: Keys idle longer than the window are dropped; this bounds memory when
#: many short sessions come and go.
MAX_KEYS = 100_000
COUNTER_NAMES = ("principal_calls", "principal_tool_calls", "session_calls", "session_tool_calls")


def counter_keys(principal: str, session: str, tool: str) -> dict[str, tuple[str, ...]]:
    """Each counter's key: its kind, the principal, then session and tool."""
    # A call without a session id counts in its principal's "no session"
    # bucket; the \0 keeps ("a", "") apart from any real session name.
    s = session or "\0none"
    return {
        "principal_calls": ("p", principal),
        "principal_tool_calls": ("pt", principal, tool),
        "session_calls": ("s", principal, s),
        "session_tool_calls": ("st", principal, s, tool),
    }


@dataclass
class Reservation:
    """A counted call. ``counts`` are the counters *before* it (what the policy
    compares with its limits); ``release`` un-counts a call that did not run."""

    counts: Mapping[str, int]
    _release: Callable[[], None] = field(repr=False)
    _done: bool = field(default=False, repr=False)

    def release(self) -> None:
        if not self._done:
            self._done = True
            self._release()

    def keep(self) -> None:
        self._done = True


class CounterStore(Protocol):
    """The budget seam: read counters, or reserve one more call."""

    window_seconds: int

    async def snapshot(self, principal: str, session: str, tool: str) -> dict[str, int]: ...

    async def reserve(self, principal: str, session: str, tool: str) -> Reservation: ...


class CallCounters:
    """In-memory sliding-window counters (one process)."""

    def __init__(
        self, window_seconds: int = DEFAULT_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._events: OrderedDict[tuple[str, ...], deque[float]] = OrderedDict()

    def _count(self, key: tuple[str, ...], now: float) -> int:
        q = self._events.get(key)
        if q is None:
            return 0
        while q and q[0] <= now - self.window_seconds:
            q.popleft()
        return len(q)

    def _snapshot(self, principal: str, session: str, tool: str) -> dict[str, int]:
        now = self._clock()
        with self._lock:
            counts = {name: self._count(key, now) for name, key in counter_keys(principal, session, tool).items()}
        return {"window_seconds": self.window_seconds, **counts}

    async def snapshot(self, principal: str, session: str, tool: str) -> dict[str, int]:
        return self._snapshot(principal, session, tool)

    async def reserve(self, principal: str, session: str, tool: str) -> Reservation:
        return self.reserve_now(principal, session, tool)

    def reserve_now(self, principal: str, session: str, tool: str) -> Reservation:
        now = self._clock()
        keys = counter_keys(principal, session, tool)
        with self._lock:
            counts = {name: self._count(key, now) for name, key in keys.items()}
            for key in keys.values():
                q = self._events.setdefault(key, deque())
                q.append(now)
                self._events.move_to_end(key)
            while len(self._events) > MAX_KEYS:
                self._events.popitem(last=False)

        def release() -> None:
            with self._lock:
                for key in keys.values():
                    q = self._events.get(key)
                    if q is not None:
                        # Remove this call's own stamp (the newest equal one).
                        for i in range(len(q) - 1, -1, -1):
                            if q[i] == now:
                                del q[i]
                                break

        return Reservation({"window_seconds": self.window_seconds, **counts}, release)
