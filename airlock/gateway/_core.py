"""The gateway's decision and invocation logic -- no grpc in here.

A decision is this table of checks, in order; each refusal has its own
reason code, and nothing is executed unless a well-formed policy decision
said allow and its audit event is durable:

    authenticated?                      unauthenticated
    principal under its rates           rate_limited (calls/s, argument bytes/s)
    principal under its in-flight cap   too_many_in_flight
    identifying fields present, capped  field_too_long, call_id_missing, ...
    not a hosted item                   item_type_hosted
    arguments within size               arguments_too_large
    arguments strict JSON               arguments_malformed
    a fairly shared decision slot       gateway_overloaded
    budget counted (reserved/read)      budget_unavailable (fail closed)
    policy asked                        policy_* (fail closed)
    answer well formed                  policy_malformed
    decided tool is our registry entry  policy_malformed
    arguments match the schema          arguments_invalid
    the policy's verdict                its own codes
    audit event durable                 audit_failed

Modules it orchestrates: _input (fields, arguments, policy input), _answer
(OPA's answer), _events (audit events), _budget (counters), _admission
(per-principal caps and fair shares).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import json
import logging
import mimetypes
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import IO, Any, Protocol

from airlock.common.wire import ArtifactLimits, InputFile, SandboxPlan, SkippedOutput
from airlock.gateway import _events
from airlock.gateway._admission import FairSlots, InFlight, RateLimits, SlotTimeoutError
from airlock.gateway._answer import parse_admission, parse_answer
from airlock.gateway._approvals import Approvals, ApprovalStore
from airlock.gateway._audit import AuditSink
from airlock.gateway._budget import CallCounters, CounterStore, Reservation
from airlock.gateway._errors import (
    FAIL_CLOSED_REASONS,
    AdmissionError,
    AuditError,
    BudgetError,
    ExecutorError,
    PolicyError,
)
from airlock.gateway._images import ImagePins
from airlock.gateway._input import (
    InputError,
    build_policy_input,
    check_fields,
    cut,
    now,
    parse_arguments,
    principal_doc,
    schema_errors,
)
from airlock.gateway._json import MalformedJSON
from airlock.gateway._json import loads as strict_loads
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import (
    ArtifactRef,
    CallInput,
    Decision,
    InputArtifact,
    InvokeResult,
    Observation,
    Observed,
    Principal,
    Reason,
    Refusal,
    RunOutcome,
    RunSpec,
)
from airlock.gateway._policy import PolicyEngine, PolicyResult
from airlock.gateway._registry import BUILTIN_TOOLS, HOSTED_ITEM_TYPES, PLACEHOLDER_RE, Registry
from airlock.gateway._sessions import SessionView
from airlock.gateway.artifacts import ArtifactError
from airlock.gateway.tooldefs import (
    DECISION_PATH as DEFINITIONS_PATH,
)
from airlock.gateway.tooldefs import (
    DEFINE_TOOL,
    DefinitionError,
    Resolved,
    ToolDefinitions,
    parse_definition,
    program,
)
from airlock.v1 import audit_pb2

log = logging.getLogger("airlock.gateway")
#: Items Observe records: the hosted tools' items, image generation, and a
#: shell_call of a hosted shell (the agent sends only those it did not run).
OBSERVABLE_ITEM_TYPES = HOSTED_ITEM_TYPES | {"image_generation_call", "shell_call"}
_OBSERVE_CAPS = {"item_type": 64, "item_id": 256, "tool": 128, "status": 64, "session_id": 256}
#: A dynamic tool's program travels as one argv string, which Linux caps at
#: 128 KiB (MAX_ARG_STRLEN); a call whose program would not fit is refused.
MAX_PROGRAM_BYTES = 120 * 1024
#: Definition refusals that are the gateway's storage failing, not the input.
_DEFINITION_UNAVAILABLE = frozenset({"artifact_store_unavailable", "tool_catalog_unavailable", "definition_corrupt"})


class Executor(Protocol):
    """The executor seam: run an allowed plan (with the files for its
    /inputs) and report its outcome (with what its /outputs held)."""

    async def run(self, plan: RunSpec, inputs: Sequence[InputFile] = ()) -> RunOutcome: ...


class StoredArtifact(Protocol):
    """What the artifacts seam returns for one artifact."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def media_type(self) -> str: ...


class Artifacts(Protocol):
    """The artifacts seam (airlock.gateway.artifacts.ArtifactAccess): each
    use is decided by the policy and audited there; a refusal raises an
    ArtifactError whose ``code`` is its reason."""

    async def open_inputs(
        self, principal: Principal, session: str, ids: Sequence[str], max_bytes: int | None = None
    ) -> Sequence[tuple[StoredArtifact, bytes]]:
        """Sizes are checked against ``max_bytes`` before any content is read."""
        ...

    async def save_output(
        self, principal: Principal, session: str, name: str, content: IO[bytes] | bytes, media_type: str = ""
    ) -> StoredArtifact: ...


@dataclass(frozen=True)
class CoreSettings:
    decision_path: str
    granted_tools_path: str
    max_arguments_bytes: int
    max_arguments_depth: int = 32
    #: Calls one principal may have in flight (any RPC); more are refused.
    max_in_flight_per_principal: int = 32
    #: Concurrent policy evaluations, and one principal's share of them.
    policy_concurrency: int = 16
    policy_per_principal: int = 8
    #: How long a call may wait for a policy slot before it is refused.
    policy_queue_timeout_s: float = 5.0
    #: Executor run slots the gateway hands out (the executor's
    #: max_concurrent_runs) and one principal's share of them.
    run_slots: int = 16
    run_slots_per_principal: int = 8
    run_queue_timeout_s: float = 60.0
    #: Unauthenticated calls recorded one event each per window; the rest
    #: are counted into one summary event per window.
    unauthenticated_records_per_window: int = 20
    unauthenticated_window_s: float = 10.0
    #: Per principal: calls and argument bytes per second, with bursts.
    calls_per_second: float = 5000.0
    calls_burst: int = 10_000
    argument_bytes_per_second: float = 2 * 1024 * 1024
    argument_bytes_burst: int = 16 * 1024 * 1024
    #: Approvals (gateway.yaml approvals): how long Invoke of an ask waits
    #: for an approver (0: answers approval_pending at once), how long an
    #: approval lives, and how many one principal may have pending.
    approval_wait_s: float = 0.0
    approval_ttl_s: float = 900.0
    approval_max_pending_per_principal: int = 100


