"""Sessions at the gateway: the policy's session facts, the audit trail of
session sandboxes, and the ListSessions and EndSession operations. No grpc.

The executor owns session sandboxes and reports every start and end over
its WatchSandboxes stream. It cannot write the audit log, so the watcher
here records each as an event in the gateway's own hash chain, and keeps a
view of the live sandboxes for the policy's ``input.session`` facts. A
run's result updates the view too (its call count), so the facts are
current before the stream says anything. When the stream breaks, the
watcher reconnects; the executor sends a snapshot first, which replaces
the view, and then what it buffered meanwhile (or how many events it had
to drop, recorded as ``session_events_lost``). A sandbox the stream had
reported that the new snapshot lacks (the executor restarted, or it ended
while nobody listened) gets a ``session_ended`` of the gateway's own, cause
``executor_lost``, so the log never leaves it open.

No session event is given up: a write that fails is retried until it lands
(calls fail closed meanwhile, so few sandboxes come and go, and the
executor's bounded buffer counts what it must drop), and one the sink keeps
refusing is recorded as ``session_events_lost`` instead. The watcher
restarts after any failure of its own.

Who may see and end what: an agent its own sessions only; a principal with
the operator role everyone's. Ending is audited (``session_end``, naming
who asked) before the executor's own ``session_ended`` arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from airlock.common.wire import SandboxUse, SessionInfo
from airlock.gateway._errors import ExecutorError, ForbiddenError
from airlock.gateway._model import Principal
from airlock.v1 import audit_pb2

log = logging.getLogger("airlock.gateway.sessions")

#: Reconnect delays of the watcher, and retry delays of a session event the
#: audit log did not take: from the first to the longest.
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
#: Failed writes of one session event after which a minimal loss record is
#: tried in its place too (an event the sink cannot render would otherwise
#: hold up the stream for good). The event itself is still tried first.
FALLBACK_AFTER = 4
#: A session event still unwritten is logged as an error every this many tries.
LOG_EVERY = 12

#: The cause of a ``session_ended`` the gateway writes itself: the stream
#: had reported the sandbox and the executor's next snapshot lacks it. Not
#: one of the executor's causes (END_CAUSES in airlock/executor/sandboxes/
#: events.py: idle, lifetime, ended, shutdown, error, drained).
EXECUTOR_LOST = "executor_lost"
GATEWAY_END_CAUSES = (EXECUTOR_LOST,)


@dataclass(frozen=True)
class Snapshot:
    sessions: tuple[SessionInfo, ...]


@dataclass(frozen=True)
class Started:
    session: SessionInfo


@dataclass(frozen=True)
class Ended:
    session: SessionInfo
    cause: str


@dataclass(frozen=True)
class Lost:
    count: int


SandboxUpdate = Snapshot | Started | Ended | Lost


class SandboxSource(Protocol):
    """The executor's side of sessions (the executor seam's other half)."""

    def watch_sandboxes(self) -> AsyncIterator[SandboxUpdate]: ...
    async def list_sandboxes(self, principal: str) -> list[SessionInfo]: ...
    async def end_sandboxes(self, *, sandbox_id: str, principal: str, session_id: str) -> list[SessionInfo]: ...


class SessionView:
    """The live session sandboxes as last reported, by sandbox id."""

    def __init__(self) -> None:
        self._live: dict[str, SessionInfo] = {}

    def replace_all(self, sessions: tuple[SessionInfo, ...]) -> None:
        self._live = {s.sandbox_id: s for s in sessions}

    def started(self, info: SessionInfo) -> None:
        # A run result may have told us first, with a later call count.
        known = self._live.get(info.sandbox_id)
        self._live[info.sandbox_id] = info if known is None or known.calls < info.calls else known

    def ended(self, sandbox_id: str) -> None:
        self._live.pop(sandbox_id, None)

    def get(self, sandbox_id: str) -> SessionInfo | None:
        return self._live.get(sandbox_id)

    def used(self, principal: str, session_id: str, use: SandboxUse, image: str, runtime: str) -> None:
        """After a session call: its sandbox exists and has this many calls."""
        if not use.sandbox_id:
            return
        now_ms = round(time.time() * 1000)
        known = self._live.get(use.sandbox_id)
        if known is None:
            known = SessionInfo(
                sandbox_id=use.sandbox_id,
                principal=principal,
                session_id=session_id,
                image=image,
                runtime=runtime,
                container_id=use.container_id,
                started_unix_ms=now_ms,
                last_used_unix_ms=now_ms,
                calls=use.session_calls,
            )
        self._live[use.sandbox_id] = replace(known, calls=max(known.calls, use.session_calls), last_used_unix_ms=now_ms)

    def facts(self, principal: str, session_id: str) -> dict[str, Any]:
        """``input.session`` for the policy: this principal's session only."""
        mine = [
            s for s in self._live.values() if session_id and s.principal == principal and s.session_id == session_id
        ]
        now_ms = time.time() * 1000
        sandbox: dict[str, Any] = {"exists": bool(mine), "count": len(mine), "age_seconds": 0, "calls": 0}
        if mine:
            sandbox["age_seconds"] = round(max(now_ms - s.started_unix_ms for s in mine) / 1000)
            sandbox["calls"] = sum(s.calls for s in mine)
        return {"id": session_id, "sandbox": sandbox}

    def list(self, principal: str | None = None) -> list[SessionInfo]:
        return [s for s in self._live.values() if principal is None or s.principal == principal]


