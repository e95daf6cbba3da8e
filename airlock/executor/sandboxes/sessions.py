"""Session sandboxes: one container per (principal, session, class, network),
reused by that session's calls.

The key is the whole of what a container was made for: the principal (a
session id is never shared across principals, whatever id a caller sends),
the session id, the container class (image, runtime, memory, CPU, pids,
tmpfs, and a desktop's display size) and the network grant. A call whose decided limits or network
differ gets a sandbox of its own. An unknown or ended session id simply
starts a new sandbox.

Calls of one sandbox run one at a time (each ends with the sweep that
kills every process it left, so a parallel call would be killed with it);
a later call waits for the earlier one. A sandbox ends at its idle TTL
(time since its last call ended), at its max lifetime (checked between
calls; a call in progress finishes first), on request (EndSession, which
does not wait), when its container is found dead, changed or built from
something that has since changed, and at shutdown. Every start and end is
published for the gateway's audit log (events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from airlock.common.wire import SessionInfo
from airlock.executor._errors import RunRefused
from airlock.executor.sandboxes.containers import ContainerClass, Sandbox, check
from airlock.executor.sandboxes.events import EndCause, SessionEvent, SessionEvents
from airlock.executor.sandboxes.pool import WarmPool

log = logging.getLogger("airlock.executor.sessions")

_T = TypeVar("_T")


@dataclass(frozen=True)
class SessionKey:
    principal: str
    session_id: str
    cls: ContainerClass
    network: tuple[str, ...] = ()
    """() for no network; else ("egress", the allowlist..., "|", the allowed CIDRs...)."""


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int
    max_per_principal: int
    check_interval_s: float


class SessionFactory(Protocol):
    """Blocking calls, made from worker threads."""

    def start(self, cls: ContainerClass, kind: str, *, egress_address: str = "", image_id: str = "") -> Sandbox: ...
    def inspect(self, container_id: str) -> Mapping[str, Any] | None: ...
    def fingerprint(self, cls: ContainerClass) -> str: ...
    def remove(self, container_id: str) -> None: ...


class AddressBook(Protocol):
    """Fixed egress addresses: a session granted egress keeps one for its life."""

    def reserve(self, *, desktop: bool = False) -> str: ...
    def release(self, address: str) -> None: ...


class SessionMetrics(Protocol):
    def session_started(self) -> None: ...
    def session_ended(self, cause: EndCause) -> None: ...


@dataclass
class Session:
    key: SessionKey
    sandbox: Sandbox
    idle_ttl_s: float
    max_lifetime_s: float
    started: float
    last_used: float
    calls: int = 0
    busy: int = 0
    ended: str = ""
    """The end cause once ended; a caller that waited for the lock starts over."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    checked: float = 0.0

    @property
    def sandbox_id(self) -> str:
        return self.sandbox.sandbox_id

    def info(self, now: float) -> SessionInfo:
        wall = time.time()
        return SessionInfo(
            sandbox_id=self.sandbox.sandbox_id,
            principal=self.key.principal,
            session_id=self.key.session_id,
            image=self.key.cls.image,
            runtime=self.key.cls.runtime,
            container_id=self.sandbox.container_id,
            started_unix_ms=round(self.sandbox.created_unix * 1000),
            last_used_unix_ms=round((wall - (now - self.last_used)) * 1000),
            calls=self.calls,
            idle_ttl_ms=round(self.idle_ttl_s * 1000),
            max_lifetime_ms=round(self.max_lifetime_s * 1000),
            network="egress" if self.key.network else "none",
            pool_label=self.key.cls.label,
        )


@dataclass(frozen=True)
class Acquired:
    session: Session
    started: bool
    """A new sandbox was started for this call."""
    pool_hit: bool
    claim_ms: int


