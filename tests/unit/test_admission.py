"""gateway._admission and gateway._budget: one principal cannot hold what
others need, and budgets are per principal with reservations."""

from __future__ import annotations

import asyncio

import pytest

from airlock.gateway._admission import FairSlots, InFlight, SlotTimeoutError
from airlock.gateway._budget import CallCounters


def test_in_flight_cap_is_per_principal() -> None:
    cap = InFlight(2)
    assert cap.try_enter("a")
    assert cap.try_enter("a")
    assert not cap.try_enter("a")
    assert cap.try_enter("b"), "another principal is not affected"
    cap.leave("a")
    assert cap.try_enter("a")


def test_a_principal_holds_at_most_its_share() -> None:
    async def scenario() -> list[str]:
        slots = FairSlots(capacity=4, per_principal=2)
        order: list[str] = []
        release = asyncio.Event()

        async def hold(who: str) -> None:
            async with slots.slot(who):
                order.append(who)
                await release.wait()

        tasks = [asyncio.create_task(hold("flood")) for _ in range(6)]
        await asyncio.sleep(0.01)
        assert slots.used == 2, "the flooding principal is capped at its share"
        other = asyncio.create_task(hold("polite"))
        await asyncio.sleep(0.01)
        assert order.count("polite") == 1, "a second principal gets a free slot at once"
        release.set()
        await asyncio.gather(*tasks, other)
        return order

    order = asyncio.run(scenario())
    assert order.count("flood") == 6


def test_a_freed_slot_goes_to_the_principal_holding_fewest() -> None:
    async def scenario() -> list[str]:
        slots = FairSlots(capacity=2, per_principal=2)
        granted: list[str] = []
        gates = {name: asyncio.Event() for name in ("a1", "a2", "a3", "b1")}

        async def hold(who: str, tag: str) -> None:
            async with slots.slot(who):
                granted.append(tag)
                await gates[tag].wait()

        a1 = asyncio.create_task(hold("a", "a1"))
        a2 = asyncio.create_task(hold("a", "a2"))
        await asyncio.sleep(0.01)
        a3 = asyncio.create_task(hold("a", "a3"))  # waits first
        await asyncio.sleep(0.01)
        b1 = asyncio.create_task(hold("b", "b1"))  # waits second, but holds nothing
        await asyncio.sleep(0.01)
        gates["a1"].set()
        await asyncio.sleep(0.01)
        for gate in gates.values():
            gate.set()
        await asyncio.gather(a1, a2, a3, b1)
        return granted

    assert asyncio.run(scenario()) == ["a1", "a2", "b1", "a3"]


def test_waiting_for_a_slot_times_out_and_leaves_no_trace() -> None:
    async def scenario() -> None:
        slots = FairSlots(capacity=1, per_principal=1)
        async with slots.slot("a"):
            with pytest.raises(SlotTimeoutError):
                async with slots.slot("b", timeout=0.05):
                    pass
        assert slots.used == 0
        async with slots.slot("b", timeout=0.05):
            assert slots.used == 1

    asyncio.run(scenario())


def test_a_cancelled_waiter_does_not_leak_a_slot() -> None:
    async def scenario() -> None:
        slots = FairSlots(capacity=1, per_principal=1)
        async with slots.slot("a"):
            waiter = asyncio.create_task(slots._acquire("b", None))
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert slots.used == 0

    asyncio.run(scenario())


# -- budgets -------------------------------------------------------------------


def _counts(c: CallCounters, principal: str, session: str, tool: str = "python") -> dict[str, int]:
    return asyncio.run(c.snapshot(principal, session, tool))


def test_sessions_are_scoped_by_principal() -> None:
    """Two principals sending the same session string never share a count."""
    c = CallCounters()
    for _ in range(3):
        c.reserve_now("alice", "shared", "python").keep()
    assert _counts(c, "alice", "shared")["session_calls"] == 3
    assert _counts(c, "mallory", "shared")["session_calls"] == 0


def test_a_fresh_session_per_call_does_not_escape_the_principal_counter() -> None:
    c = CallCounters()
    for i in range(5):
        c.reserve_now("alice", f"s{i}", "python").keep()
    counts = _counts(c, "alice", "s-new")
    assert counts["session_calls"] == 0
    assert counts["principal_calls"] == 5
    assert counts["principal_tool_calls"] == 5


def test_parallel_calls_see_each_others_reservations() -> None:
    c = CallCounters()
    seen = [c.reserve_now("alice", "s", "python").counts["principal_calls"] for _ in range(4)]
    assert seen == [0, 1, 2, 3], "each reservation counts the ones before it"


def test_a_released_reservation_does_not_count() -> None:
    c = CallCounters()
    r = c.reserve_now("alice", "s", "python")
    r.release()
    r.release()  # idempotent
    assert _counts(c, "alice", "s")["principal_calls"] == 0
    kept = c.reserve_now("alice", "s", "python")
    kept.keep()
    kept.release()  # after keep, release does nothing
    assert _counts(c, "alice", "s")["principal_calls"] == 1


def test_counts_expire_with_the_window() -> None:
    now = [1000.0]
    c = CallCounters(window_seconds=60, clock=lambda: now[0])
    c.reserve_now("alice", "s", "python").keep()
    now[0] += 61
    assert _counts(c, "alice", "s")["principal_calls"] == 0
