"""Admission: how much of the gateway one principal may hold at once.

Two mechanisms, both keyed by the authenticated principal:

- ``InFlight``: a hard cap on one principal's concurrent calls (every RPC
  that decides or records). Above it a call is refused at once
  (``too_many_in_flight``) instead of queueing, so a flood costs its sender,
  not everyone: before this, a flood of Decide calls pushed other principals'
  decisions past the OPA deadline.
- ``FairSlots``: a fair share of a scarce resource (the policy engine's
  concurrency, the executor's run slots). A principal holds at most
  ``per_principal`` slots; when slots are contended, a freed slot goes to
  the waiting principal that holds the fewest (ties: the one waiting
  longest), never simply to the next request in line. Before this, one
  principal holding all 16 executor slots delayed another's call from ~1 s
  to 10.9 s.

Both are per gateway process (documented: several replicas each apply them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict, deque
from collections.abc import AsyncIterator


class InFlight:
    """Counts calls in flight per principal; ``enter`` refuses above the cap."""

    def __init__(self, per_principal: int) -> None:
        if per_principal < 1:
            raise ValueError("per_principal must be >= 1")
        self.per_principal = per_principal
        self._count: dict[str, int] = defaultdict(int)

    def try_enter(self, principal: str) -> bool:
        if self._count[principal] >= self.per_principal:
            return False
        self._count[principal] += 1
        return True

    def leave(self, principal: str) -> None:
        self._count[principal] -= 1
        if self._count[principal] <= 0:
            del self._count[principal]

    def held(self, principal: str) -> int:
        return self._count.get(principal, 0)


class SlotTimeoutError(Exception):
    """No slot became free in time."""


class FairSlots:
    """``capacity`` slots shared fairly between principals (see module doc)."""

    def __init__(self, capacity: int, per_principal: int) -> None:
        if capacity < 1 or per_principal < 1:
            raise ValueError("capacity and per_principal must be >= 1")
        self.capacity = capacity
        self.per_principal = min(per_principal, capacity)
        self._used = 0
        self._held: dict[str, int] = defaultdict(int)
        # principal -> waiters in arrival order; each waiter is (ticket, future).
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = defaultdict(deque)
        self._tickets = itertools.count()

    @property
    def used(self) -> int:
        return self._used

    def _can_take(self, principal: str) -> bool:
        return self._used < self.capacity and self._held.get(principal, 0) < self.per_principal

    def _take(self, principal: str) -> None:
        self._used += 1
        self._held[principal] += 1

    @contextlib.asynccontextmanager
    async def slot(self, principal: str, timeout: float | None = None) -> AsyncIterator[None]:  # noqa: ASYNC109 - a queueing deadline, not the call's
        """Holds one slot for ``principal``; raises SlotTimeoutError after ``timeout`` s."""
        await self._acquire(principal, timeout)
        try:
            yield
        finally:
            self._release(principal)

    async def _acquire(self, principal: str, timeout: float | None) -> None:  # noqa: ASYNC109 - see slot
        if not self._waiting.get(principal) and self._can_take(principal) and not self._others_waiting():
            self._take(principal)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (next(self._tickets), fut)
        self._waiting[principal].append(entry)
        self._dispatch()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(fut)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                # Granted just as we gave up: hand the slot on.
                self._release(principal)
            else:
                fut.cancel()
                queue = self._waiting.get(principal)
                if queue is not None:
                    with contextlib.suppress(ValueError):
                        queue.remove(entry)
                    if not queue:
                        del self._waiting[principal]
            if isinstance(exc, TimeoutError):
                raise SlotTimeoutError(f"no free slot within {timeout} s") from exc
            raise

    def _others_waiting(self) -> bool:
        return any(self._waiting.values())

    def _release(self, principal: str) -> None:
        self._used -= 1
        self._held[principal] -= 1
        if self._held[principal] <= 0:
            del self._held[principal]
        self._dispatch()

    def _dispatch(self) -> None:
        """Grants free slots: to the eligible waiter whose principal holds the
        fewest slots, then to the oldest ticket."""
        while self._used < self.capacity:
            best: tuple[int, int, str] | None = None
            for principal, queue in self._waiting.items():
                if not queue or self._held.get(principal, 0) >= self.per_principal:
                    continue
                key = (self._held.get(principal, 0), queue[0][0], principal)
                if best is None or key < best:
                    best = key
            if best is None:
                return
            principal = best[2]
            _, fut = self._waiting[principal].popleft()
            if not self._waiting[principal]:
                del self._waiting[principal]
            if fut.done():  # cancelled while waiting
                continue
            self._take(principal)
            fut.set_result(None)


class RateLimits:
    """Per-principal token buckets: calls per second and argument bytes per
    second, each with a burst. A principal over either is refused at once
    (``rate_limited``): one agent cannot fill the audit disk (an agent once
    wrote 16 MB/s of fsynced decisions through Decide) or the policy
    engine's time. Per gateway process."""

    def __init__(self, calls_per_s: float, calls_burst: int, bytes_per_s: float, bytes_burst: int) -> None:
        if min(calls_per_s, calls_burst, bytes_per_s, bytes_burst) <= 0:
            raise ValueError("rates and bursts must be > 0")
        self._calls = (calls_per_s, float(calls_burst))
        self._bytes = (bytes_per_s, float(bytes_burst))
        # principal -> (call tokens, byte tokens, last refill)
        self._state: dict[str, tuple[float, float, float]] = {}

    def allow(self, principal: str, nbytes: int, now: float) -> bool:
        """One call of ``nbytes`` argument bytes: UTF-8 bytes, not characters
        (a 60 KB argument of "\u00e4" is 30 K characters)."""
        calls, data, last = self._state.get(principal, (self._calls[1], self._bytes[1], now))
        elapsed = max(0.0, now - last)
        calls = min(self._calls[1], calls + elapsed * self._calls[0])
        data = min(self._bytes[1], data + elapsed * self._bytes[0])
        ok = calls >= 1 and data >= nbytes
        if ok:
            calls -= 1
            data -= nbytes
        self._state[principal] = (calls, data, now)
        return ok