class Gateway:
    """Decides and invokes tool calls."""

    def __init__(
        self,
        *,
        registry: Registry,
        policy: PolicyEngine,
        executor: Executor,
        audit: AuditSink,
        metrics: GatewayMetrics,
        settings: CoreSettings,
        counters: CounterStore | None = None,
        sessions: SessionView | None = None,
        artifacts: Artifacts | None = None,
        tool_definitions: ToolDefinitions | None = None,
        images: ImagePins | None = None,
    ) -> None:
        #: Calls the policy asked a human about (ApprovalService's too).
        self.approvals = Approvals(
            ApprovalStore(
                ttl_s=settings.approval_ttl_s,
                max_pending_per_principal=settings.approval_max_pending_per_principal,
            ),
            self._write,
            metrics,
        )
        #: Pinned image digests and scans (input.image; the run's digest).
        self._images = images
        #: Dynamic tools (define_tool); None: none can be defined or called.
        self._tooldefs = tool_definitions
        #: Actions allowed computer calls ran, per principal and session.
        self._computer_actions = ActionCounts()
        #: One define_tool at a time per owner (_define_serially).
        self._define_locks = KeyedLocks()
        #: One computer decision at a time per session, from reading its
        #: action count to adding the batch: concurrent calls cannot
        #: overshoot the session's action budget.
        self._action_locks = KeyedLocks()
        #: Where inputs come from and outputs go; None: no artifact store,
        #: so nothing is collected and a call naming inputs fails.
        self._artifacts = artifacts
        self._counters: CounterStore = counters or CallCounters()
        #: The live session sandboxes, for the policy's session facts.
        self._sessions = sessions or SessionView()
        self._registry = registry
        # The entries the gateway accepts from a decision: the current
        # registry's and, for a moment after a publish, the previous one's
        # (OPA activates a new bundle a second or two after we reload).
        self._known: list[Registry] = [registry]
        self._policy = policy
        self._executor = executor
        self._audit = audit
        self._metrics = metrics
        self._settings = settings
        self._in_flight = InFlight(settings.max_in_flight_per_principal)
        self._policy_slots = FairSlots(settings.policy_concurrency, settings.policy_per_principal)
        self._run_slots = FairSlots(settings.run_slots, settings.run_slots_per_principal)
        self._rates = RateLimits(
            settings.calls_per_second,
            settings.calls_burst,
            settings.argument_bytes_per_second,
            settings.argument_bytes_burst,
        )
        # Refusals that a flood can repeat at will (a bad token, a rate limit)
        # are recorded one by one up to a rate, then counted into a summary
        # event: every one is recorded, none can fill the disk.
        self._sampled = _SampledRecords(settings.unauthenticated_records_per_window, settings.unauthenticated_window_s)
        self._flusher: asyncio.Task[None] | None = None

    # -- public operations -------------------------------------------------

    async def decide(self, inp: CallInput) -> Decision:
        """Decide only; the decision is audited whatever it is.

        Shielded: a client that cancels or disconnects mid-decision does not
        stop the decision from being made and recorded.
        """
        return await asyncio.shield(self._admitted_decision(inp, reserve=False))

    async def invoke(self, inp: CallInput) -> InvokeResult:
        """Decide, then run an allowed call. The principal's in-flight cap
        covers the whole call, run included."""
        self._metrics.in_flight.inc()
        started = time.monotonic()
        tool_label = self._metrics.tool_label(inp.call.tool)
        principal = inp.principal
        if principal is not None and not self._within_rate(principal, len(inp.call.arguments.encode())):
            self._metrics.in_flight.dec()
            return InvokeResult(await asyncio.shield(self._refuse_rate(inp, principal)))
        entered = principal is not None and self._in_flight.try_enter(principal.id)
        try:
            if principal is not None and not entered:
                return InvokeResult(await asyncio.shield(self._refuse_busy(inp, principal)))
            if principal is None:
                decision = await asyncio.shield(self._decide_and_record(inp, reserve=True))
            elif inp.call.tool == DEFINE_TOOL:
                return await asyncio.shield(self._define_serially(inp, principal))
            else:
                decision = await asyncio.shield(self._slotted_decision(inp, principal, reserve=True))
                if decision.refusal == "failed_precondition" and self._settings.approval_wait_s > 0:
                    # Held, bounded: an approver's yes within the wait runs
                    # the call now, re-decided (and the approval used) anew.
                    assert decision.approval is not None
                    if await self.approvals.wait(decision.approval.id, self._settings.approval_wait_s):
                        decision = await asyncio.shield(self._slotted_decision(inp, principal, reserve=True))
            if not decision.allowed:
                return InvokeResult(decision)
            assert principal is not None
            return await self._run(inp, principal, decision, tool_label)
        finally:
            if entered:
                assert principal is not None
                self._in_flight.leave(principal.id)
            self._metrics.in_flight.dec()
            self._metrics.invoke_seconds.labels(tool_label).observe(time.monotonic() - started)

    async def granted_tools(self, principal: Principal) -> tuple[list[str], str]:
        """Registered tools this principal may use, and the policy revision.

        Fails closed: any policy failure raises PolicyError and lists nothing.
        """
        try:
            async with self._policy_slots.slot(principal.id, self._settings.policy_queue_timeout_s):
                result = await self._policy.evaluate(
                    self._settings.granted_tools_path, {"principal": principal_doc(principal)}
                )
        except SlotTimeoutError as exc:
            raise PolicyError(str(exc), code="gateway_overloaded") from exc
        names = result.result
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PolicyError("granted_tools is not a list of names", code="policy_malformed")
        return [n for n in names if self._registry.get(n) is not None or n in BUILTIN_TOOLS], result.revision

    async def observe(self, obs: Observation) -> Observed:
        """Records a hosted item in the audit log; nothing is decided or run.
        Refusals (no identity, malformed item) are recorded too. Shielded like
        decide, so a client that goes away cannot skip the record. The
        principal's rates, in-flight cap and share of decision slots apply
        as to Decide."""
        return await asyncio.shield(self._admitted_observe(obs))

    @contextlib.contextmanager
    def admitted(self, principal: Principal) -> Iterator[None]:
        """The principal's rate and in-flight cap around an operation that is
        not a tool call (ListSessions, EndSession): raises AdmissionError."""
        if not self._within_rate(principal, 0):
            raise AdmissionError(f"principal {principal.id!r} is over its call rate", code="rate_limited")
        if not self._in_flight.try_enter(principal.id):
            why = f"principal {principal.id!r} already has {self._in_flight.per_principal} calls in flight"
            raise AdmissionError(why, code="too_many_in_flight")
        try:
            yield
        finally:
            self._in_flight.leave(principal.id)

    @property
    def sessions(self) -> SessionView:
        return self._sessions

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def tool_definitions(self) -> ToolDefinitions | None:
        return self._tooldefs

    def replace_registry(self, registry: Registry) -> None:
        """Swaps in a reloaded registry (one assignment, so a decision sees
        either the old one or the new one). Runs are built from the entry the
        policy decided with, so a call never mixes two versions."""
        self._metrics.set_tools(registry.tools.keys())
        self._known = [registry, self._registry]
        self._registry = registry

    async def close(self) -> None:
        """Flushes the pending summaries (at shutdown)."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self._flush_summaries()

    # -- deciding ------------------------------------------------------------

    async def _admitted_decision(self, inp: CallInput, *, reserve: bool) -> Decision:
        """The per-principal in-flight cap around one decision (Decide)."""
        principal = inp.principal
        if principal is None:
            return await self._decide_and_record(inp, reserve=reserve)
        # Bytes, not characters: what the rate bounds is what the audit log
        # and the policy engine take in, and "ä" is two of them.
        if not self._within_rate(principal, len(inp.call.arguments.encode())):
            return await self._refuse_rate(inp, principal)
        if not self._in_flight.try_enter(principal.id):
            return await self._refuse_busy(inp, principal)
        try:
            return await self._slotted_decision(inp, principal, reserve=reserve)
        finally:
            self._in_flight.leave(principal.id)

    async def _slotted_decision(self, inp: CallInput, principal: Principal, *, reserve: bool) -> Decision:
        """One decision, holding one of the fairly shared decision slots for
        all of it (parsing, the policy engine, the audit record): a principal
        that floods holds at most its share of the gateway's work, and a
        freed slot goes to whoever holds the fewest. A slot only for the OPA
        round trip was not enough: the flood's parsing and audit work kept
        the event loop so busy that others' OPA answers waited past the
        deadline."""
        try:
            async with self._policy_slots.slot(principal.id, self._settings.policy_queue_timeout_s):
                return await self._decide_and_record(inp, reserve=reserve)
        except SlotTimeoutError as exc:
            why = f"no decision slot within {self._settings.policy_queue_timeout_s:.0f} s: {exc}"
            decision = _refusal(inp, str(uuid.uuid4()), "permission_denied", Reason("gateway_overloaded", why))
            return await self._record_decision(inp, decision)

    def _within_rate(self, principal: Principal, nbytes: int) -> bool:
        return self._rates.allow(principal.id, nbytes, time.monotonic())

    async def _refuse_rate(self, inp: CallInput, principal: Principal) -> Decision:
        why = f"principal {principal.id!r} is over its call or argument-byte rate"
        decision = _refusal(inp, str(uuid.uuid4()), "resource_exhausted", Reason("rate_limited", why))
        return await self._record_decision(inp, decision, sample=f"rate_limited:{principal.id}")

    async def _refuse_busy(self, inp: CallInput, principal: Principal) -> Decision:
        why = f"principal {principal.id!r} already has {self._in_flight.per_principal} calls in flight"
        decision = _refusal(inp, str(uuid.uuid4()), "resource_exhausted", Reason("too_many_in_flight", why))
        # A flood can repeat this refusal at will: sampled like a rate limit.
        return await self._record_decision(inp, decision, sample=f"too_many_in_flight:{principal.id}")

    async def _decide_and_record(self, inp: CallInput, *, reserve: bool) -> Decision:
        reservation: Reservation | None = None
        with self._metrics.decision_seconds.labels(inp.rpc).time():
            try:
                decision, reservation = await self._decide(inp, reserve=reserve)
                if decision.ask and reserve and inp.principal is not None:
                    # Invoke only: Decide reports an ask and holds nothing.
                    decision = self.approvals.resolve(inp, decision)
            except Exception as exc:  # fail closed on the unforeseen, and still audit it
                log.exception("decision failed unexpectedly")
                decision = _refusal(
                    inp,
                    str(uuid.uuid4()),
                    "internal",
                    Reason("internal_error", f"the gateway could not decide: {type(exc).__name__}"),
                )
        decision = await self._record_decision(inp, decision)
        if decision.approval is not None:
            # Its own event, or undone (and refused) if a record failed.
            decision = await self.approvals.recorded(decision)
        if reservation is not None:
            # An allowed call counts against its budgets; anything else does not.
            if decision.allowed:
                reservation.keep()
            else:
                reservation.release()
        return decision

    async def _decide(  # noqa: C901, PLR0911, PLR0912 - one return per refusal
        self, inp: CallInput, *, reserve: bool
    ) -> tuple[Decision, Reservation | None]:
        decision_id = str(uuid.uuid4())
        call = inp.call
        principal = inp.principal
        if principal is None:
            why = inp.authn_error or "missing or invalid token"
            return _refusal(inp, decision_id, "unauthenticated", Reason("unauthenticated", why)), None
        try:
            check_fields(inp)
        except InputError as exc:
            return _refusal(inp, decision_id, "invalid_argument", Reason(exc.code, str(exc))), None
        if call.item_type in HOSTED_ITEM_TYPES:
            why = f"{call.item_type} items are run by the provider; use Observe"
            return _refusal(inp, decision_id, "invalid_argument", Reason("item_type_hosted", why)), None
        size = len(call.arguments.encode())
        if size > self._settings.max_arguments_bytes:
            why = f"arguments are {size} bytes; the limit is {self._settings.max_arguments_bytes}"
            return _refusal(inp, decision_id, "invalid_argument", Reason("arguments_too_large", why)), None
        try:
            arguments = parse_arguments(call.item_type, call.arguments, max_depth=self._settings.max_arguments_depth)
        except MalformedJSON as exc:
            return _refusal(inp, decision_id, "invalid_argument", Reason("arguments_malformed", str(exc))), None
        if call.tool == DEFINE_TOOL:
            # Answered by the gateway (no sandbox): admitted by its own policy
            # entrypoint, and no call budget is spent (max_definitions bounds it).
            return await self._decide_definition(inp, principal, decision_id, arguments), None
        resolved, refused = await self._resolve(inp, principal, decision_id)
        if refused is not None:
            return refused, None
        # A dynamic tool's calls count as its base's: per-tool budgets must
        # not multiply with every tool a model defines on the same base.
        counted = resolved.record.base if resolved is not None else call.tool
        reservation: Reservation | None = None
        try:
            if reserve:
                reservation = await self._counters.reserve(principal.id, call.session_id, counted)
                counts = reservation.counts
            else:
                counts = await self._counters.snapshot(principal.id, call.session_id, counted)
        except BudgetError as exc:
            # A shared store that cannot count: no counters, no decision.
            return _refusal(inp, decision_id, "permission_denied", Reason(exc.code, str(exc))), None
        try:
            if call.item_type == "computer_call" and reserve and resolved is None:
                decision = await self._decide_actions(inp, principal, decision_id, arguments, counts)
            else:
                decision = await self._ask_policy(
                    inp, principal, decision_id, arguments, self._with_actions(inp, principal, counts), resolved
                )
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise
        return decision, reservation

    async def _resolve(
        self, inp: CallInput, principal: Principal, decision_id: str
    ) -> tuple[Resolved | None, Decision | None]:
        """The dynamic tool a call names (None for a registered or unknown
        name), or the refusal when its name is a retired one's or the
        catalog fails."""
        if self._tooldefs is None or self._registry.get(inp.call.tool) is not None:
            return None, None
        try:
            return await self._tooldefs.resolve(principal, inp.call.session_id, inp.call.tool), None
        except DefinitionError as exc:
            refusal: Refusal = "unavailable" if exc.code in _DEFINITION_UNAVAILABLE else "permission_denied"
            return None, _refusal(inp, decision_id, refusal, Reason(exc.code, str(exc)))

    async def _ask_policy(  # noqa: PLR0917 - the decision's parts, in order
        self,
        inp: CallInput,
        principal: Principal,
        decision_id: str,
        arguments: Any,
        counts: Mapping[str, int],
        resolved: Resolved | None,
    ) -> Decision:
        """A registered tool's decision, or a dynamic tool's: decided on its
        base's entry with the definition in the input (its admission
        re-checked by the current policy), the audit event naming it."""
        if resolved is None:
            return await self._policy_decision(inp, principal, decision_id, arguments, counts, resolved=None)
        audit = {**_definition_audit(resolved), "operation": "call"}
        if len(program(resolved.definition, arguments).encode()) > MAX_PROGRAM_BYTES:
            why = f"the tool's program with these arguments is over {MAX_PROGRAM_BYTES} bytes"
            decision = _refusal(inp, decision_id, "invalid_argument", Reason("arguments_too_large", why))
        else:
            decision = await self._policy_decision(inp, principal, decision_id, arguments, counts, resolved=resolved)
        runnable = decision.allowed or decision.ask
        return replace(decision, tool_definition=audit, dynamic=resolved if runnable else None)

    async def _policy_decision(
        self,
        inp: CallInput,
        principal: Principal,
        decision_id: str,
        arguments: Any,
        counts: Mapping[str, int],
        *,
        resolved: Resolved | None,
    ) -> Decision:
        input_doc = build_policy_input(
            self._registry,
            inp,
            principal,
            decision_id=decision_id,
            arguments=arguments,
            counters=counts,
            session=self._sessions.facts(principal.id, inp.call.session_id),
            definition=resolved.policy_doc() if resolved is not None else None,
            images=self._images,
        )
        path = self._settings.decision_path
        asked: dict[str, Any] = {"path": path, "policy_input": input_doc}

        def refuse(refusal: Refusal, code: str, message: str, result: PolicyResult | None = None) -> Decision:
            return _refusal(
                inp,
                decision_id,
                refusal,
                Reason(code, message),
                revision=result.revision if result else "",
                policy_result=result.result if result else None,
                bundles=dict(result.bundles) if result else None,
                **asked,
            )

        try:
            result = await self._policy.evaluate(path, input_doc)
        except PolicyError as exc:
            return refuse("permission_denied", exc.code, str(exc))
        if result.eval_ns is not None:
            self._metrics.opa_eval_seconds.observe(result.eval_ns / 1e9)
        self._metrics.policy_revision(result.revision)
        try:
            answer = parse_answer(result.result)
        except PolicyError as exc:
            return refuse("permission_denied", exc.code, str(exc), result)
        # The policy is the judge, but a few facts are not negotiable. An
        # allow must name a registered tool, and the entry it decided with
        # must be exactly our registry's entry for the called tool (a policy
        # cannot invent an image, argv or env); arguments that fail the
        # tool's schema are a policy bug. We fail closed on each.
        # A dynamic tool is decided on its base's entry, and its arguments
        # are checked against its own schema (already in the input).
        name = resolved.record.base if resolved is not None else inp.call.tool
        ours = self._registry.tool_data(name) if self._registry.get(name) is not None else None
        entry = answer.tool if answer.tool is not None else ours
        # An ask runs once approved: the same checks as an allow.
        if answer.allowed or answer.ask:
            if entry is None:
                return refuse("permission_denied", "policy_malformed", "policy allowed an unregistered tool", result)
            if not self._known_entry(name, entry):
                why = f"the decision's tool entry is not the registry's entry for {name!r}"
                return refuse("permission_denied", "policy_malformed", why, result)
            errors = (
                input_doc["call"]["arguments_errors"]
                if resolved is not None or (ours is not None and entry.get("parameters") == ours["parameters"])
                else schema_errors(entry.get("parameters", {}), arguments)
            )
            if errors:
                return refuse("permission_denied", "arguments_invalid", f"arguments are invalid: {errors[0]}", result)
        return Decision(
            decision_id=decision_id,
            allowed=answer.allowed,
            reasons=answer.reasons,
            refusal="none" if answer.allowed else "permission_denied",
            obligations=answer.obligations,
            policy_revision=result.revision,
            principal=principal.id,
            arguments=arguments,
            path=path,
            policy_input=input_doc,
            policy_result=result.result,
            bundles=dict(result.bundles),
            # An ask keeps its shadowed denies: the approver is shown them,
            # and the approved run reports them (would_deny).
            shadow=answer.shadow if answer.allowed or answer.ask else (),
            tool_entry=entry if answer.allowed or answer.ask else None,
            ask=answer.ask,
            shadow_asks=answer.shadow_asks if answer.allowed else (),
        )

    def _known_entry(self, tool: str, entry: Mapping[str, Any]) -> bool:
        return any(r.get(tool) is not None and r.tool_data(tool) == entry for r in self._known)

    # -- dynamic tools ---------------------------------------------------------

    async def _decide_definition(  # noqa: PLR0911 - one return per refusal
        self, inp: CallInput, principal: Principal, decision_id: str, arguments: Any
    ) -> Decision:
        """A define_tool call: checked by the gateway (shape, name, schema,
        sizes, collisions), then admitted or refused by the policy's
        data.airlock.tool_definitions.decision. Nothing runs anywhere."""
        call = inp.call

        def refuse(refusal: Refusal, code: str, message: str) -> Decision:
            return _refusal(inp, decision_id, refusal, Reason(code, message))

        # Who may define at all comes first: a principal without define_tool
        # learns nothing from the gateway's own checks (names, bases).
        try:
            granted = await self._policy.evaluate(
                self._settings.granted_tools_path, {"principal": principal_doc(principal)}
            )
        except PolicyError as exc:
            return refuse("permission_denied", exc.code, str(exc))
        if not isinstance(granted.result, list) or DEFINE_TOOL not in granted.result:
            why = f"tool {DEFINE_TOOL!r} is not available to principal {principal.id!r}"
            return refuse("permission_denied", "tool_not_granted", why)
        if call.item_type != "function_call":
            return refuse("invalid_argument", "item_type_mismatch", f"{DEFINE_TOOL} is a function tool")
        if self._tooldefs is None:
            return refuse("unavailable", "tool_definitions_unavailable", "this gateway has no artifact store")
        try:
            definition = parse_definition(arguments, self._registry.tools)
            prepared = await self._tooldefs.prepare(principal, call.session_id, definition)
        except DefinitionError as exc:
            refusal: Refusal = "unavailable" if exc.code in _DEFINITION_UNAVAILABLE else "invalid_argument"
            return refuse(refusal, exc.code, str(exc))
        audit = {
            "operation": "define",
            "id": prepared.id,
            "name": definition.name,
            "base": definition.base,
            "scope": prepared.existing.scope if prepared.existing else "session",
            "owner": principal.id,
            "sha256": definition.sha256,
        }
        input_doc = {
            "op": "define",
            "principal": principal_doc(principal),
            "session_id": call.session_id,
            "definition": definition.policy_doc(),
            "owner_definitions": prepared.owner_definitions,
            "request": {"rpc": inp.rpc, "decision_id": decision_id, "time": now()},
        }
        try:
            result = await self._policy.evaluate(DEFINITIONS_PATH, input_doc)
            allowed, reasons = parse_admission(result.result)
        except PolicyError as exc:
            decision = _refusal(
                inp,
                decision_id,
                "permission_denied",
                Reason(exc.code, str(exc)),
                path=DEFINITIONS_PATH,
                policy_input=input_doc,
            )
            return replace(decision, tool_definition=audit)
        self._metrics.policy_revision(result.revision)
        return Decision(
            decision_id=decision_id,
            allowed=allowed,
            reasons=reasons,
            refusal="none" if allowed else "permission_denied",
            policy_revision=result.revision,
            principal=principal.id,
            arguments=arguments,
            path=DEFINITIONS_PATH,
            policy_input=input_doc,
            policy_result=result.result,
            bundles=dict(result.bundles),
            tool_definition=audit,
        )

    async def _define_serially(self, inp: CallInput, principal: Principal) -> InvokeResult:
        """One owner's definitions one at a time, from the checks to the
        save: the policy's count of the owner's definitions and the name
        checks hold when the definition is stored (concurrent defines went
        past max_definitions, and stored one name twice in a session)."""
        async with self._define_locks.hold(principal.id):
            decision = await self._slotted_decision(inp, principal, reserve=True)
            if not decision.allowed:
                return InvokeResult(decision)
            return await self._define(inp, principal, decision)

    async def _define(self, inp: CallInput, principal: Principal, decision: Decision) -> InvokeResult:
        """Stores an admitted definition (or finds this owner's identical
        one) and answers with its id; the execution event records it."""
        assert self._tooldefs is not None  # _decide_definition refuses without it
        started = time.monotonic()
        audit = dict(decision.tool_definition or {})
        try:
            definition = parse_definition(decision.arguments, self._registry.tools)
            prepared = await self._tooldefs.prepare(principal, inp.call.session_id, definition)
            record, created = await self._tooldefs.save(
                principal,
                prepared,
                session=inp.call.session_id,
                call_id=inp.call.call_id,
                decision_id=decision.decision_id,
                policy_revision=decision.policy_revision,
            )
        except DefinitionError as exc:
            outcome = RunOutcome("error", -1, b"", b"", False, 0, error=f"{exc.code}: {exc}")
        else:
            audit.update(scope=record.scope, created=created)
            answer = {
                "defined": record.name,
                "id": record.id,
                "base": record.base,
                "scope": record.scope,
                "created": created,
                "next": f"call {record.name} like any other tool from your next turn",
            }
            duration = round((time.monotonic() - started) * 1000)
            outcome = RunOutcome("ok", 0, json.dumps(answer).encode(), b"", False, duration)
        decision = replace(decision, tool_definition=audit)
        try:
            await self._write(_events.execution_event(inp, decision, outcome))
        except AuditError:
            log.exception("define_tool execution event for %s was not written", decision.decision_id)
        return InvokeResult(decision, outcome)

    # -- running -------------------------------------------------------------

    async def _run(self, inp: CallInput, principal: Principal, decision: Decision, tool_label: str) -> InvokeResult:
        plan = self._plan(inp, decision)
        await self._count_use(inp, decision)
        inputs: tuple[InputArtifact, ...] = ()
        try:
            inputs = await self._open_inputs(inp, decision)
            async with self._run_slots.slot(principal.id, self._settings.run_queue_timeout_s):
                outcome = await self._executor.run(plan, [InputFile(a.ref.name, a.content) for a in inputs])
        except ArtifactError as exc:
            # Nothing ran: an input the policy refused, or one that is not
            # there, is the call's answer, with the refusal's own code.
            outcome = RunOutcome("error", -1, b"", b"", False, 0, error=f"{exc.code}: {_message(exc)}")
        except SlotTimeoutError:
            outcome = RunOutcome("error", -1, b"", b"", False, 0, error="executor_unavailable: no free run slot")
        except ExecutorError as exc:
            outcome = RunOutcome("error", -1, b"", b"", False, 0, error=f"{exc.code}: {exc}")
        except asyncio.CancelledError:
            # The client went away: the executor kills the container when
            # its stream is cancelled; the audit trail still gets the end.
            gone = RunOutcome("killed", -1, b"", b"", False, 0, error="client cancelled or disconnected")
            self._metrics.executions.labels(tool_label, gone.outcome).inc()
            refs = tuple(a.ref for a in inputs)
            with contextlib.suppress(AuditError):
                await asyncio.shield(self._write(_events.execution_event(inp, decision, gone, refs)))
            raise
        if outcome.outputs or outcome.skipped_outputs:
            # Stored even if the client has gone: the run happened, and
            # its artifacts and their audit events are part of it.
            outcome = await asyncio.shield(self._store_outputs(inp, principal, outcome))
        if outcome.sandbox.mode == "session":
            # The facts the next decision sees are current at once; the
            # executor's own report of the session follows on its stream.
            self._sessions.used(principal.id, inp.call.session_id, outcome.sandbox, plan.image, plan.runtime)
        screenshot = self._count_run(inp, outcome, tool_label)
        try:
            event = _events.execution_event(inp, decision, outcome, tuple(a.ref for a in inputs), screenshot)
            await self._write(event)
        except AuditError:
            # The run has happened and its decision is on disk; hiding the
            # result would not undo it. The failure is counted (in _write)
            # and logged for the operator.
            log.exception("execution audit event for %s was not written", decision.decision_id)
        return InvokeResult(decision, outcome)

    def _count_run(self, inp: CallInput, outcome: RunOutcome, tool_label: str) -> tuple[str, int] | None:
        """The run's metrics; returns a computer call's screenshot digest and size."""
        self._metrics.executions.labels(tool_label, outcome.outcome).inc()
        if outcome.container_start_ms or outcome.duration_ms:
            # Only runs that happened: an unreachable executor is not a 0 s run.
            self._metrics.execution_seconds.labels(tool_label).observe(outcome.duration_ms / 1000)
        if outcome.output_truncated:
            self._metrics.truncations.labels(tool_label).inc()
        screenshot = _screenshot(inp, outcome)
        if screenshot is not None:
            self._metrics.computer_screenshot_seconds.observe(outcome.duration_ms / 1000)
        return screenshot

    async def _decide_actions(
        self, inp: CallInput, principal: Principal, decision_id: str, arguments: Any, counts: Mapping[str, int]
    ) -> Decision:
        """A computer call that will run: its session's action count read,
        decided, and its batch added, one call of the session at a time."""
        session = inp.call.session_id
        async with self._action_locks.hold(f"{principal.id}\0{session}"):
            counts = self._with_actions(inp, principal, counts)
            decision = await self._ask_policy(inp, principal, decision_id, arguments, counts, None)
            if decision.allowed:
                actions = arguments.get("actions") if isinstance(arguments, Mapping) else None
                self._computer_actions.add(principal.id, session, len(actions or ()))
            return decision

    def _with_actions(self, inp: CallInput, principal: Principal, counts: Mapping[str, int]) -> Mapping[str, int]:
        """The session's action budget (airlock.computer) counts actions, not
        calls: a batch of 16 is 16."""
        if inp.call.item_type != "computer_call":
            return counts
        return {**counts, "session_computer_actions": self._computer_actions.get(principal.id, inp.call.session_id)}

    async def _count_use(self, inp: CallInput, decision: Decision) -> None:
        """What an allowed run uses: a dynamic tool's call, by scope (metric)
        and per definition (the catalog's reuse counts). A computer call's
        actions were added at its decision (_decide)."""
        if not isinstance(decision.dynamic, Resolved) or self._tooldefs is None:
            return
        self._metrics.dynamic_tool_calls.labels(decision.dynamic.record.scope_kind).inc()
        try:
            await asyncio.shield(self._tooldefs.used(decision.dynamic.record, inp.call.session_id))
        except DefinitionError:
            log.warning("the use of %s was not counted", decision.dynamic.record.id)

    async def _open_inputs(self, inp: CallInput, decision: Decision) -> tuple[InputArtifact, ...]:
        """The artifacts the call names in its tool's inputs argument, each
        decided (policy op "input") and read, within the decision's
        artifact limits. Raises ArtifactError with the refusal's code."""
        tool = decision.tool_entry
        name = (tool.get("artifacts") or {}).get("inputs", "") if isinstance(tool, Mapping) else ""
        args = decision.arguments if isinstance(decision.arguments, Mapping) else {}
        ids = args.get(name) if name else None
        if not ids:
            return ()
        limits = decision.obligations.artifacts
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InputsError("inputs_invalid", f"{name!r} must be a list of artifact ids")
        if len(ids) > limits.max_inputs:
            raise InputsError(
                "inputs_too_many", f"the call names {len(ids)} input artifacts; at most {limits.max_inputs}"
            )
        if len(set(ids)) != len(ids):
            raise InputsError("inputs_invalid", "an input artifact is named twice")
        if self._artifacts is None:
            raise InputsError("artifact_store_unavailable", "this gateway has no artifact store")
        assert inp.principal is not None  # only an allowed call gets here
        opened = await self._artifacts.open_inputs(inp.principal, inp.call.session_id, ids, limits.max_input_bytes)
        found = tuple(InputArtifact(_ref(record), content) for record, content in opened)
        total = sum(len(a.content) for a in found)
        if total > limits.max_input_bytes:
            raise InputsError("inputs_too_large", f"the inputs are {total} bytes; at most {limits.max_input_bytes}")
        names = [a.ref.name for a in found]
        if len(set(names)) != len(names):
            raise InputsError("input_name_duplicate", "two input artifacts have the same name (both /inputs/NAME)")
        return found

    async def _store_outputs(self, inp: CallInput, principal: Principal, outcome: RunOutcome) -> RunOutcome:
        """Stores what the run left under /outputs as the principal's
        artifacts in the call's session (policy op "output", quotas); one
        that is refused is reported as skipped with the refusal's code."""
        stored: list[ArtifactRef] = []
        skipped = list(outcome.skipped_outputs)
        try:
            for out in outcome.outputs:
                if self._artifacts is None:
                    skipped.append(SkippedOutput(out.name, "artifact_store_unavailable"))
                    continue
                media_type = mimetypes.guess_type(out.name, strict=False)[0] or "application/octet-stream"
                try:
                    record = await self._artifacts.save_output(
                        principal, inp.call.session_id, out.name, out.file, media_type
                    )
                except ArtifactError as exc:
                    skipped.append(SkippedOutput(out.name, exc.code))
                else:
                    stored.append(_ref(record))
        finally:
            for out in outcome.outputs:
                out.file.close()
        return replace(outcome, outputs=(), artifacts=tuple(stored), skipped_outputs=tuple(skipped))

    def _plan(self, inp: CallInput, decision: Decision) -> RunSpec:
        tool = decision.tool_entry
        assert tool is not None, "_decide never allows without a registry entry"
        args = decision.arguments if isinstance(decision.arguments, Mapping) else {}
        name = inp.call.tool
        if isinstance(decision.dynamic, Resolved):
            # The base's argv, its one placeholder (the registry checks that)
            # filled with the program: source and arguments as literals.
            name = decision.dynamic.record.base
            args = {tool["dynamic"]["source"]: program(decision.dynamic.definition, decision.arguments)}
        argv = tuple(PLACEHOLDER_RE.sub(lambda m: _argument_text(args.get(m.group(1))), a) for a in tool["argv"])
        return RunSpec(
            run_id=decision.decision_id,
            tool=name,
            image=tool["image"],
            argv=argv,
            env=dict(tool.get("env", {})),
            limits=decision.obligations.limits,
            network_mode=decision.obligations.network_mode,
            egress_allowlist=decision.obligations.egress_allowlist,
            egress_allow_cidrs=decision.obligations.egress_allow_cidrs,
            egress_inspect=decision.obligations.egress_inspect,
            egress_http_rules=decision.obligations.egress_http_rules,
            egress_secrets=decision.obligations.egress_secrets,
            runtime=tool.get("runtime", "runc"),
            # The authenticated principal, never a caller's field: the
            # executor keys session sandboxes by it.
            principal=decision.principal,
            session_id=inp.call.session_id,
            sandbox=_with_desktop(decision.obligations.sandbox, tool),
            # Nothing is collected that could not be stored.
            artifacts=decision.obligations.artifacts if self._artifacts is not None else ArtifactLimits(),
            image_digest=_pinned_digest(decision, tool["image"]),
        )

    # -- observing -----------------------------------------------------------

    async def _admitted_observe(self, obs: Observation) -> Observed:
        principal = obs.principal
        if principal is None:
            return await self._observe(obs)
        if not self._within_rate(principal, len(obs.item_json.encode())):
            return await self._observe(obs, rate_limited=True)
        if not self._in_flight.try_enter(principal.id):
            return await self._observe(obs, busy=True)
        try:
            return await self._slotted_observe(obs, principal)
        finally:
            self._in_flight.leave(principal.id)

    async def _slotted_observe(self, obs: Observation, principal: Principal) -> Observed:
        """One record, holding a decision slot as a decision does: its cost
        (parsing, and masking in the audit writer that every principal
        shares) is the flooding principal's share, not everyone's. Without
        a slot, an Observe flood of items crafted to be slow to mask took
        another principal's Decide from 10 ms to 3.8 s (p90)."""
        try:
            async with self._policy_slots.slot(principal.id, self._settings.policy_queue_timeout_s):
                return await self._observe(obs)
        except SlotTimeoutError as exc:
            why = f"no decision slot within {self._settings.policy_queue_timeout_s:.0f} s: {exc}"
            return await self._observe(obs, overloaded=why)

    async def _observe(  # noqa: C901, PLR0912 - one branch per refusal
        self, obs: Observation, *, busy: bool = False, rate_limited: bool = False, overloaded: str = ""
    ) -> Observed:
        event_id = str(uuid.uuid4())
        item: Any = None
        too_long = next((k for k, cap in _OBSERVE_CAPS.items() if len(getattr(obs, k)) > cap), None)
        sample: str | None = None
        if rate_limited:
            assert obs.principal is not None
            refusal: Refusal = "resource_exhausted"
            reason = Reason("rate_limited", "over the principal's call or argument-byte rate")
            sample = f"rate_limited:{obs.principal.id}"
        elif busy:
            assert obs.principal is not None
            refusal = "resource_exhausted"
            reason = Reason("too_many_in_flight", f"principal already has {self._in_flight.per_principal} in flight")
            # A flood can repeat this refusal at will: sampled like Decide's.
            sample = f"too_many_in_flight:{obs.principal.id}"
        elif overloaded:
            # Recorded without a slot, so with the item cut (item is None).
            refusal, reason = "permission_denied", Reason("gateway_overloaded", overloaded)
        elif obs.principal is None:
            refusal = "unauthenticated"
            reason = Reason("unauthenticated", obs.authn_error or "missing or invalid token")
        elif too_long is not None:
            refusal = "invalid_argument"
            reason = Reason("field_too_long", f"{too_long} is longer than {_OBSERVE_CAPS[too_long]} characters")
        elif obs.item_type not in OBSERVABLE_ITEM_TYPES:
            refusal = "invalid_argument"
            reason = Reason("item_type_not_hosted", f"{cut(obs.item_type, 64)!r} is not a hosted item")
        elif len(obs.item_json.encode()) > self._settings.max_arguments_bytes:
            # Recorded, but cut: an oversized item must not bloat the log.
            refusal, reason = "none", Reason("observed", f"hosted {obs.item_type} recorded (item cut to a bound)")
        else:
            try:
                item = strict_loads(obs.item_json, max_depth=self._settings.max_arguments_depth)
            except MalformedJSON:
                item = None
            if isinstance(item, dict):
                refusal, reason = "none", Reason("observed", f"hosted {obs.item_type} recorded")
            else:
                refusal, reason = "invalid_argument", Reason("item_malformed", "item_json must be a JSON object")
        if obs.principal is None:
            sample = "unauthenticated"
        if sample is not None and not self._sampled.record_individually(sample, "Observe", reason.message):
            self._schedule_flush()
            return Observed(event_id, refusal, reason)
        try:
            event = _events.observation_event(obs, event_id, observed=refusal == "none", reason=reason, item=item)
        except Exception as exc:
            log.exception("observation event could not be built")
            event = _events.observation_event(
                obs, event_id, observed=False, reason=Reason("internal_error", type(exc).__name__), item=None
            )
            refusal, reason = "internal", Reason("internal_error", "the item could not be recorded as sent")
        try:
            await self._write(event)
        except AuditError as exc:
            return Observed(event_id, "unavailable", Reason("audit_failed", str(exc)))
        return Observed(event_id, refusal, reason)

    # -- audit ---------------------------------------------------------------

    async def _record_decision(self, inp: CallInput, decision: Decision, *, sample: str | None = None) -> Decision:
        tool_label = self._metrics.tool_label(inp.call.tool)
        if inp.principal is None:
            sample = "unauthenticated"
        individually = sample is None or self._sampled.record_individually(sample, inp.rpc, decision.reasons[0].message)
        if individually:
            try:
                event = _events.decision_event(inp, decision)
            except Exception as exc:
                log.exception("decision event could not be built")
                if decision.allowed:
                    decision = replace(
                        decision,
                        allowed=False,
                        refusal="internal",
                        reasons=(Reason("internal_error", "the decision could not be recorded"),),
                        tool_entry=None,
                    )
                event = _events.minimal_decision(inp, decision, type(exc).__name__)
            try:
                await self._write(event)
            except AuditError as exc:
                # No durable record, no action: an allow becomes a deny, and
                # an ask holds no approval (approvals.recorded drops it).
                if decision.allowed or decision.approval_event:
                    decision = replace(
                        decision,
                        allowed=False,
                        refusal="unavailable",
                        reasons=(Reason("audit_failed", str(exc)),),
                        tool_entry=None,
                    )
        else:
            self._schedule_flush()
        verdict, reason = _metric_verdict(decision)
        profile = self._metrics.profile_label(inp.principal.profile if inp.principal else None)
        self._metrics.decisions.labels(tool_label, verdict, self._metrics.reason_label(reason), profile).inc()
        if inp.call.tool == DEFINE_TOOL:
            self._metrics.tool_definitions.labels(verdict, self._metrics.reason_label(reason)).inc()
        if inp.call.item_type == "computer_call" and isinstance(decision.arguments, Mapping):
            self._metrics.count_computer_actions(decision.arguments.get("actions"), verdict)
        if reason in FAIL_CLOSED_REASONS:
            self._metrics.fail_closed.labels(reason).inc()
        return decision

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._sampled.window_s)
        await self._flush_summaries()

    async def _flush_summaries(self) -> None:
        for key, since, by_rpc in self._sampled.take_summaries():
            what, _, principal = key.partition(":")
            for rpc, by_reason in sorted(by_rpc.items()):
                event = _events.summary_event(
                    str(uuid.uuid4()),
                    kind=f"{what}_summary",
                    principal=principal,
                    rpc=rpc,
                    suppressed=sum(by_reason.values()),
                    by_reason=by_reason,
                    since=since,
                )
                try:
                    await self._write(event)
                except AuditError:
                    log.exception("%s summary was not written", what)

    async def record(self, event: audit_pb2.AuditEvent) -> None:
        """Writes an event that is not a call's (a session started or ended),
        counted like every other; raises AuditError."""
        await self._write(event)

    async def _write(self, event: audit_pb2.AuditEvent) -> None:
        started = time.monotonic()
        try:
            await self._audit.write(event)
        except AuditError:
            self._metrics.audit_failures.inc()
            raise
        self._metrics.audit_write_seconds.observe(time.monotonic() - started)
        self._metrics.audit_events.labels(event.kind).inc()
        self._metrics.audit_last_seq.set(event.seq)


