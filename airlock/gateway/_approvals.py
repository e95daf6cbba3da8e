"""Approvals: calls the policy asked a human about -- no grpc in here.

When the decision for an Invoke says ``ask`` (airlock.approvals), the core
(_core.py) hands it to :class:`Approvals`: a granted approval bound to the
exact same call is used up and the call runs once; otherwise the call is
held as a pending approval and the caller is answered ``approval_pending``
with its id. Approvers decide through ApprovalService (_server.py, a thin
servicer over the methods here). An approval is bound to the principal,
session, tool, item type, the SHA-256 of the raw arguments, the SHA-256 of
the requested limits and the policy revision that asked; it is single-use
and expires ``ttl_s`` after it was requested. Approvers are shown the raw
arguments, never a masked view. Every change is an audit event in the
gateway's chain (approval_requested, _granted, _denied, _expired, _used),
written before the change is made.

Pending approvals live in this process's memory: each gateway replica holds
its own (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from airlock.common.wire import Limits
from airlock.gateway._audit import SCHEMA_VERSION
from airlock.gateway._errors import AuditError, ForbiddenError, GatewayError
from airlock.gateway._input import FIELD_CAPS, cut, now
from airlock.gateway._metrics import APPROVAL_EVENTS, VERSION, GatewayMetrics
from airlock.gateway._model import CallInput, Decision, Principal, Reason
from airlock.v1 import audit_pb2, call_pb2

State = Literal["pending", "granted", "denied", "expired", "used"]
STATES: tuple[State, ...] = ("pending", "granted", "denied", "expired", "used")
#: The audit kinds (and the metric's closed label set, without the prefix).
EVENTS = APPROVAL_EVENTS
#: Defaults of gateway.yaml's approvals section.
DEFAULT_TTL_S = 900.0
DEFAULT_MAX_PENDING_PER_PRINCIPAL = 100
#: Decided, expired and used approvals kept for `ls --all` and `show`.
DEFAULT_KEEP_FINISHED = 1000
MAX_NOTE_CHARS = 1024

log = logging.getLogger(__name__)


class ApprovalError(GatewayError):
    """An approval operation that cannot be done; ``code`` says why."""


@dataclass(frozen=True)
class Binding:
    """What an approval is valid for: the exact call (everything of it but
    its call_id), asked under one policy revision."""

    principal: str
    session_id: str
    tool: str
    item_type: str
    arguments_sha256: str
    policy_revision: str
    #: SHA-256 of the requested limits as canonical JSON (limits_json).
    requested_limits_sha256: str = ""


def limits_json(limits: Limits | None) -> str:
    """The call's requested limits as canonical JSON ("null" for none)."""
    return json.dumps(asdict(limits) if limits is not None else None, sort_keys=True, separators=(",", ":"))


def binding_for(inp: CallInput, decision: Decision) -> Binding:
    assert inp.principal is not None
    return Binding(
        principal=inp.principal.id,
        session_id=inp.call.session_id,
        tool=inp.call.tool,
        item_type=inp.call.item_type,
        arguments_sha256=hashlib.sha256(inp.call.arguments.encode()).hexdigest(),
        policy_revision=decision.policy_revision,
        requested_limits_sha256=hashlib.sha256(limits_json(inp.call.requested_limits).encode()).hexdigest(),
    )


@dataclass(frozen=True)
class Approval:
    """One approval as the store holds it (times are Unix seconds)."""

    id: str
    binding: Binding
    call_id: str
    decision_id: str
    reasons: tuple[Reason, ...]
    created_at: float
    expires_at: float
    state: State = "pending"
    approver: str = ""
    note: str = ""
    decided_at: float = 0.0
    #: The call's raw arguments, exactly as sent (what the approver is
    #: shown, unmasked: its SHA-256 is the binding's).
    arguments: str = field(default="", repr=False)
    #: The requested limits as canonical JSON (the binding hashes it).
    requested_limits: str = "null"
    #: Denies in shadow mode on the asked call, shown to the approver.
    shadow: tuple[Reason, ...] = ()