class SessionTable:
    def __init__(
        self,
        limits: SessionLimits,
        factory: SessionFactory,
        events: SessionEvents,
        metrics: SessionMetrics,
        *,
        pool: WarmPool | None = None,
        addresses: AddressBook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = limits
        self._factory = factory
        self._events = events
        self._metrics = metrics
        self._pool = pool
        self._addresses = addresses
        self._clock = clock
        self._live: dict[SessionKey, Session] = {}
        self._creating: dict[SessionKey, asyncio.Future[Session]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- calls ----------------------------------------------------------------

    async def acquire(self, key: SessionKey, idle_ttl_s: float, max_lifetime_s: float, image_id: str = "") -> Acquired:
        """The key's live sandbox, or a new one (a pool claim when there is no
        network, else a cold start). With ``image_id`` (a pinned call's
        digest) the sandbox is one created from that id: a live one of
        another id (the pin moved) ends as drained and a new one starts. The
        caller holds ``session.lock`` for its call and calls release() after.
        Raises RunRefused(session_limit)."""
        while True:
            session = self._live.get(key)
            if session is not None and not session.ended and image_id and session.sandbox.image_id != image_id:
                await self.end(session, "drained")
                continue
            if session is not None and not session.ended:
                session.busy += 1
                try:
                    cause = await self._still_good(session)
                except BaseException:
                    # A cancelled caller must not leave the session busy for
                    # good: upkeep never ends a busy session (idle, lifetime).
                    session.busy -= 1
                    raise
                if cause is None:
                    return Acquired(session, started=False, pool_hit=False, claim_ms=0)
                session.busy -= 1
                await self.end(session, cause)
                continue
            pending = self._creating.get(key)
            if pending is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
                continue
            return await self._create(key, idle_ttl_s, max_lifetime_s, image_id)

    def release(self, session: Session, *, ran: bool = True) -> None:
        session.busy -= 1
        if ran:
            session.calls += 1
        session.last_used = self._clock()
        if not session.busy and self._clock() - session.started >= session.max_lifetime_s:
            self._spawn(self.end(session, "lifetime"))

    async def _still_good(self, session: Session) -> EndCause | None:
        """The session's container as made and current; checked before each call."""

        def probe() -> tuple[Mapping[str, Any] | None, str]:
            return self._factory.inspect(session.sandbox.container_id), self._factory.fingerprint(session.key.cls)

        try:
            inspect, fingerprint = await asyncio.to_thread(probe)
        except Exception:
            log.warning("cannot check session sandbox %s", session.sandbox_id, exc_info=True)
            return "error"
        # ExecIDs may list a call of this session still being reaped; the
        # sweep prelude of the next exec covers leftovers, so only death,
        # changed configuration and staleness count here.
        quiet = {**inspect, "ExecIDs": None} if inspect is not None else None
        cause = check(session.sandbox, quiet, fingerprint, None)
        if cause == "stale":
            return "drained"
        return None if cause is None else "error"

    async def _create(self, key: SessionKey, idle_ttl_s: float, max_lifetime_s: float, image_id: str) -> Acquired:
        if self._closed:
            raise RunRefused("session_limit", "the executor is shutting down")
        mine = sum(1 for k in (*self._live, *self._creating) if k.principal == key.principal)
        total = len(self._live) + len(self._creating)
        if total >= self._limits.max_sessions:
            raise RunRefused("session_limit", f"this executor already has {total} live sessions (its maximum)")
        if mine >= self._limits.max_per_principal:
            raise RunRefused(
                "session_limit",
                f"principal {key.principal!r} already has {mine} live sessions (at most "
                f"{self._limits.max_per_principal})",
            )
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._creating[key] = future
        # The start runs in a task of its own: cancelling this call cannot stop
        # the worker thread that makes the container, so the task sees the
        # start through, and the key stays in _creating (counted against both
        # limits) until its container is either live or removed.
        start = self._spawn(self._start(key, image_id))
        try:
            sandbox, pool_hit, claim_ms = await asyncio.shield(start)
        except asyncio.CancelledError:
            self._spawn(self._abandon(key, future, start))
            raise
        except BaseException as exc:
            self._settle(key, future, exc)
            raise
        if self._closed:  # close() ended the live ones while this one started
            refused = RunRefused("session_limit", "the executor is shutting down")
            self._settle(key, future, refused)
            self._spawn(self._dispose(sandbox))
            raise refused
        now = self._clock()
        session = Session(key, sandbox, idle_ttl_s, max_lifetime_s, started=now, last_used=now, busy=1)
        self._live[key] = session
        self._creating.pop(key, None)
        future.set_result(session)
        self._metrics.session_started()
        self._events.publish(SessionEvent("started", session.info(self._clock())))
        log.info(
            "session sandbox %s started for %s/%s (%s)",
            sandbox.sandbox_id, key.principal, key.session_id, key.cls.label,
        )  # fmt: skip
        return Acquired(session, started=True, pool_hit=pool_hit, claim_ms=claim_ms)

    def _settle(self, key: SessionKey, future: asyncio.Future[Session], exc: BaseException) -> None:
        """A start that made no live session: its key stops counting, and
        whoever waits on it re-checks the table."""
        if self._creating.get(key) is future:
            del self._creating[key]
        future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
        future.exception()  # retrieved: waiters re-check the table

    async def _abandon(
        self, key: SessionKey, future: asyncio.Future[Session], start: asyncio.Task[tuple[Sandbox, bool, int]]
    ) -> None:
        """The call that started a sandbox was cancelled: once the start ended,
        its container is removed and only then its address released (the
        container holds the address until it is gone)."""
        try:
            sandbox, _, _ = await start
        except Exception:  # _start already released the address; nothing was made
            log.debug("abandoned session start for %s/%s failed", key.principal, key.session_id, exc_info=True)
        else:
            await self._dispose(sandbox)
        finally:
            self._settle(key, future, RuntimeError("the call that started this sandbox was cancelled"))

    async def _dispose(self, sandbox: Sandbox) -> None:
        """Removes a container no session owns, then releases its address."""
        try:
            await asyncio.to_thread(self._factory.remove, sandbox.container_id)
        except Exception:  # the reaper and the next start-up sweep remain
            log.warning("cannot remove session sandbox %s", sandbox.sandbox_id, exc_info=True)
        if sandbox.egress_address and self._addresses is not None:
            self._addresses.release(sandbox.egress_address)

    async def _start(self, key: SessionKey, image_id: str) -> tuple[Sandbox, bool, int]:
        # A desktop's keeper is not the pool's `sleep infinity`: it is always made fresh.
        if not key.network and not key.cls.desktop and self._pool is not None:
            claim = await self._pool.claim(key.cls, image_id)
            if claim.sandbox is not None:
                return claim.sandbox, True, claim.claim_ms
        t0 = time.monotonic()
        address = ""
        if key.network:
            if self._addresses is None:
                raise RunRefused("egress_unavailable", "egress was granted but this executor has no egress network")
            address = self._addresses.reserve(desktop=bool(key.cls.desktop))
        try:
            sandbox = await asyncio.to_thread(
                self._factory.start, key.cls, "session", egress_address=address, image_id=image_id
            )
        except Exception:
            # The start failed and its thread is done (factory.start removes
            # what it made). Not on cancellation: the thread may still be
            # attaching a container to the address.
            if address and self._addresses is not None:
                self._addresses.release(address)
            raise
        return sandbox, False, round((time.monotonic() - t0) * 1000)

    # -- ending ---------------------------------------------------------------

    async def end(self, session: Session, cause: EndCause) -> SessionInfo | None:
        """Ends it now (a call in progress is killed with its container)."""
        if session.ended:
            return None
        session.ended = cause
        if self._live.get(session.key) is session:
            del self._live[session.key]
        info = session.info(self._clock())
        # In a task of its own: a caller cancelled during the removal (an
        # EndSandboxes RPC that went away) must not skip the address release
        # or the ended event the audit log needs.
        await asyncio.shield(self._spawn(self._finish(session, cause, info)))
        return info

    async def _finish(self, session: Session, cause: EndCause, info: SessionInfo) -> None:
        await self._dispose(session.sandbox)
        self._metrics.session_ended(cause)
        self._events.publish(SessionEvent("ended", info, cause))
        log.info("session sandbox %s ended: %s", session.sandbox_id, cause)

    async def end_by_id(self, sandbox_id: str, principal: str | None = None) -> SessionInfo | None:
        """Ends one sandbox by id; with ``principal``, only one of that principal's."""
        for session in list(self._live.values()):
            if session.sandbox_id == sandbox_id and (principal is None or session.key.principal == principal):
                return await self.end(session, "ended")
        return None

    async def end_session(self, principal: str, session_id: str) -> list[SessionInfo]:
        """Ends every sandbox of one session of one principal."""
        ended = []
        for session in list(self._live.values()):
            if session.key.principal == principal and session.key.session_id == session_id:
                info = await self.end(session, "ended")
                if info is not None:
                    ended.append(info)
        return ended

    async def drain(self) -> int:
        """Ends the idle sandboxes whose build changed; busy ones are checked
        again before their next call."""
        count = 0
        for session in list(self._live.values()):
            if not session.busy and await self._still_good(session) == "drained":
                await self.end(session, "drained")
                count += 1
        return count

    def list(self, principal: str | None = None) -> list[SessionInfo]:
        now = self._clock()
        return [s.info(now) for s in self._live.values() if principal is None or s.key.principal == principal]

    def count(self) -> int:
        return len(self._live)

    # -- upkeep ---------------------------------------------------------------

    async def run(self) -> None:
        while not self._closed:
            try:
                await self.maintain()
            except Exception:  # one bad pass must not end the upkeep
                log.exception("session upkeep failed")
            await asyncio.sleep(1.0)

    async def maintain(self) -> None:
        now = self._clock()
        for session in list(self._live.values()):
            if session.busy or session.ended:
                continue
            if now - session.started >= session.max_lifetime_s:
                await self.end(session, "lifetime")
            elif now - session.last_used >= session.idle_ttl_s:
                await self.end(session, "idle")
            elif now - session.checked >= self._limits.check_interval_s:
                session.checked = now
                cause = await self._still_good(session)
                if cause is not None and not session.busy:
                    await self.end(session, cause)

    def _spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Runs ``work`` as a task close() waits for."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Ends every session (cause shutdown)."""
        self._closed = True
        await asyncio.gather(*(self.end(s, "shutdown") for s in list(self._live.values())), return_exceptions=True)
        # Until none is left: a start that ends now spawns its container's removal.
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