Write = Callable[[audit_pb2.AuditEvent], Awaitable[Any]]
MakeEvent = Callable[..., audit_pb2.AuditEvent]


class SessionService:
    """The watcher, and the operations the servicer calls."""

    def __init__(
        self,
        source: SandboxSource,
        view: SessionView,
        write: Write,
        make_event: MakeEvent,
        on_update: Callable[[str], None] = lambda _kind: None,
    ) -> None:
        self._source = source
        self._view = view
        self._write = write
        self._event = make_event
        self._on_update = on_update
        self.connected = False
        # What the stream reported live (snapshots and starts, less ends):
        # the sandboxes whose session_started the log holds, or that this
        # gateway saw in a snapshot. Run results alone do not count: their
        # start is still on its way.
        self._reported: dict[str, SessionInfo] = {}

    async def watch(self) -> None:
        """Forever: follow the executor's stream, reconnecting when it breaks
        and restarting after any failure of the watcher's own (logged): a
        dead watcher would leave sessions unaudited, unnoticed."""
        attempt = 0
        while True:
            followed = False
            try:
                followed = await self._follow()
            except ExecutorError as exc:  # the executor restarting, or away
                log.debug("session stream broke: %s", exc)
                followed = self.connected  # set by the first update it delivered
            except Exception:
                log.exception("the session watcher failed; restarting it")
            finally:
                self.connected = False
            # A stream that delivered resets the backoff; a watcher failing
            # again and again backs off to the longest delay.
            attempt = 0 if followed else attempt + 1
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])

    async def _follow(self) -> bool:
        """One connection, until it ends; whether it applied any update."""
        stream = self._source.watch_sandboxes()
        applied = False
        try:
            async for update in stream:
                self.connected = True
                try:
                    await self._apply(update)
                except Exception as exc:
                    # On record before the restart (whose snapshot resyncs
                    # the view): this update may not have been.
                    await self._record_lost(f"{type(update).__name__} update", f"the watcher failed ({exc!r:.200})")
                    raise
                applied = True
        finally:
            # Closed now, not when collected: its RPC ends before the next.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return applied

    async def _apply(self, update: SandboxUpdate) -> None:
        if isinstance(update, Snapshot):
            await self._snapshot(update)
            self._on_update("snapshot")
            return
        if isinstance(update, Started):
            self._view.started(update.session)
            self._reported[update.session.sandbox_id] = update.session
            await self._record("session_started", update.session, "session_started", "a session sandbox started")
        elif isinstance(update, Ended):
            self._view.ended(update.session.sandbox_id)
            why = f"the session sandbox ended: {update.cause}"
            await self._record("session_ended", update.session, update.cause, why)
            self._reported.pop(update.session.sandbox_id, None)
        else:
            await self._record(
                "session_events_lost",
                None,
                "session_events_lost",
                f"the executor dropped {update.count} session events while no gateway was listening",
            )
        self._on_update(type(update).__name__.lower())

    async def _snapshot(self, update: Snapshot) -> None:
        """Replaces the view; first ends, in the log, every reported sandbox
        the snapshot lacks. Each is dropped from the view only once recorded:
        a watcher stopped half-way finds the rest again next time."""
        present = {s.sandbox_id for s in update.sessions}
        for sandbox_id, reported in list(self._reported.items()):
            if sandbox_id in present:
                continue
            info = self._view.get(sandbox_id) or reported
            await self._record(
                "session_ended",
                info,
                EXECUTOR_LOST,
                "the executor no longer lists this session sandbox: it restarted, or the sandbox ended while the "
                "gateway was not listening (the executor's own session_ended may follow)",
            )
            self._reported.pop(sandbox_id, None)
            self._view.ended(sandbox_id)
        self._view.replace_all(update.sessions)
        self._reported = {s.sandbox_id: s for s in update.sessions}

    async def _record(self, kind: str, info: SessionInfo | None, code: str, message: str, principal: str = "") -> None:
        """Writes the event, retrying until it is written: never given up,
        since a lost write here would hide a sandbox. After FALLBACK_AFTER
        failures a minimal ``session_events_lost`` record is tried after each
        failed try of the event itself; if the sink takes that, the loss is
        on record and the stream moves on. Only cancellation (the gateway
        stopping) ends it unwritten, and that is logged."""
        what = f"{kind} event for {info.sandbox_id[:128]!r}" if info else f"{kind} event"
        try:
            event = self._event(
                str(uuid.uuid4()), kind=kind, session=info, code=code, message=message, principal=principal
            )
        except Exception as exc:
            log.exception("%s could not be built", what)
            event = self._lost_event(what, f"it could not be built ({type(exc).__name__})")
        fallback: audit_pb2.AuditEvent | None = None
        failures = 0
        try:
            while (error := await self._try(event)) is not None:
                failures += 1
                if failures >= FALLBACK_AFTER and event.kind != "session_events_lost":
                    fallback = fallback or self._lost_event(what, f"the audit log refused it {failures} times")
                    if await self._try(fallback) is None:
                        # The sink may just have recovered: the event itself
                        # gets one more try, so the loss record then has it
                        # following rather than standing for it.
                        if await self._try(event) is not None:
                            log.error("%s could not be written (%s); recorded as session_events_lost", what, error)
                        return
                if failures == 1 or failures % LOG_EVERY == 0:
                    log.error("%s not yet written after %d tries (%s); retrying until it is", what, failures, error)
                await asyncio.sleep(BACKOFF_S[min(failures - 1, len(BACKOFF_S) - 1)])
        except asyncio.CancelledError:
            if failures:
                log.error("the gateway is stopping: %s was never written", what)  # noqa: TRY400 - no traceback wanted
            raise

    async def _try(self, event: audit_pb2.AuditEvent) -> Exception | None:
        """One write; its failure (AuditError, counted and logged by the
        sink, or anything else) is returned for the caller to retry."""
        try:
            await self._write(event)
        except Exception as exc:  # noqa: BLE001 - returned, and retried
            return exc
        return None

    async def _record_lost(self, what: str, why: str) -> None:
        await self._record(
            "session_events_lost",
            None,
            "session_events_lost",
            f"the gateway could not record 1 session event, a {what}: {why}",
        )

    def _lost_event(self, what: str, why: str) -> audit_pb2.AuditEvent:
        return self._event(
            str(uuid.uuid4()),
            kind="session_events_lost",
            session=None,
            code="session_events_lost",
            message=f"the gateway could not record 1 session event, a {what}: {why} (unless that event follows)",
        )

    # -- operations ------------------------------------------------------------

    async def listed(self, principal: Principal, *, everyone: bool) -> list[SessionInfo]:
        if everyone and "operator" not in principal.roles:
            raise ForbiddenError("listing every principal's sessions needs the operator role")
        return await self._source.list_sandboxes("" if everyone else principal.id)

    async def end(self, principal: Principal, *, session_id: str, sandbox_id: str) -> list[SessionInfo]:
        """Ends one of the caller's sessions, or one sandbox by id (an
        operator's may be anyone's). Unknown ids end nothing: not an error."""
        if bool(session_id) == bool(sandbox_id):
            raise ValueError("give exactly one of session_id and sandbox_id")
        operator = "operator" in principal.roles
        if sandbox_id:
            owner = "" if operator else principal.id
            ended = await self._source.end_sandboxes(sandbox_id=sandbox_id, principal=owner, session_id="")
        else:
            ended = await self._source.end_sandboxes(sandbox_id="", principal=principal.id, session_id=session_id)
        for info in ended:
            self._view.ended(info.sandbox_id)
            # Its session_end is the log's end for it, should the executor's
            # own session_ended never arrive.
            self._reported.pop(info.sandbox_id, None)
            await self._record(
                "session_end", info, "ended", f"principal {principal.id!r} ended the sandbox", principal=principal.id
            )
        return ended