class ApprovalStore:
    """The approvals of this gateway, in memory. Synchronous and
    single-threaded (the event loop's); ``clock`` is injectable for tests.

    Only :meth:`Approvals.expire` (the sweep) turns an approval ``expired``,
    once its event is written; until then one past its time is merely
    unusable: never taken, found again or decided."""

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_pending_per_principal: int = DEFAULT_MAX_PENDING_PER_PRINCIPAL,
        keep_finished: int = DEFAULT_KEEP_FINISHED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self._max_pending = max_pending_per_principal
        self._keep = keep_finished
        self._clock = clock
        self._items: dict[str, Approval] = {}
        self._decided: dict[str, asyncio.Event] = {}

    def live(self, a: Approval) -> bool:
        return self._clock() < a.expires_at

    def due(self) -> list[Approval]:
        """Pending and granted approvals past their time, owed an approval_expired event."""
        return [a for a in self._items.values() if a.state in ("pending", "granted") and not self.live(a)]

    def forget(self) -> None:
        """Forgets the oldest finished approvals beyond ``keep_finished``."""
        finished = [a for a in self._items.values() if a.state not in ("pending", "granted")]
        for a in sorted(finished, key=lambda a: a.created_at)[: max(len(finished) - self._keep, 0)]:
            del self._items[a.id]
            self._decided.pop(a.id, None)

    def take(self, binding: Binding) -> Approval | None:
        """The granted approval for exactly this call, now used; None when there is none."""
        for a in self._items.values():
            if a.state == "granted" and a.binding == binding and self.live(a):
                return self._set(replace(a, state="used"))
        return None

    def request(
        self,
        binding: Binding,
        *,
        call_id: str,
        decision_id: str,
        reasons: tuple[Reason, ...],
        arguments: str = "",
        requested_limits: str = "null",
        shadow: tuple[Reason, ...] = (),
    ) -> tuple[Approval, bool]:
        """The pending approval for this call: the one already waiting (a
        retry before anyone decided), or a new one (True). Raises
        ApprovalError(approvals_full) over the principal's cap."""
        for a in self._items.values():
            if a.state == "pending" and a.binding == binding and self.live(a):
                return a, False
        who = binding.principal
        pending = sum(
            1 for a in self._items.values() if a.state == "pending" and a.binding.principal == who and self.live(a)
        )
        if pending >= self._max_pending:
            raise ApprovalError(
                f"principal {binding.principal!r} already has {pending} calls awaiting approval", code="approvals_full"
            )
        t = self._clock()
        approval = Approval(
            id=f"apr_{secrets.token_hex(16)}",
            binding=binding,
            call_id=call_id,
            decision_id=decision_id,
            reasons=reasons,
            created_at=t,
            expires_at=t + self.ttl_s,
            arguments=arguments,
            requested_limits=requested_limits,
            shadow=shadow,
        )
        self._decided[approval.id] = asyncio.Event()
        return self._set(approval), True

    def decided(self, approval_id: str, approver: Principal, *, grant: bool, note: str = "") -> Approval:
        """An approver's yes or no on a pending approval, as it would be:
        nothing changes until :meth:`commit` (after its event is written).
        Only the approver role may, and never on a call of its own."""
        if "approver" not in approver.roles:
            raise ForbiddenError(f"principal {approver.id!r} does not have the approver role")
        if len(note) > MAX_NOTE_CHARS:
            raise ApprovalError(f"the note is over {MAX_NOTE_CHARS} characters", code="note_too_long")
        a = self.get(approval_id)
        if a.binding.principal == approver.id:
            raise ForbiddenError(f"principal {approver.id!r} cannot decide an approval of its own call")
        if a.state != "pending":
            raise ApprovalError(f"approval {approval_id} is {a.state}, not pending", code="approval_not_pending")
        if not self.live(a):
            raise ApprovalError(f"approval {approval_id} has expired", code="approval_not_pending")
        state: State = "granted" if grant else "denied"
        return replace(a, state=state, approver=approver.id, note=note, decided_at=self._clock())

    def commit(self, a: Approval, *, was: State) -> bool:
        """Sets ``a`` if the approval is still held and still ``was``."""
        current = self._items.get(a.id)
        if current is None or current.state != was:
            return False
        self._set(a)
        return True

    def get(self, approval_id: str) -> Approval:
        a = self._items.get(approval_id)
        if a is None:
            raise ApprovalError(f"no approval {approval_id!r} on this gateway", code="approval_not_found")
        return a

    def listed(self, *, everything: bool = False, hidden: Collection[str] = ()) -> list[Approval]:
        found = [a for a in self._items.values() if (everything or a.state == "pending") and a.id not in hidden]
        return sorted(found, key=lambda a: (a.state != "pending", a.created_at))

    def pending(self) -> int:
        return sum(1 for a in self._items.values() if a.state == "pending" and self.live(a))

    async def wait(self, approval_id: str, timeout_s: float) -> Approval | None:
        """Waits up to ``timeout_s`` for an approver's decision; the
        approval as it then is (None if it was dropped or forgotten)."""
        event = self._decided.get(approval_id)
        if event is not None and timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
        return self._items.get(approval_id)

    def restore(self, a: Approval) -> None:
        """Puts back an approval taken for a call that then did not run."""
        if a.id in self._items:
            self._items[a.id] = a

    def drop(self, approval_id: str) -> None:
        """Forgets an approval whose request could not be recorded."""
        self._items.pop(approval_id, None)
        event = self._decided.pop(approval_id, None)
        if event is not None:
            event.set()

    def _set(self, a: Approval) -> Approval:
        self._items[a.id] = a
        if a.state != "pending":
            event = self._decided.get(a.id)
            if event is not None:
                event.set()
        return a


