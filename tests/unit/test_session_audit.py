"""Session audit events are never silently dropped: the executor's buffer
keeps its loss count until it was sent, and the gateway's watcher retries
audit writes until one lands, closes sessions a new snapshot no longer
lists, and restarts itself after any failure. Fakes only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airlock.common.wire import SessionInfo
from airlock.executor.sandboxes.events import EventsLost, SessionEvent, SessionEvents
from airlock.gateway import _sessions
from airlock.gateway._errors import AuditError, ExecutorError
from airlock.gateway._events import session_event
from airlock.gateway._sessions import (
    EXECUTOR_LOST,
    Ended,
    SandboxUpdate,
    SessionService,
    SessionView,
    Snapshot,
    Started,
)
from airlock.v1 import audit_pb2


def _info(sandbox_id: str) -> SessionInfo:
    return SessionInfo(sandbox_id=sandbox_id, principal="alice", session_id="s1", image="img")


# -- the executor's buffer ------------------------------------------------------


def _overflowed() -> SessionEvents:
    events = SessionEvents(capacity=1)
    for name in ("a", "b", "c"):
        events.publish(SessionEvent("started", _info(name)))
    return events


def test_a_loss_count_whose_send_broke_is_sent_again() -> None:
    async def scenario() -> list[Any]:
        events = _overflowed()
        first = events.drain()
        sent = await anext(first)
        await first.aclose()  # the stream broke while the count was on its way
        second = events.drain()
        return [sent, await anext(second), await anext(second)]

    sent, again, then = asyncio.run(scenario())
    assert sent == EventsLost(2)
    assert again == EventsLost(2)
    assert isinstance(then, SessionEvent)
    assert then.session.sandbox_id == "c"


def test_a_loss_count_sent_is_not_sent_twice() -> None:
    async def scenario() -> list[Any]:
        events = _overflowed()
        drain = events.drain()
        return [await anext(drain), await anext(drain)]

    lost, event = asyncio.run(scenario())
    assert lost == EventsLost(2)
    assert isinstance(event, SessionEvent)


def test_losses_while_two_consumers_overlap_are_all_counted() -> None:
    async def scenario() -> list[Any]:
        events = _overflowed()
        old = events.drain()
        assert await anext(old) == EventsLost(2)  # old consumer: sent, not yet confirmed
        new = events.drain()
        assert await anext(new) == EventsLost(2)  # the newer one reports it too
        events.publish(SessionEvent("started", _info("d")))  # one more dropped ("c")
        with pytest.raises(StopAsyncIteration):
            await anext(old)  # confirms its send, then sees it was replaced
        return [await anext(new), await anext(new)]

    lost, event = asyncio.run(scenario())
    assert lost == EventsLost(1)
    assert isinstance(event, SessionEvent)
    assert event.session.sandbox_id == "d"


# -- the gateway's watcher ------------------------------------------------------


class FakeSource:
    """Each connection plays the next script: updates, then an exception to
    raise (or None: the stream then stays open, idle)."""

    def __init__(self, *scripts: tuple[list[SandboxUpdate], BaseException | None]) -> None:
        self._scripts = list(scripts)
        self.connections = 0

    async def watch_sandboxes(self) -> AsyncIterator[SandboxUpdate]:
        self.connections += 1
        if not self._scripts:
            await asyncio.Event().wait()
        updates, error = self._scripts.pop(0)
        for update in updates:
            yield update
        if error is not None:
            raise error
        await asyncio.Event().wait()

    async def list_sandboxes(self, principal: str) -> list[SessionInfo]:
        return []

    async def end_sandboxes(self, *, sandbox_id: str, principal: str, session_id: str) -> list[SessionInfo]:
        return []


class FakeAudit:
    """Writes fail while ``failing(event)`` says so."""

    def __init__(self, failing: Callable[[audit_pb2.AuditEvent], bool] = lambda _e: False) -> None:
        self.failing = failing
        self.written: list[audit_pb2.AuditEvent] = []
        self.attempts = 0

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        self.attempts += 1
        if self.failing(event):
            raise AuditError("disk full")
        self.written.append(event)

    def kinds(self) -> list[tuple[str, str, str]]:
        return [(e.kind, e.session.sandbox_id, e.reasons[0].code) for e in self.written]


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sessions, "BACKOFF_S", (0.0, 0.001))


def _run(service: SessionService, until: Callable[[], bool]) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(service.watch())
        try:
            for _ in range(2000):
                if until() or task.done():
                    break
                await asyncio.sleep(0.001)
            assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


def test_a_session_event_is_retried_until_the_audit_log_takes_it() -> None:
    """It used to be given up (and only logged) after ~9 s of failures."""
    audit = FakeAudit(lambda _e: audit.attempts <= 20)
    source = FakeSource(([Snapshot(()), Started(_info("a"))], None))
    service = SessionService(source, SessionView(), audit.write, session_event)
    _run(service, lambda: ("session_started", "a", "session_started") in audit.kinds())
    assert audit.attempts > 20
    # A loss record may precede it (the sink recovered just for that one).
    assert audit.kinds()[-1] == ("session_started", "a", "session_started")


def test_an_event_the_sink_never_takes_is_recorded_as_lost() -> None:
    """A poison event must not hold up the stream, nor vanish."""
    audit = FakeAudit(lambda e: e.kind == "session_ended")
    source = FakeSource(([Snapshot(()), Ended(_info("a"), "idle"), Started(_info("b"))], None))
    service = SessionService(source, SessionView(), audit.write, session_event)
    _run(service, lambda: len(audit.written) >= 2)
    lost, started = audit.written
    assert lost.kind == "session_events_lost"
    assert "session_ended" in lost.reasons[0].message
    assert "'a'" in lost.reasons[0].message
    assert (started.kind, started.session.sandbox_id) == ("session_started", "b")


def test_an_event_that_cannot_be_built_is_recorded_as_lost() -> None:
    audit = FakeAudit()

    def make_event(event_id: str, **fields: Any) -> audit_pb2.AuditEvent:
        if fields["kind"] == "session_started":
            raise ValueError("bad field")
        return session_event(event_id, **fields)

    source = FakeSource(([Snapshot(()), Started(_info("a"))], None))
    service = SessionService(source, SessionView(), audit.write, make_event)
    _run(service, lambda: bool(audit.written))
    assert audit.written[0].kind == "session_events_lost"
    assert "ValueError" in audit.written[0].reasons[0].message


def test_sessions_a_new_snapshot_lacks_are_recorded_as_ended() -> None:
    """An executor restart: the log must not keep them open forever."""
    audit = FakeAudit()
    source = FakeSource(
        ([Snapshot((_info("a"), _info("b"))), Started(_info("c"))], ExecutorError("restarting")),
        ([Snapshot((_info("b"),))], None),
    )
    view = SessionView()
    service = SessionService(source, view, audit.write, session_event)
    _run(service, lambda: len(audit.written) >= 3)
    assert audit.kinds() == [
        ("session_started", "c", "session_started"),
        ("session_ended", "a", EXECUTOR_LOST),
        ("session_ended", "c", EXECUTOR_LOST),
    ]
    assert [s.sandbox_id for s in view.list()] == ["b"]


def test_a_session_known_only_from_a_run_result_is_not_closed_by_a_snapshot() -> None:
    """Its start is not in the log yet: the executor's own events follow."""
    audit = FakeAudit()
    source = FakeSource(([Snapshot(())], None))
    view = SessionView()
    view.replace_all((_info("run-only"),))
    service = SessionService(source, view, audit.write, session_event)
    _run(service, lambda: source.connections >= 1 and not view.list())
    assert audit.written == []


