"""The gateway's decision and invocation logic -- no grpc in here.

Order of a call: input checks (identity, call_id, item type, size, JSON) ->
policy input -> OPA -> decision -> audit (durable before anything runs) ->
on allow, the run plan -> executor -> execution audit. Any failure before the
executor is a deny with its own reason code; nothing is executed unless a
well-formed policy decision said allow and its audit event is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import jsonschema
from google.protobuf import json_format

from airlock.v1 import audit_pb2, call_pb2
from gateway._audit import SCHEMA_VERSION, AuditSink
from gateway._budget import CallCounters
from gateway._errors import FAIL_CLOSED_REASONS, AuditError, ExecutorError, PolicyError
from gateway._mask import Masker
from gateway._metrics import VERSION, GatewayMetrics
from gateway._model import (
    CallInput,
    Decision,
    InvokeResult,
    Limits,
    Obligations,
    Observation,
    Observed,
    Principal,
    Reason,
    Refusal,
    RunOutcome,
    RunPlan,
)
from gateway._policy import PolicyEngine
from gateway._registry import HOSTED_ITEM_TYPES, PLACEHOLDER_RE, Registry

log = logging.getLogger("airlock.gateway")
#: Bad input is recorded as received, up to this many characters.
RAW_ARGUMENTS_AUDIT_CHARS = 4096
_LIMIT_KEYS = ("memory_bytes", "cpu_millis", "pids", "timeout_ms", "output_bytes", "tmpfs_bytes")
#: Items Observe records: the hosted tools' items, image generation, and a
#: shell_call of a hosted shell (the agent sends only those it did not run).
OBSERVABLE_ITEM_TYPES = HOSTED_ITEM_TYPES | {"image_generation_call", "shell_call"}


class Executor(Protocol):
    """The executor seam: run an allowed plan and report its outcome."""

    async def run(self, plan: RunPlan) -> RunOutcome: ...


@dataclass(frozen=True)
class CoreSettings:
    decision_path: str
    granted_tools_path: str
    max_arguments_bytes: int


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
        masker: Masker | None = None,
        counters: CallCounters | None = None,
    ) -> None:
        self._masker = masker or Masker()
        self._counters = counters or CallCounters()
        self._registry = registry
        self._policy = policy
        self._executor = executor
        self._audit = audit
        self._metrics = metrics
        self._settings = settings

    # -- public operations -------------------------------------------------

    async def decide(self, inp: CallInput) -> Decision:
        """Decide only; the decision is audited whatever it is.

        Shielded: a client that cancels or disconnects mid-decision does not
        stop the decision from being made and recorded.
        """
        return await asyncio.shield(self._decide_and_record(inp))

    async def _decide_and_record(self, inp: CallInput) -> Decision:
        with self._metrics.decision_seconds.labels(inp.rpc).time():
            try:
                decision = await self._decide(inp)
            except Exception as exc:  # fail closed on the unforeseen, and still audit it
                log.exception("decision failed unexpectedly")
                decision = Decision(
                    str(uuid.uuid4()),
                    False,
                    (Reason("internal_error", f"the gateway could not decide: {type(exc).__name__}"),),
                    "internal",
                    principal=inp.principal.id if inp.principal else "",
                )
        return await self._record_decision(inp, decision)

    async def invoke(self, inp: CallInput) -> InvokeResult:
        """Decide, then run an allowed call."""
        self._metrics.in_flight.inc()
        started = time.monotonic()
        tool_label = self._metrics.tool_label(inp.call.tool)
        try:
            decision = await self.decide(inp)
            if not decision.allowed:
                return InvokeResult(decision)
            assert inp.principal is not None
            self._counters.record(inp.principal.id, inp.call.session_id, inp.call.tool)
            plan = self._plan(inp, decision)
            try:
                outcome = await self._executor.run(plan)
            except ExecutorError as exc:
                outcome = RunOutcome("error", -1, b"", b"", False, 0, error=f"{exc.code}: {exc}")
            except asyncio.CancelledError:
                # The client went away: the executor kills the container when
                # its stream is cancelled; the audit trail still gets the end.
                gone = RunOutcome("killed", -1, b"", b"", False, 0, error="client cancelled or disconnected")
                self._metrics.executions.labels(tool_label, gone.outcome).inc()
                with contextlib.suppress(AuditError):
                    await asyncio.shield(self._write(self._execution_event(inp, decision, gone)))
                raise
            self._metrics.executions.labels(tool_label, outcome.outcome).inc()
            if outcome.container_start_ms or outcome.duration_ms:
                # Only runs that happened: an unreachable executor is not a 0 s run.
                self._metrics.execution_seconds.labels(tool_label).observe(outcome.duration_ms / 1000)
            if outcome.output_truncated:
                self._metrics.truncations.labels(tool_label).inc()
            try:
                await self._write(self._execution_event(inp, decision, outcome))
            except AuditError:
                # The run has happened and its decision is on disk; hiding the
                # result would not undo it. The failure is counted (in _write)
                # and logged for the operator.
                log.exception("execution audit event for %s was not written", decision.decision_id)
            return InvokeResult(decision, outcome)
        finally:
            self._metrics.in_flight.dec()
            self._metrics.invoke_seconds.labels(tool_label).observe(time.monotonic() - started)

    async def granted_tools(self, principal: Principal) -> tuple[list[str], str]:
        """Registered tools this principal may use, and the policy revision.

        Fails closed: any policy failure raises PolicyError and lists nothing.
        """
        result = await self._policy.evaluate(
            self._settings.granted_tools_path, {"principal": _principal_doc(principal)}
        )
        names = result.result
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise PolicyError("granted_tools is not a list of names", code="policy_malformed")
        return [n for n in names if self._registry.get(n) is not None], result.revision

    async def observe(self, obs: Observation) -> Observed:
        """Records a hosted item in the audit log; nothing is decided or run.
        Refusals (no identity, malformed item) are recorded too. Shielded like
        decide, so a client that goes away cannot skip the record."""
        return await asyncio.shield(self._observe(obs))

    async def _observe(self, obs: Observation) -> Observed:
        event_id = str(uuid.uuid4())
        item: Any = None
        if obs.principal is None:
            refusal, reason = (
                "unauthenticated",
                Reason("unauthenticated", obs.authn_error or "missing or invalid token"),
            )
        elif obs.item_type not in OBSERVABLE_ITEM_TYPES:
            refusal, reason = (
                "invalid_argument",
                Reason("item_type_not_hosted", f"{obs.item_type!r} is not a hosted item"),
            )
        elif len(obs.item_json.encode()) > self._settings.max_arguments_bytes:
            # Recorded, but cut: an oversized item must not bloat the log.
            refusal, reason = "none", Reason("observed", f"hosted {obs.item_type} recorded (item cut to a bound)")
        else:
            try:
                item = json.loads(obs.item_json)
            except (ValueError, RecursionError):
                item = None
            if isinstance(item, dict):
                refusal, reason = "none", Reason("observed", f"hosted {obs.item_type} recorded")
            else:
                refusal, reason = "invalid_argument", Reason("item_malformed", "item_json must be a JSON object")
        event = audit_pb2.AuditEvent(
            labels={"component": "gateway", "version": VERSION},
            schema_version=SCHEMA_VERSION,
            kind="observation",
            timestamp=_now(),
            decision_id=event_id,
            principal=obs.principal.id if obs.principal else "",
            session_id=obs.session_id,
            tool=obs.tool,
            item_type=obs.item_type,
            call_id=obs.item_id,
            decision="observed" if refusal == "none" else "deny",
            rpc="Observe",
            arguments_bytes=len(obs.item_json.encode()),
        )
        recorded = {
            "principal": _principal_doc(obs.principal) if obs.principal else None,
            "item": item
            if isinstance(item, dict)
            else {"item_json": obs.item_json[:RAW_ARGUMENTS_AUDIT_CHARS], "status": obs.status},
        }
        masked_input, masked = self._masker.mask(recorded)
        event.input.update(masked_input)
        event.masked.extend(masked)
        event.reasons.append(call_pb2.Reason(code=reason.code, message=reason.message))
        try:
            await self._write(event)
        except AuditError as exc:
            return Observed(event_id, "unavailable", Reason("audit_failed", str(exc)))
        return Observed(event_id, refusal, reason)  # type: ignore[arg-type]

    @property
    def registry(self) -> Registry:
        return self._registry

    def replace_registry(self, registry: Registry) -> None:
        """Swaps in a reloaded registry (one assignment, so a decision sees
        either the old one or the new one). Runs are built from the entry the
        policy decided with, so a call never mixes two versions."""
        self._metrics.set_tools(registry.tools.keys())
        self._registry = registry

    # -- deciding ------------------------------------------------------------

    async def _decide(self, inp: CallInput) -> Decision:  # noqa: C901, PLR0911, PLR0912 - each check returns its own refusal, in order
        decision_id = str(uuid.uuid4())
        principal_id = inp.principal.id if inp.principal else ""

        asked: dict[str, Any] = {"path": "", "input": None, "result": None, "bundles": None}

        def refuse(refusal: Refusal, code: str, message: str, revision: str = "") -> Decision:
            return Decision(
                decision_id,
                False,
                (Reason(code, message),),
                refusal,
                policy_revision=revision,
                principal=principal_id,
                path=asked["path"],
                policy_input=asked["input"],
                policy_result=asked["result"],
                bundles=asked["bundles"],
            )

        call = inp.call
        if inp.principal is None:
            return refuse("unauthenticated", "unauthenticated", inp.authn_error or "missing or invalid token")
        if not call.call_id:
            return refuse("invalid_argument", "call_id_missing", "call.call_id is required")
        if not call.item_type:
            return refuse("invalid_argument", "item_type_missing", "call.item_type is required")
        if not call.tool:
            return refuse("invalid_argument", "tool_missing", "call.tool is required")
        if call.item_type in HOSTED_ITEM_TYPES:
            return refuse(
                "invalid_argument", "item_type_hosted", f"{call.item_type} items are run by the provider; use Observe"
            )
        size = len(call.arguments.encode())
        if size > self._settings.max_arguments_bytes:
            return refuse(
                "invalid_argument",
                "arguments_too_large",
                f"arguments are {size} bytes; the limit is {self._settings.max_arguments_bytes}",
            )
        try:
            arguments = _parse_arguments(call.item_type, call.arguments)
        except (ValueError, RecursionError) as exc:
            return refuse("invalid_argument", "arguments_malformed", str(exc))

        input_doc = self._policy_input(inp, inp.principal, decision_id, arguments)
        asked.update(path=self._settings.decision_path, input=input_doc)
        try:
            result = await self._policy.evaluate(self._settings.decision_path, input_doc)
        except PolicyError as exc:
            return refuse("permission_denied", exc.code, str(exc))
        asked.update(result=result.result, bundles=dict(result.bundles))
        if result.eval_ns is not None:
            self._metrics.opa_eval_seconds.observe(result.eval_ns / 1e9)
        self._metrics.policy_revision(result.revision)
        try:
            allowed, reasons, obligations = _parse_decision(result.result)
            shadow, decided_tool = _parse_extras(result.result)
        except PolicyError as exc:
            return refuse("permission_denied", exc.code, str(exc), result.revision)
        # The policy is the judge, but a few facts are not negotiable: an
        # allow for an unregistered tool or for arguments that fail the
        # tool's schema is a policy bug, and we fail closed on it. The entry
        # is the one the policy decided with (same bundle snapshot) when it
        # returns one; otherwise the gateway's copy of the registry.
        ours = self._registry.tool_data(call.tool) if self._registry.get(call.tool) is not None else None
        entry = decided_tool if decided_tool is not None else ours
        if allowed and entry is None:
            return refuse(
                "permission_denied", "policy_malformed", "policy allowed an unregistered tool", result.revision
            )
        errors: list[str] = []
        if allowed and entry is not None:
            same_schema = ours is not None and entry.get("parameters") == ours["parameters"]
            errors = (
                input_doc["call"]["arguments_errors"]
                if same_schema
                else _schema_errors(entry.get("parameters", {}), arguments)
            )
        if errors:
            return refuse(
                "permission_denied", "arguments_invalid", f"arguments are invalid: {errors[0]}", result.revision
            )
        return Decision(
            decision_id=decision_id,
            allowed=allowed,
            reasons=reasons,
            refusal="none" if allowed else "permission_denied",
            obligations=obligations,
            policy_revision=result.revision,
            principal=principal_id,
            arguments=arguments,
            path=self._settings.decision_path,
            policy_input=input_doc,
            policy_result=result.result,
            bundles=dict(result.bundles),
            shadow=shadow if allowed else (),
            tool_entry=entry if allowed else None,
        )

    def _policy_input(self, inp: CallInput, principal: Principal, decision_id: str, arguments: Any) -> dict[str, Any]:
        counters = self._counters.snapshot(principal.id, inp.call.session_id, inp.call.tool)
        return build_policy_input(
            self._registry, inp, principal, decision_id=decision_id, arguments=arguments, counters=counters
        )

    # -- running -------------------------------------------------------------

    def _plan(self, inp: CallInput, decision: Decision) -> RunPlan:
        tool = decision.tool_entry
        assert tool is not None, "_decide never allows without a registry entry"
        args = decision.arguments if isinstance(decision.arguments, Mapping) else {}
        argv = tuple(PLACEHOLDER_RE.sub(lambda m: _argument_text(args.get(m.group(1))), a) for a in tool["argv"])
        return RunPlan(
            run_id=decision.decision_id,
            tool=inp.call.tool,
            image=tool["image"],
            argv=argv,
            env=dict(tool.get("env", {})),
            limits=decision.obligations.limits,
            network_mode=decision.obligations.network_mode,
            egress_allowlist=decision.obligations.egress_allowlist,
            egress_allow_cidrs=decision.obligations.egress_allow_cidrs,
            runtime=tool.get("runtime", "runc"),
        )

    # -- audit ---------------------------------------------------------------

    async def _record_decision(self, inp: CallInput, decision: Decision) -> Decision:
        tool_label = self._metrics.tool_label(inp.call.tool)
        try:
            await self._write(self._decision_event(inp, decision))
        except AuditError as exc:
            # No durable record, no action: an allow becomes a deny.
            decision = replace(
                decision,
                allowed=False,
                refusal="unavailable",
                reasons=(Reason("audit_failed", str(exc)),),
            )
        reason = decision.reasons[0].code
        verdict = decision.verdict
        if decision.allowed and decision.shadow:
            # Report-only denies: the call goes through, the metric says so.
            verdict, reason = "would_deny", decision.shadow[0].code
        profile = self._metrics.profile_label(inp.principal.profile if inp.principal else None)
        self._metrics.decisions.labels(tool_label, verdict, self._metrics.reason_label(reason), profile).inc()
        if reason in FAIL_CLOSED_REASONS:
            self._metrics.fail_closed.labels(reason).inc()
        return decision

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

    def _base_event(self, kind: str, inp: CallInput, decision: Decision) -> audit_pb2.AuditEvent:
        call = inp.call
        return audit_pb2.AuditEvent(
            labels={"component": "gateway", "version": VERSION},
            schema_version=SCHEMA_VERSION,
            kind=kind,
            timestamp=_now(),
            decision_id=decision.decision_id,
            principal=decision.principal,
            session_id=call.session_id,
            tool=call.tool,
            item_type=call.item_type,
            call_id=call.call_id,
            decision=decision.verdict,
            policy_revision=decision.policy_revision,
            rpc=inp.rpc,
            arguments_bytes=len(call.arguments.encode()),
        )

    def _decision_event(self, inp: CallInput, decision: Decision) -> audit_pb2.AuditEvent:
        event = self._base_event("decision", inp, decision)
        event.path = decision.path
        # Refusals before the policy have no policy input: record the call as
        # it came (raw arguments, cut to a bound), masked like the rest.
        raw = decision.policy_input
        if raw is None:
            raw = {
                "principal": _principal_doc(inp.principal) if inp.principal else None,
                "call": {
                    "call_id": inp.call.call_id,
                    "item_type": inp.call.item_type,
                    "tool": inp.call.tool,
                    "arguments_raw": inp.call.arguments[:RAW_ARGUMENTS_AUDIT_CHARS],
                },
            }
        masked_input, masked = self._masker.mask(_without_tool_entry(raw))
        event.input.update(masked_input)
        event.masked.extend(masked)
        for name, revision in (decision.bundles or {}).items():
            event.bundles[name].revision = revision
        if decision.shadow:
            event.would_deny = True
            event.shadow_reasons.extend(call_pb2.Reason(code=r.code, message=r.message) for r in decision.shadow)
        if decision.policy_result is not None:
            result, _ = self._masker.mask(_without_tool_entry(decision.policy_result))
            json_format.ParseDict(result, event.result)
        event.reasons.extend(call_pb2.Reason(code=r.code, message=r.message) for r in decision.reasons)
        event.obligations.CopyFrom(obligations_to_proto(decision.obligations))
        return event

    def _execution_event(self, inp: CallInput, decision: Decision, run: RunOutcome) -> audit_pb2.AuditEvent:
        event = self._base_event("execution", inp, decision)
        event.execution.CopyFrom(
            audit_pb2.AuditExecution(
                outcome=run.outcome,
                exit_code=run.exit_code,
                output_truncated=run.output_truncated,
                stdout_bytes=len(run.stdout),
                stderr_bytes=len(run.stderr),
                duration_ms=run.duration_ms,
                container_start_ms=run.container_start_ms,
                error=run.error,
                egress=run.egress,
                egress_unrecorded=run.egress_unrecorded,
            )
        )
        return event


def build_policy_input(
    registry: Registry,
    inp: CallInput,
    principal: Principal,
    *,
    decision_id: str,
    arguments: Any,
    counters: Mapping[str, int],
) -> dict[str, Any]:
    """The policy input (policies/schema/input.schema.json). Shared by the
    gateway and by `airlock decide --offline`, so both ask the same question."""
    call = inp.call
    tool = registry.get(call.tool)
    errors = _schema_errors(registry.tool_data(call.tool)["parameters"], arguments) if tool is not None else []
    return {
        "principal": _principal_doc(principal),
        # The tool's registry entry (null when unregistered), so rules can
        # read it from the input; data.registry holds the same entries.
        "tool": registry.tool_data(call.tool) if tool is not None else None,
        "call": {
            "call_id": call.call_id,
            "item_type": call.item_type,
            "tool": call.tool,
            "arguments": arguments,
            "arguments_errors": errors,
            "arguments_bytes": len(call.arguments.encode()),
            "session_id": call.session_id,
            # Only the fields asked for, and only when any was: airlock.limits
            # takes the minimum with the caps, so a request can only tighten.
            **_requested(call.requested_limits),
        },
        "counters": dict(counters),
        "request": {"rpc": inp.rpc, "decision_id": decision_id, "time": _now()},
    }


def _requested(limits: Limits | None) -> dict[str, Any]:
    asked = {k: getattr(limits, k) for k in _LIMIT_KEYS if getattr(limits, k) > 0} if limits else {}
    return {"requested_limits": asked} if asked else {}


def parse_arguments(item_type: str, raw: str) -> Any:
    """Public name of the gateway's argument parser (ValueError when malformed)."""
    return _parse_arguments(item_type, raw)