class Approvals:
    """The store with its audit events and metrics: what the core and
    ApprovalService call. ``write`` makes an event durable (raises
    AuditError). Nothing changes state before its event is durable, except
    taking a granted approval for a call (undone when its records fail)."""

    def __init__(
        self,
        store: ApprovalStore,
        write: Callable[[audit_pb2.AuditEvent], Awaitable[None]],
        metrics: GatewayMetrics,
    ) -> None:
        self.store = store
        self._write = write
        self._metrics = metrics
        #: Decisions and expiries: one write-then-commit at a time, so two
        #: approvers (or an approver and the sweep) cannot both change one.
        self._lock = asyncio.Lock()
        #: Approvals whose approval_requested is not durable yet: no
        #: approver sees or decides them before it is.
        self._announcing: set[str] = set()
        metrics.approvals_pending.set_function(lambda: float(store.pending()))

    # -- the Invoke path (the core) ----------------------------------------------

    def resolve(self, inp: CallInput, decision: Decision) -> Decision:
        """An ask on Invoke: allowed on a granted approval for exactly this
        call (used up), or held as a pending approval."""
        binding = binding_for(inp, decision)
        used = self.store.take(binding)
        if used is not None:
            why = f"approved by {used.approver!r} (approval {used.id})"
            return replace(
                decision,
                allowed=True,
                ask=False,
                refusal="none",
                reasons=(Reason("approval_granted", why),),
                approval=used,
                approval_event="used",
            )
        asked = decision.reasons
        try:
            approval, created = self.store.request(
                binding,
                call_id=inp.call.call_id,
                decision_id=decision.decision_id,
                reasons=asked,
                arguments=inp.call.arguments,
                requested_limits=limits_json(inp.call.requested_limits),
                shadow=decision.shadow,
            )
        except ApprovalError as exc:
            return replace(
                decision, refusal="resource_exhausted", reasons=(Reason(exc.code, str(exc)), *asked), tool_entry=None
            )
        if created:
            self._announcing.add(approval.id)
        why = (
            f"the call awaits approval {approval.id} (expires {rfc3339(approval.expires_at)}); "
            "retry the exact same call once an approver has approved it"
        )
        return replace(
            decision,
            refusal="failed_precondition",
            reasons=(Reason("approval_pending", why), *asked),
            tool_entry=None,
            approval=approval,
            approval_event="requested" if created else "",
        )

    async def recorded(self, decision: Decision) -> Decision:
        """The approval's event, after the decision's own (it names it).
        Nothing holds or runs without both records: when either fails, the
        approval is dropped (requested) or put back (used), and the call is
        refused with audit_failed."""
        approval = decision.approval
        what = decision.approval_event
        if not isinstance(approval, Approval) or not what:
            return decision
        try:
            # The decision was recorded as made, or it was turned into a refusal.
            if decision.refusal == ("none" if what == "used" else "failed_precondition"):
                await self._event(what, approval, approval.binding.principal, decision_id=decision.decision_id)
                return decision
        except AuditError as exc:
            log.exception("approval_%s for %s was not written", what, decision.decision_id)
            decision = replace(
                decision, allowed=False, refusal="unavailable", reasons=(Reason(exc.code, str(exc)),), tool_entry=None
            )
        finally:
            self._announcing.discard(approval.id)
        if what == "used":
            self.store.restore(replace(approval, state="granted"))
        else:
            self.store.drop(approval.id)
        return replace(decision, ask=False, approval=None, approval_event="")

    async def wait(self, approval_id: str, timeout_s: float) -> bool:
        """Whether an approver granted it within ``timeout_s``."""
        found = await self.store.wait(approval_id, timeout_s)
        return found is not None and found.state == "granted"

    # -- ApprovalService ---------------------------------------------------------

    async def listed(self, viewer: Principal, *, everything: bool) -> list[Approval]:
        _may_view(viewer)
        await self._expire_quietly()
        return self.store.listed(everything=everything, hidden=self._announcing)

    async def shown(self, viewer: Principal, approval_id: str) -> Approval:
        """The approval with its call's exact raw arguments (never masked:
        the approver must see what will run, and the arguments' SHA-256)."""
        _may_view(viewer)
        await self._expire_quietly()
        if approval_id in self._announcing:
            raise ApprovalError(f"no approval {approval_id!r} on this gateway", code="approval_not_found")
        return self.store.get(approval_id)

    async def decide(self, approver: Principal, approval_id: str, *, grant: bool, note: str) -> Approval:
        """Records the approver's decision, then makes it so: a failed write
        leaves the approval pending and raises AuditError (audit_failed)."""
        async with self._lock:
            if approval_id in self._announcing:
                raise ApprovalError(f"no approval {approval_id!r} on this gateway", code="approval_not_found")
            a = self.store.decided(approval_id, approver, grant=grant, note=note)
            await self._event(a.state, a, approver.id, decision_id=a.decision_id)
            if not self.store.commit(a, was="pending"):  # pragma: no cover - the lock and _announcing prevent it
                raise ApprovalError(f"approval {approval_id} changed while deciding", code="approval_not_pending")
        self._metrics.approval_decision_seconds.labels(a.state).observe(max(a.decided_at - a.created_at, 0.0))
        return a

    async def expire(self) -> None:
        """Writes approval_expired for each approval that ran out of time,
        then marks it expired: exactly one event each. Raises AuditError on
        a failed write (the sweep tries it again next round)."""
        async with self._lock:
            for a in self.store.due():
                gone = replace(a, state="expired")
                await self._event("expired", gone, "", decision_id=a.decision_id)
                self.store.commit(gone, was=a.state)
            self.store.forget()

    async def _expire_quietly(self) -> None:
        try:
            await self.expire()
        except AuditError:
            log.exception("approval_expired was not written; the sweep tries again")

    async def _event(self, what: str, a: Approval, actor: str, *, decision_id: str) -> None:
        await self._write(approval_event(f"approval_{what}", a, actor, decision_id=decision_id))
        self._metrics.approvals.labels(what).inc()


