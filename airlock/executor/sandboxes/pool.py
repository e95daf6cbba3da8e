"""The warm pool: idle, hardened, network-less containers per class, ready
for a call to claim.

A claim takes the oldest idle container of the call's class, checks it
(containers.check: alive as made, untouched, current), and hands it out;
one that fails the check is removed and counted as a replacement, and the
next is tried. No idle container is a miss: the caller cold-starts, so an
empty pool slows a call down but never fails it. A claimed container is
never returned: an ephemeral call's is destroyed after the call, a session
keeps its own until the session ends.

Classes are learnt from demand: each claim (hit or miss) marks its class
wanted, and the refill loop keeps ``size`` idle containers of every class
wanted within ``class_ttl``, at most ``max_classes`` classes (the least
recently wanted is dropped first) and ``max_starting`` container starts at
once, so refilling never takes the whole engine from cold starts. Idle
containers older than ``max_idle`` are replaced, and every ``check_interval``
each idle container is checked again, its process list included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airlock.executor.sandboxes.containers import ContainerClass, ReplaceCause, Sandbox, check

log = logging.getLogger("airlock.executor.pool")

#: While a call runs, a shelf that still holds an idle container is refilled
#: only after this long: starting a container takes the engine a few hundred
#: ms of CPU, which on a small machine slows the running call by a third.
#: An empty shelf is refilled at once, and so is any shelf once calls end.
REFILL_DEFER_S = 2.0


class SandboxFactory(Protocol):
    """Blocking calls the pool makes from worker threads."""

    def start(self, cls: ContainerClass, kind: str) -> Sandbox: ...
    def inspect(self, container_id: str) -> Mapping[str, Any] | None: ...
    def pids(self, sandbox: Sandbox) -> int | None: ...
    def processes(self, sandbox: Sandbox) -> int | None: ...
    def fingerprint(self, cls: ContainerClass) -> str: ...
    def remove(self, container_id: str) -> None: ...


class PoolMetrics(Protocol):
    def set_shelf(self, label: str, target: int, idle: int) -> None: ...
    def drop_shelf(self, label: str) -> None: ...
    def claimed(self, hit: bool, seconds: float) -> None: ...
    def replaced(self, cause: ReplaceCause) -> None: ...


@dataclass(frozen=True)
class PoolLimits:
    size: int
    max_classes: int
    max_starting: int
    max_idle_s: float
    class_ttl_s: float
    check_interval_s: float


@dataclass
class _Shelf:
    cls: ContainerClass
    wanted: float
    idle: deque[Sandbox] = field(default_factory=deque)
    starting: int = 0
    checked: float = 0.0
    claimed: float = float("-inf")


@dataclass(frozen=True)
class Claim:
    sandbox: Sandbox | None
    claim_ms: int


class WarmPool:
    def __init__(
        self,
        limits: PoolLimits,
        factory: SandboxFactory,
        metrics: PoolMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._factory = factory
        self._metrics = metrics
        self._clock = clock
        self._shelves: OrderedDict[ContainerClass, _Shelf] = OrderedDict()
        self._starting = 0
        self._kick = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._running = 0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around a call in a sandbox: refills wait for quiet (REFILL_DEFER_S)."""
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._kick.set()

    # -- claiming -------------------------------------------------------------

    async def claim(self, cls: ContainerClass, image_id: str = "") -> Claim:
        """An idle, checked container of this class, or none (a miss). With
        ``image_id`` (a pinned call's digest) only a container created from
        that id: one of another (made before a retag) is replaced as stale."""
        t0 = time.monotonic()
        shelf = self._want(cls)
        shelf.claimed = self._clock()
        sandbox: Sandbox | None = None
        while shelf.idle and not self._closed:
            candidate = shelf.idle.popleft()
            # The check runs in a task of its own: a claimer cancelled while
            # it runs must not lose the container it popped (off the shelf,
            # never handed out, left running until the reaper's deadline).
            checking = asyncio.ensure_future(asyncio.to_thread(self._check, candidate, deep=False))
            try:
                cause = await asyncio.shield(checking)
            except asyncio.CancelledError:
                self._spawn(self._drop_after(checking, candidate))
                raise
            if cause is None and image_id and candidate.image_id != image_id:
                cause = "stale"
            if cause is None:
                sandbox = candidate
                break
            self._discard(candidate, cause)
        self._publish(shelf)
        self._kick.set()
        seconds = time.monotonic() - t0
        self._metrics.claimed(sandbox is not None, seconds)
        return Claim(sandbox, round(seconds * 1000))

    def want(self, cls: ContainerClass) -> None:
        """Marks a class wanted without claiming (prewarming at start)."""
        self._publish(self._want(cls))
        self._kick.set()

    def _want(self, cls: ContainerClass) -> _Shelf:
        shelf = self._shelves.get(cls)
        if shelf is None:
            shelf = self._shelves[cls] = _Shelf(cls, self._clock())
        shelf.wanted = self._clock()
        self._shelves.move_to_end(cls)
        return shelf

    async def _drop_after(self, checking: asyncio.Future[ReplaceCause | None], sandbox: Sandbox) -> None:
        """Removes a container whose claimer went away, once its check ended
        (removing it under the check would only make the check fail noisily).
        One that passed is not a replacement: like any claimed container it is
        used up; one that failed is counted as its cause (tampering shows)."""
        cause: ReplaceCause | None = "died"
        with contextlib.suppress(Exception):  # whatever the check did, the container goes
            cause = await checking
        if cause is None:
            self._discard(sandbox, "evicted", count=False)
        else:
            self._discard(sandbox, cause)
        self._kick.set()

    def _check(self, sandbox: Sandbox, *, deep: bool) -> ReplaceCause | None:
        """Blocking. An idle container is as made, current, and runs only
        its keeper (the pids cgroup, or with ``deep`` the process list)."""
        try:
            inspect = self._factory.inspect(sandbox.container_id)
            expected = self._factory.fingerprint(sandbox.cls)
            count = self._factory.processes(sandbox) if deep else self._factory.pids(sandbox)
        except Exception:  # the engine failed: not a container to trust
            log.warning("cannot check pool container %s", sandbox.container_id[:12], exc_info=True)
            return "died"
        return check(sandbox, inspect, expected, count)

    # -- refilling ------------------------------------------------------------

    async def run(self) -> None:
        """The refill loop, until close()."""
        while not self._closed:
            try:
                await self.maintain()
            except Exception:  # one bad pass must not end refilling
                log.exception("pool maintenance failed")
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=1.0)

    async def maintain(self) -> None:
        now = self._clock()
        self._evict(now)
        for shelf in list(self._shelves.values()):
            await self._expire(shelf, now)
            if now - shelf.checked >= self._limits.check_interval_s and shelf.idle:
                shelf.checked = now
                await self._recheck(shelf)
        for shelf in reversed(self._shelves.values()):  # the most recently wanted first
            missing = self._limits.size - len(shelf.idle) - shelf.starting
            if self._running and shelf.idle and now - shelf.claimed < REFILL_DEFER_S:
                missing = 0  # after the running calls (their end kicks this loop)
            while missing > 0 and self._starting < self._limits.max_starting and not self._closed:
                missing -= 1
                self._start(shelf)
            self._publish(shelf)

    def _evict(self, now: float) -> None:
        while self._shelves:
            cls, shelf = next(iter(self._shelves.items()))
            stale = now - shelf.wanted > self._limits.class_ttl_s
            if not stale and len(self._shelves) <= self._limits.max_classes:
                return
            del self._shelves[cls]
            for sandbox in shelf.idle:
                self._discard(sandbox, "evicted")
            shelf.idle.clear()
            self._metrics.drop_shelf(cls.label)

    async def _expire(self, shelf: _Shelf, now: float) -> None:
        while shelf.idle and now - shelf.idle[0].created > self._limits.max_idle_s:
            self._discard(shelf.idle.popleft(), "expired")

    async def _recheck(self, shelf: _Shelf) -> None:
        for sandbox in list(shelf.idle):
            cause = await asyncio.to_thread(self._check, sandbox, deep=True)
            if cause is not None and sandbox in shelf.idle:
                shelf.idle.remove(sandbox)
                self._discard(sandbox, cause)

    def _start(self, shelf: _Shelf) -> None:
        shelf.starting += 1
        self._starting += 1

        async def start() -> None:
            try:
                sandbox = await asyncio.to_thread(self._factory.start, shelf.cls, "pool")
            except Exception as exc:  # noqa: BLE001 - counted and logged; the next pass tries again
                log.warning("cannot start a pool container of %s: %s", shelf.cls.label, exc)
                self._metrics.replaced("failed")
                await asyncio.sleep(1.0)
                return
            finally:
                shelf.starting -= 1
                self._starting -= 1
                self._kick.set()
            if self._closed or self._shelves.get(shelf.cls) is not shelf:
                self._discard(sandbox, "evicted")
                return
            shelf.idle.append(sandbox)
            self._publish(shelf)

        self._spawn(start())

    # -- removing -------------------------------------------------------------

    def _discard(self, sandbox: Sandbox, cause: ReplaceCause, *, count: bool = True) -> None:
        if count:
            self._metrics.replaced(cause)
        if cause not in ("expired", "evicted"):
            log.warning("pool container %s replaced: %s", sandbox.container_id[:12], cause)
        self._spawn(asyncio.to_thread(self._remove_quietly, sandbox.container_id))

    def _remove_quietly(self, container_id: str) -> None:
        try:
            self._factory.remove(container_id)
        except Exception:  # the reaper and the next start-up sweep remain
            log.warning("cannot remove pool container %s", container_id[:12], exc_info=True)

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish(self, shelf: _Shelf) -> None:
        if self._shelves.get(shelf.cls) is shelf:
            self._metrics.set_shelf(shelf.cls.label, self._limits.size, len(shelf.idle))

    def drain(self) -> int:
        """Replaces every idle container (what they were built from changed);
        returns how many. The refill loop starts new ones."""
        count = 0
        for shelf in self._shelves.values():
            while shelf.idle:
                self._discard(shelf.idle.popleft(), "stale")
                count += 1
            self._publish(shelf)
        self._kick.set()
        return count

    @property
    def idle(self) -> int:
        return sum(len(s.idle) for s in self._shelves.values())

    async def close(self) -> None:
        """Stops refilling and removes every idle container."""
        self._closed = True
        self._kick.set()
        for shelf in self._shelves.values():
            while shelf.idle:
                self._discard(shelf.idle.popleft(), "evicted", count=False)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
