"""executor.sandboxes (SessionTable, WarmPool) when the caller goes away: a
Run cancelled mid-start, mid-claim, mid-check or mid-removal leaves no
container behind, no address held by nobody, no session stuck busy, and a
start still in flight counts against the session limits. Also: a pinned
call gets only a container of its digest. A fake factory whose blocking
calls wait on gates stands in for Docker."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pytest

from airlock.executor._errors import RunRefused
from airlock.executor._options import KEEPER_PIDS
from airlock.executor.sandboxes.containers import ContainerClass, ReplaceCause, Sandbox, config_digest
from airlock.executor.sandboxes.events import EndCause, SessionEvents
from airlock.executor.sandboxes.pool import REFILL_DEFER_S, PoolLimits, WarmPool
from airlock.executor.sandboxes.sessions import SessionKey, SessionLimits, SessionTable

CLS = ContainerClass("img:1", "runc", 1 << 28, 1000, 64, 1 << 26)
EGRESS = ("egress", "example.com", "|")
FINGERPRINT = "fp"
#: What a healthy keeper container looks like to inspect.
INSPECT: Mapping[str, Any] = {"State": {"Running": True, "Pid": 7, "StartedAt": "t0"}, "Config": {}, "HostConfig": {}}
#: Bounds every wait, so a broken table fails the test instead of hanging it.
WAIT_S = 5.0

_T = TypeVar("_T")


class Gate:
    """Holds a blocking call (in its worker thread) until opened."""

    def __init__(self) -> None:
        self.closed = False
        self.entered = threading.Event()
        self._open = threading.Event()

    def pass_through(self) -> None:
        if self.closed:
            self.entered.set()
            self._open.wait(WAIT_S)

    def open(self) -> None:
        self._open.set()


class FakeFactory:
    """Both factory protocols (the pool's and the session table's)."""

    def __init__(self) -> None:
        self.starting = Gate()
        self.inspecting = Gate()
        self.removing = Gate()
        self.made: list[str] = []
        self.removed: list[str] = []
        #: What an unpinned start makes its container from (the tag's id now).
        self.image_id = "sha256:aa"

    def start(self, cls: ContainerClass, kind: str, *, egress_address: str = "", image_id: str = "") -> Sandbox:
        self.starting.pass_through()
        container_id = f"{kind}-{len(self.made)}"
        self.made.append(container_id)
        return Sandbox(
            sandbox_id=f"sbx-{container_id}",
            container_id=container_id,
            cls=cls,
            fingerprint=FINGERPRINT,
            pid=7,
            started_at="t0",
            config_digest=config_digest(INSPECT),
            created=time.monotonic(),
            egress_address=egress_address,
            image_id=image_id or self.image_id,
        )

    def inspect(self, container_id: str) -> Mapping[str, Any] | None:
        self.inspecting.pass_through()
        return None if container_id in self.removed else INSPECT

    def pids(self, sandbox: Sandbox) -> int | None:
        return KEEPER_PIDS

    def processes(self, sandbox: Sandbox) -> int | None:
        return KEEPER_PIDS

    def fingerprint(self, cls: ContainerClass) -> str:
        return FINGERPRINT

    def remove(self, container_id: str) -> None:
        self.removing.pass_through()
        self.removed.append(container_id)

    @property
    def running(self) -> list[str]:
        return [c for c in self.made if c not in self.removed]


class FakeAddresses:
    def __init__(self) -> None:
        self.in_use: set[str] = set()
        self._next = 10

    def reserve(self, *, desktop: bool = False) -> str:
        address = f"10.99.0.{self._next}"
        self._next += 1
        self.in_use.add(address)
        return address

    def release(self, address: str) -> None:
        self.in_use.discard(address)


class FakeSessionMetrics:
    def __init__(self) -> None:
        self.started = 0
        self.ended: list[EndCause] = []

    def session_started(self) -> None:
        self.started += 1

    def session_ended(self, cause: EndCause) -> None:
        self.ended.append(cause)


class FakePoolMetrics:
    def __init__(self) -> None:
        self.replacements: list[ReplaceCause] = []

    def set_shelf(self, label: str, target: int, idle: int) -> None:
        pass

    def drop_shelf(self, label: str) -> None:
        pass

    def claimed(self, hit: bool, seconds: float) -> None:
        pass

    def replaced(self, cause: ReplaceCause) -> None:
        self.replacements.append(cause)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the table to settle"
        await asyncio.sleep(0.01)


async def _entered(gate: Gate) -> None:
    assert await asyncio.to_thread(gate.entered.wait, WAIT_S), "the blocking call was never made"


async def _cancel_when(gate: Gate, work: Awaitable[_T]) -> None:
    """Runs ``work`` until it blocks in ``gate``, then cancels it: an Invoke
    whose client disconnected at that moment."""
    task = asyncio.ensure_future(work)
    await _entered(gate)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _table(factory: FakeFactory, addresses: FakeAddresses, **kw: Any) -> tuple[SessionTable, SessionEvents]:
    events = SessionEvents()
    limits = SessionLimits(max_sessions=kw.pop("max_sessions", 4), max_per_principal=1, check_interval_s=60)
    metrics = kw.pop("metrics", FakeSessionMetrics())
    return SessionTable(limits, factory, events, metrics, addresses=addresses, **kw), events


# -- sessions -----------------------------------------------------------------


def test_cancelled_first_call_removes_its_container_and_counts_until_then() -> None:
    factory, addresses = FakeFactory(), FakeAddresses()
    table, events = _table(factory, addresses)
    alice = SessionKey("alice", "s1", CLS, EGRESS)

    async def scenario() -> None:
        factory.starting.closed = True
        try:
            await _cancel_when(factory.starting, table.acquire(alice, 60, 60))
            # The start goes on in its thread: the container will exist, so it
            # counts against the principal's cap (max_per_principal=1) and
            # keeps its address until it is gone.
            with pytest.raises(RunRefused) as refused:
                await table.acquire(SessionKey("alice", "s2", CLS, EGRESS), 60, 60)
            assert refused.value.code == "session_limit"
            assert addresses.in_use == {"10.99.0.10"}
        finally:
            factory.starting.open()
        await _until(lambda: not addresses.in_use)
        # Removed before the address went back, and never reported as a session.
        assert factory.made == ["session-0"]
        assert factory.running == []
        assert events.pending == 0
        assert table.count() == 0
        # The cap is free again.
        factory.starting.closed = False
        acquired = await table.acquire(SessionKey("alice", "s2", CLS, EGRESS), 60, 60)
        table.release(acquired.session)
        await table.close()

    asyncio.run(scenario())


def test_a_waiter_on_a_cancelled_start_gets_a_sandbox_of_its_own() -> None:
    factory, addresses = FakeFactory(), FakeAddresses()
    table, _ = _table(factory, addresses)
    key = SessionKey("alice", "s1", CLS)

    async def scenario() -> None:
        factory.starting.closed = True
        first = asyncio.ensure_future(table.acquire(key, 60, 60))
        await _entered(factory.starting)
        second = asyncio.ensure_future(table.acquire(key, 60, 60))
        await asyncio.sleep(0.05)  # the second waits on the first's start
        first.cancel()
        factory.starting.closed = False
        factory.starting.open()
        with pytest.raises(asyncio.CancelledError):
            await first
        acquired = await asyncio.wait_for(second, WAIT_S)
        assert acquired.started
        assert acquired.session.sandbox.container_id == "session-1"
        assert factory.running == ["session-1"]
        table.release(acquired.session)
        await table.close()
        assert factory.running == []

    asyncio.run(scenario())


def test_cancelled_check_of_a_live_session_leaves_it_idle() -> None:
    factory, addresses, clock = FakeFactory(), FakeAddresses(), Clock()
    metrics = FakeSessionMetrics()
    table, _ = _table(factory, addresses, clock=clock, metrics=metrics)
    key = SessionKey("alice", "s1", CLS)

    async def scenario() -> None:
        acquired = await table.acquire(key, 60, 3600)
        table.release(acquired.session)
        factory.inspecting.closed = True
        try:
            await _cancel_when(factory.inspecting, table.acquire(key, 60, 3600))
        finally:
            factory.inspecting.open()
        # Still busy, upkeep would never end it at its idle TTL.
        assert acquired.session.busy == 0
        clock.now += 61
        await table.maintain()
        assert metrics.ended == ["idle"]
        assert factory.running == []
        await table.close()

    asyncio.run(scenario())


def test_cancelled_end_still_releases_the_address_and_reports_the_end() -> None:
    factory, addresses = FakeFactory(), FakeAddresses()
    metrics = FakeSessionMetrics()
    table, events = _table(factory, addresses, metrics=metrics)
    key = SessionKey("alice", "s1", CLS, EGRESS)

    async def scenario() -> None:
        acquired = await table.acquire(key, 60, 60)
        table.release(acquired.session)
        factory.removing.closed = True
        try:
            # An EndSandboxes RPC whose client went away mid-removal.
            await _cancel_when(factory.removing, table.end_by_id(acquired.session.sandbox_id))
        finally:
            factory.removing.open()
        await _until(lambda: not addresses.in_use)
        assert metrics.ended == ["ended"]
        assert events.pending == 2  # started, ended: the audit log sees both
        assert factory.running == []
        await table.close()

    asyncio.run(scenario())


# -- warm pool ----------------------------------------------------------------


def test_cancelled_claim_removes_the_container_it_popped() -> None:
    factory, metrics = FakeFactory(), FakePoolMetrics()
    limits = PoolLimits(size=1, max_classes=1, max_starting=1, max_idle_s=600, class_ttl_s=600, check_interval_s=600)
    pool = WarmPool(limits, factory, metrics)

    async def scenario() -> None:
        pool.want(CLS)
        await pool.maintain()
        await _until(lambda: pool.idle == 1)
        factory.inspecting.closed = True
        try:
            await _cancel_when(factory.inspecting, pool.claim(CLS))
            assert pool.idle == 0
        finally:
            factory.inspecting.open()
        # Neither handed out nor left running until the reaper's deadline.
        await _until(lambda: factory.running == [])
        assert factory.made == ["pool-0"]
        # It passed its check: used up like a claim, not a replacement.
        assert metrics.replacements == []
        await pool.close()

    asyncio.run(scenario())


def test_refills_wait_for_running_calls_unless_a_shelf_is_empty() -> None:
    """Starting a container costs the engine CPU the running call needs:
    while a call runs, a shelf that still holds one is refilled only after
    REFILL_DEFER_S; an empty one at once."""
    factory, metrics = FakeFactory(), FakePoolMetrics()
    limits = PoolLimits(size=2, max_classes=1, max_starting=2, max_idle_s=600, class_ttl_s=600, check_interval_s=600)
    now = [100.0]
    pool = WarmPool(limits, factory, metrics, clock=lambda: now[0])

    async def scenario() -> None:
        pool.want(CLS)
        await pool.maintain()
        await _until(lambda: pool.idle == 2)
        first = await pool.claim(CLS)
        assert first.sandbox is not None
        with pool.running():
            await pool.maintain()
            await asyncio.sleep(0.05)
            assert len(factory.made) == 2  # one idle left: the refill waits
            now[0] += REFILL_DEFER_S
            await pool.maintain()
            await _until(lambda: len(factory.made) == 3)  # waited long enough
            await _until(lambda: pool.idle == 2)
            assert (await pool.claim(CLS)).sandbox is not None
            assert (await pool.claim(CLS)).sandbox is not None
            await pool.maintain()
            await _until(lambda: len(factory.made) == 5)  # an empty shelf: at once
        await pool.close()

    asyncio.run(scenario())


# -- pinned calls ---------------------------------------------------------------


def test_a_pinned_claim_takes_only_a_container_of_its_digest() -> None:
    """A pool container made from another id (before a retag) is replaced as
    stale for a pinned call, never handed out; a miss starts the call's own
    container from the digest (docs/images.md)."""
    factory, metrics = FakeFactory(), FakePoolMetrics()
    limits = PoolLimits(size=1, max_classes=1, max_starting=1, max_idle_s=600, class_ttl_s=600, check_interval_s=600)
    pool = WarmPool(limits, factory, metrics)

    async def scenario() -> None:
        pool.want(CLS)
        await pool.maintain()
        await _until(lambda: pool.idle == 1)
        claim = await pool.claim(CLS, "sha256:bb")
        assert claim.sandbox is None
        assert metrics.replacements == ["stale"]
        await _until(lambda: factory.running == [])
        await pool.maintain()
        await _until(lambda: pool.idle == 1)
        claim = await pool.claim(CLS, "sha256:aa")
        assert claim.sandbox is not None
        assert claim.sandbox.image_id == "sha256:aa"
        await pool.close()

    asyncio.run(scenario())


def test_a_session_of_another_digest_is_drained_and_started_from_the_pin() -> None:
    factory, addresses = FakeFactory(), FakeAddresses()
    metrics = FakeSessionMetrics()
    table, _ = _table(factory, addresses, metrics=metrics)
    alice = SessionKey("alice", "s1", CLS)

    async def scenario() -> None:
        first = await table.acquire(alice, 60, 60, "sha256:aa")
        table.release(first.session)
        assert first.session.sandbox.image_id == "sha256:aa"
        # The same digest: the same sandbox.
        again = await table.acquire(alice, 60, 60, "sha256:aa")
        table.release(again.session)
        assert again.session is first.session
        # The pin moved: that sandbox ends, one of the new digest starts.
        moved = await table.acquire(alice, 60, 60, "sha256:bb")
        table.release(moved.session)
        assert moved.started
        assert moved.session.sandbox.image_id == "sha256:bb"
        assert metrics.ended == ["drained"]
        assert factory.running == [moved.session.sandbox.container_id]
        await table.close()

    asyncio.run(scenario())