class _SampledRecords:
    """Per key (unauthenticated, or rate_limited:<principal>): how many
    refusals get an event of their own per window; the rest are counted (by
    RPC and reason message prefix) into one summary event per key."""

    def __init__(self, per_window: int, window_s: float) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._windows: dict[str, tuple[float, int]] = {}
        self._since: dict[str, str] = {}
        self._suppressed: dict[str, dict[str, dict[str, int]]] = {}

    def record_individually(self, key: str, rpc: str, why: str) -> bool:
        t = time.monotonic()
        start, recorded = self._windows.get(key, (t, 0))
        if t - start >= self.window_s:
            start, recorded = t, 0
        if recorded < self.per_window:
            self._windows[key] = (start, recorded + 1)
            return True
        self._windows[key] = (start, recorded)
        if key not in self._suppressed:
            self._since[key] = now()
        by_reason = self._suppressed.setdefault(key, {}).setdefault(rpc, {})
        reason = why[:64]
        if reason in by_reason or len(by_reason) < 16:  # noqa: PLR2004 - a bounded number of distinct reasons
            by_reason[reason] = by_reason.get(reason, 0) + 1
        else:
            by_reason["other"] = by_reason.get("other", 0) + 1
        return False

    def take_summaries(self) -> list[tuple[str, str, dict[str, dict[str, int]]]]:
        out = [(key, self._since.pop(key, ""), by_rpc) for key, by_rpc in self._suppressed.items()]
        self._suppressed = {}
        # Forget the windows of keys that went quiet, so they cannot pile up.
        t = time.monotonic()
        self._windows = {k: v for k, v in self._windows.items() if t - v[0] < self.window_s}
        return out