def _may_view(viewer: Principal) -> None:
    if not {"approver", "operator"} & set(viewer.roles):
        raise ForbiddenError(f"principal {viewer.id!r} has neither the approver nor the operator role")


def approval_event(kind: str, a: Approval, actor: str, *, decision_id: str) -> audit_pb2.AuditEvent:
    b = a.binding
    return audit_pb2.AuditEvent(
        labels={"component": "gateway", "version": VERSION},
        schema_version=SCHEMA_VERSION,
        kind=kind,
        timestamp=now(),
        decision_id=decision_id,
        principal=actor,
        session_id=cut(b.session_id, FIELD_CAPS["session_id"]),
        tool=cut(b.tool, FIELD_CAPS["tool"]),
        item_type=b.item_type,
        call_id=cut(a.call_id, FIELD_CAPS["call_id"]),
        policy_revision=b.policy_revision,
        reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in a.reasons],
        approval=approval_to_audit(a),
    )


def approval_to_audit(a: Approval) -> audit_pb2.AuditApproval:
    b = a.binding
    return audit_pb2.AuditApproval(
        id=a.id,
        state=a.state,
        principal=b.principal,
        session_id=cut(b.session_id, FIELD_CAPS["session_id"]),
        tool=cut(b.tool, FIELD_CAPS["tool"]),
        item_type=b.item_type,
        arguments_sha256=b.arguments_sha256,
        policy_revision=b.policy_revision,
        requested_decision_id=a.decision_id,
        approver=a.approver,
        note=a.note,
        expires_at=rfc3339(a.expires_at),
        decision_ms=round((a.decided_at - a.created_at) * 1000) if a.decided_at else 0,
        requested_limits_sha256=b.requested_limits_sha256,
    )


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def sweep(approvals: Approvals, interval_s: float, stop: asyncio.Event) -> None:
    """Expires approvals on time even when nobody looks (their events and
    the pending gauge stay current)."""
    while not stop.is_set():
        # A failed write is counted by the writer; tried again next round.
        with contextlib.suppress(GatewayError):
            await approvals.expire()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


__all__ = [
    "EVENTS",
    "STATES",
    "Approval",
    "ApprovalError",
    "ApprovalStore",
    "Approvals",
    "Binding",
    "approval_event",
    "binding_for",
    "limits_json",
    "sweep",
]