def obligations_to_proto(ob: Obligations) -> call_pb2.Obligations:
    mode = call_pb2.NETWORK_MODE_EGRESS if ob.network_mode == "egress" else call_pb2.NETWORK_MODE_NONE
    return call_pb2.Obligations(
        limits=call_pb2.Limits(**{k: getattr(ob.limits, k) for k in _LIMIT_KEYS}),
        network=call_pb2.Network(
            mode=mode, egress_allowlist=list(ob.egress_allowlist), egress_allow_cidrs=list(ob.egress_allow_cidrs)
        ),
    )


def _without_tool_entry(doc: Any) -> Any:
    """The audit copy names the tool instead of repeating its registry entry:
    the entry is pinned by the bundle revision, and repeating its schema in
    every event would double the log for nothing."""
    if isinstance(doc, dict) and isinstance(doc.get("tool"), dict):
        return {**doc, "tool": {"name": doc["tool"].get("name", "")}}
    return doc


def _principal_doc(principal: Principal) -> dict[str, str]:
    return {"id": principal.id, "profile": principal.profile, "authn": principal.authn}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_arguments(item_type: str, raw: str) -> Any:
    """Parses the model's raw arguments. Custom tools take free text; every
    other item carries a JSON object."""
    if item_type == "custom_tool_call":
        return {"input": raw}
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"arguments are not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise ValueError("arguments are nested too deeply") from exc
    if not isinstance(value, dict):
        raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")  # noqa: TRY004 - bad input, reported as such
    return value


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def _schema_errors(schema: Mapping[str, Any], arguments: Any) -> list[str]:
    validator = _validator(json.dumps(schema, sort_keys=True))
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    ]