def _metric_verdict(decision: Decision) -> tuple[str, str]:
    """The decision's verdict and reason as the metric counts them:
    report-only denies and asks let the call through, and say so."""
    if decision.allowed and decision.shadow:
        return "would_deny", decision.shadow[0].code
    if decision.allowed and decision.shadow_asks:
        return "would_ask", decision.shadow_asks[0].code
    return decision.verdict, decision.reasons[0].code


def _refusal(
    inp: CallInput,
    decision_id: str,
    refusal: Refusal,
    reason: Reason,
    *,
    revision: str = "",
    path: str = "",
    policy_input: Any = None,
    policy_result: Any = None,
    bundles: Any = None,
) -> Decision:
    return Decision(
        decision_id,
        False,
        (reason,),
        refusal,
        policy_revision=revision,
        principal=inp.principal.id if inp.principal else "",
        path=path,
        policy_input=policy_input,
        policy_result=policy_result,
        bundles=bundles,
    )


class InputsError(ArtifactError):
    """A call's input artifacts that cannot be used as named."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _message(exc: ArtifactError) -> str:
    """The refusal's message without its code (some errors' text starts with it)."""
    text = str(getattr(exc, "message", "") or exc)
    return text.removeprefix(f"{exc.code}: ")


def _ref(record: StoredArtifact) -> ArtifactRef:
    return ArtifactRef(record.id, record.name, record.sha256, record.size, record.media_type)


def _pinned_digest(decision: Decision, image: str) -> str:
    """The digest of the image the policy was shown (input.image), which the
    executor must find on its engine; "" when the image is not pinned."""
    doc = decision.policy_input if isinstance(decision.policy_input, Mapping) else {}
    pin = doc.get("image")
    if isinstance(pin, Mapping) and pin.get("ref") == image:
        return str(pin["digest"])
    return ""


def _with_desktop(sandbox: SandboxPlan, tool: Mapping[str, Any]) -> SandboxPlan:
    """A computer_call tool's session container runs its desktop, of the
    registry's display size (the entry the policy decided with)."""
    display = tool.get("display")
    if not isinstance(display, Mapping):
        return sandbox
    return replace(sandbox, desktop_width=int(display["width"]), desktop_height=int(display["height"]))