def test_the_watcher_survives_an_unexpected_error() -> None:
    """It used to die, leaving session_stream_up at 1 and nothing audited."""
    audit = FakeAudit()
    source = FakeSource(
        ([Snapshot(())], RuntimeError("bug")),
        ([Snapshot(()), Started(_info("a"))], None),
    )
    service = SessionService(source, SessionView(), audit.write, session_event)
    _run(service, lambda: bool(audit.written))
    assert source.connections == 2
    assert audit.kinds() == [("session_started", "a", "session_started")]


def test_the_stream_gauge_drops_when_the_watcher_fails() -> None:
    seen: list[bool] = []
    audit = FakeAudit()

    class Probe(FakeSource):
        async def watch_sandboxes(self) -> AsyncIterator[SandboxUpdate]:
            seen.append(service.connected)
            async for update in super().watch_sandboxes():
                yield update

    source = Probe(([Snapshot(())], RuntimeError("bug")), ([], None))
    service = SessionService(source, SessionView(), audit.write, session_event)
    _run(service, lambda: len(seen) >= 2)
    assert seen == [False, False]


def test_an_update_the_watcher_fails_on_is_recorded_as_lost() -> None:
    """Then it restarts, and the new snapshot resyncs the view."""
    audit = FakeAudit()
    failed: list[str] = []

    def on_update(kind: str) -> None:
        if kind == "started" and not failed:
            failed.append(kind)
            raise RuntimeError("bug")

    source = FakeSource(([Snapshot(()), Started(_info("a"))], None), ([Snapshot((_info("a"),))], None))
    service = SessionService(source, SessionView(), audit.write, session_event, on_update)
    _run(service, lambda: source.connections >= 2 and len(audit.written) >= 2)
    started, lost = audit.written
    assert started.kind == "session_started"
    assert lost.kind == "session_events_lost"
    assert "Started update" in lost.reasons[0].message