def _argument_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _parse_decision(doc: Any) -> tuple[bool, tuple[Reason, ...], Obligations]:  # noqa: C901 - one check per field
    """Validates OPA's decision document; anything off is policy_malformed."""

    def bad(why: str) -> PolicyError:
        return PolicyError(f"malformed policy decision: {why}", code="policy_malformed")

    if not isinstance(doc, dict):
        raise bad("not an object")
    allow = doc.get("allow")
    if not isinstance(allow, bool):
        raise bad("'allow' must be true or false")
    raw_reasons = doc.get("reasons")
    if not isinstance(raw_reasons, list) or not raw_reasons:
        raise bad("'reasons' must be a non-empty list")
    reasons: list[Reason] = []
    for r in raw_reasons:
        if not (
            isinstance(r, dict) and isinstance(r.get("code"), str) and r["code"] and isinstance(r.get("message"), str)
        ):
            raise bad("each reason needs a non-empty 'code' and a 'message'")
        reasons.append(Reason(r["code"], r["message"]))
    obligations = doc.get("obligations")
    if not isinstance(obligations, dict):
        raise bad("'obligations' must be an object")
    limits_doc = obligations.get("limits", {})
    network = obligations.get("network", {})
    if not isinstance(limits_doc, dict) or not isinstance(network, dict):
        raise bad("'obligations.limits' and 'obligations.network' must be objects")
    limits: dict[str, int] = {}
    for key in _LIMIT_KEYS:
        value = limits_doc.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"'obligations.limits.{key}' must be a non-negative integer")
        limits[key] = value
    if allow and any(limits[k] == 0 for k in _LIMIT_KEYS):
        # An allow must say how tightly to run; "0 = executor default" is only
        # acceptable on a deny, where nothing runs.
        raise bad("an allow must set every obligations.limits key")
    mode, allowlist, cidrs = _parse_network(network, bad)
    return allow, tuple(reasons), Obligations(Limits(**limits), mode, allowlist, cidrs)