def _screenshot(inp: CallInput, outcome: RunOutcome) -> tuple[str, int] | None:
    """A computer call's screenshot as the audit log names it: the PNG's
    SHA-256 and size (act.py prints it base64 on one line)."""
    if inp.call.item_type != "computer_call" or outcome.outcome != "ok":
        return None
    try:
        png = base64.b64decode(outcome.stdout.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return hashlib.sha256(png).hexdigest(), len(png)


class KeyedLocks:
    """An asyncio lock per key, forgotten once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ActionCounts:
    """Actions per (principal, session), for the computer action budget.
    Bounded: the oldest sessions are forgotten first (their budget then
    starts over, which only matters for a session idle that long)."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self._counts: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
        self._max = max_sessions

    def get(self, principal: str, session: str) -> int:
        return self._counts.get((principal, session), 0)

    def add(self, principal: str, session: str, n: int) -> None:
        key = (principal, session)
        self._counts[key] = self._counts.get(key, 0) + n
        self._counts.move_to_end(key)
        while len(self._counts) > self._max:
            self._counts.popitem(last=False)


def _definition_audit(resolved: Resolved) -> dict[str, Any]:
    r = resolved.record
    return {"id": r.id, "name": r.name, "base": r.base, "scope": r.scope, "owner": r.owner, "sha256": r.sha256}


def _argument_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
