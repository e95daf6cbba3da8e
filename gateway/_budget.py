"""Call counters for budget rules: how many allowed Invoke calls a session,
a session's tool, and a principal's tool made in the trailing window.

The gateway supplies them in the policy input (``input.counters``); the
policy decides what is too many. They live in memory: a restarted gateway
starts from zero, and concurrent calls of one session each see the count
from before the others, so a budget can be overshot by at most the number
of that session's calls in flight.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

DEFAULT_WINDOW_SECONDS = 3600
#: Keys idle longer than the window are dropped; this bounds memory when
#: many short sessions come and go.
MAX_KEYS = 100_000


class CallCounters:
    def __init__(
        self, window_seconds: int = DEFAULT_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._events: OrderedDict[tuple[str, ...], deque[float]] = OrderedDict()

    @staticmethod
    def _keys(principal: str, session: str, tool: str) -> dict[str, tuple[str, ...]]:
        # A call without a session id counts against the principal's
        # "no session" bucket, so omitting the id is not a way around a budget.
        s = session or f"principal:{principal}"
        return {
            "session_calls": ("s", s),
            "session_tool_calls": ("st", s, tool),
            "principal_tool_calls": ("pt", principal, tool),
        }

    def _count(self, key: tuple[str, ...], now: float) -> int:
        q = self._events.get(key)
        if q is None:
            return 0
        while q and q[0] <= now - self.window_seconds:
            q.popleft()
        return len(q)

    def snapshot(self, principal: str, session: str, tool: str) -> dict[str, int]:
        now = self._clock()
        with self._lock:
            counts = {name: self._count(key, now) for name, key in self._keys(principal, session, tool).items()}
        return {"window_seconds": self.window_seconds, **counts}

    def record(self, principal: str, session: str, tool: str) -> None:
        now = self._clock()
        with self._lock:
            for key in self._keys(principal, session, tool).values():
                q = self._events.setdefault(key, deque())
                q.append(now)
                self._events.move_to_end(key)
            while len(self._events) > MAX_KEYS:
                self._events.popitem(last=False)