def _parse_network(
    network: dict[str, Any], bad: Callable[[str], PolicyError]
) -> tuple[Literal["none", "egress"], tuple[str, ...], tuple[str, ...]]:
    mode = network.get("mode", "none")
    if mode not in ("none", "egress"):
        raise bad("'obligations.network.mode' must be 'none' or 'egress'")
    lists: list[tuple[str, ...]] = []
    for key in ("egress_allowlist", "egress_allow_cidrs"):
        value = network.get(key, [])
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            raise bad(f"'obligations.network.{key}' must be a list of strings")
        lists.append(tuple(value))
    return mode, lists[0], lists[1]


def _parse_reasons(raw: Any, what: str) -> tuple[Reason, ...]:
    if not isinstance(raw, list):
        raise PolicyError(f"malformed policy decision: '{what}' must be a list", code="policy_malformed")
    out = []
    for r in raw:
        if not (
            isinstance(r, dict) and isinstance(r.get("code"), str) and r["code"] and isinstance(r.get("message"), str)
        ):
            raise PolicyError(
                f"malformed policy decision: each of '{what}' needs a 'code' and a 'message'", code="policy_malformed"
            )
        out.append(Reason(r["code"], r["message"]))
    return tuple(out)


def _parse_extras(doc: dict[str, Any]) -> tuple[tuple[Reason, ...], Mapping[str, Any] | None]:
    """The optional parts of a decision: shadowed (report-only) denies, and
    the registry entry the policy decided with, so the run is built from the
    same snapshot of the registry that the decision saw."""
    shadow = _parse_reasons(doc.get("shadow", []), "shadow")
    tool = doc.get("tool")
    if tool is None:
        return shadow, None
    ok = (
        isinstance(tool, dict)
        and isinstance(tool.get("image"), str)
        and isinstance(tool.get("argv"), list)
        and all(isinstance(a, str) for a in tool["argv"])
        and isinstance(tool.get("env", {}), dict)
        and all(isinstance(v, str) for v in tool.get("env", {}).values())
        and isinstance(tool.get("runtime", "runc"), str)
        and isinstance(tool.get("parameters", {}), dict)
    )
    if not ok:
        raise PolicyError("malformed policy decision: 'tool' is not a registry entry", code="policy_malformed")
    return shadow, tool
