"""Renders decisions, executions and observations as ``airlock.v1.AuditEvent``.

Events are built in clear: masking is the audit sink's job (airlock/gateway/_audit.py
masks every field of the rendered event in its writer thread). Identifying
fields are cut to their caps here, so nothing a caller sends can make an
event unboundedly large. If a full event cannot be built, ``minimal_decision``
still records that a decision was made and that it failed, so a call is never
left without its decision event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from airlock.common import wire
from airlock.gateway._approvals import approval_to_audit
from airlock.gateway._audit import SCHEMA_VERSION
from airlock.gateway._input import FIELD_CAPS, RAW_AUDIT_CHARS, cut, now, principal_doc
from airlock.gateway._metrics import VERSION
from airlock.gateway._model import (
    ArtifactRef,
    CallInput,
    Decision,
    Obligations,
    Observation,
    Reason,
    RunOutcome,
    SessionInfo,
)
from airlock.v1 import audit_pb2, call_pb2, executor_pb2


def obligations_to_proto(ob: Obligations) -> call_pb2.Obligations:
    return call_pb2.Obligations(
        limits=wire.to_message(call_pb2.Limits, ob.limits),
        network=wire.network_to_proto(
            ob.network_mode,
            ob.egress_allowlist,
            ob.egress_allow_cidrs,
            inspect=ob.egress_inspect,
            rules=ob.egress_http_rules,
            secrets=ob.egress_secrets,
        ),
        sandbox=wire.sandbox_to_proto(ob.sandbox),
        artifacts=wire.to_message(call_pb2.ArtifactLimits, ob.artifacts),
        computer=call_pb2.ComputerObligation(acknowledge_safety_checks=ob.acknowledge_safety_checks),
    )


def _reasons(reasons: tuple[Reason, ...]) -> list[call_pb2.Reason]:
    return [call_pb2.Reason(code=r.code, message=r.message) for r in reasons]


def without_tool_entry(doc: Any) -> Any:
    """The audit copy names the tool instead of repeating its registry entry:
    the entry is pinned by the bundle revision, and repeating its schema in
    every event would double the log for nothing."""
    if isinstance(doc, dict) and isinstance(doc.get("tool"), dict):
        return {**doc, "tool": {"name": doc["tool"].get("name", "")}}
    return doc


def _base(kind: str, inp: CallInput, decision: Decision) -> audit_pb2.AuditEvent:
    call = inp.call
    return audit_pb2.AuditEvent(
        labels={"component": "gateway", "version": VERSION},
        schema_version=SCHEMA_VERSION,
        kind=kind,
        timestamp=now(),
        decision_id=decision.decision_id,
        principal=decision.principal,
        session_id=cut(call.session_id, FIELD_CAPS["session_id"]),
        tool=cut(call.tool, FIELD_CAPS["tool"]),
        item_type=call.item_type,
        call_id=cut(call.call_id, FIELD_CAPS["call_id"]),
        decision=decision.verdict,
        policy_revision=decision.policy_revision,
        rpc=inp.rpc,
        arguments_bytes=len(call.arguments.encode()),
    )


def raw_call_doc(inp: CallInput) -> dict[str, Any]:
    """A call refused before the policy, recorded as it came (cut to bounds).

    The arguments stay text (they may not parse: that can be why the call
    was refused); the audit sink masks them as JSON text, by key name too
    (airlock/gateway/_mask.py, ``RAW_JSON_FIELDS``). A cut drops the token it
    falls in, which could be the head of a secret that no pattern would
    recognise any more."""
    call = inp.call
    arguments = call.arguments
    if len(arguments) > RAW_AUDIT_CHARS:
        head = arguments[:RAW_AUDIT_CHARS]
        head = head[: max(head.rfind(c) for c in " \t\r\n\"',;:{}[]") + 1]
        arguments = f"{head}…[{len(arguments) - len(head)} more characters cut]"
    return {
        "principal": principal_doc(inp.principal) if inp.principal else None,
        "call": {
            "call_id": cut(call.call_id, FIELD_CAPS["call_id"]),
            "item_type": call.item_type,
            "tool": cut(call.tool, FIELD_CAPS["tool"]),
            "session_id": cut(call.session_id, FIELD_CAPS["session_id"]),
            "arguments_raw": arguments,
        },
    }


def decision_event(inp: CallInput, decision: Decision) -> audit_pb2.AuditEvent:
    event = _base("decision", inp, decision)
    event.path = decision.path
    doc = decision.policy_input if decision.policy_input is not None else raw_call_doc(inp)
    event.input.update(without_tool_entry(doc))
    for name, revision in (decision.bundles or {}).items():
        event.bundles[name].revision = revision
    if decision.shadow:
        event.would_deny = True
        event.shadow_reasons.extend(_reasons(decision.shadow))
    if decision.shadow_asks:
        event.would_ask = True
        event.shadow_ask_reasons.extend(_reasons(decision.shadow_asks))
    if decision.approval is not None:
        # The approval holding the call, or the one it runs on.
        event.approval.CopyFrom(approval_to_audit(decision.approval))
    if decision.policy_result is not None:
        json_format.ParseDict(without_tool_entry(decision.policy_result), event.result)
    event.reasons.extend(_reasons(decision.reasons))
    event.obligations.CopyFrom(obligations_to_proto(decision.obligations))
    _name_definition(event, decision)
    return event


def _name_definition(event: audit_pb2.AuditEvent, decision: Decision) -> None:
    if decision.tool_definition:
        event.tool_definition.CopyFrom(audit_pb2.AuditToolDefinition(**decision.tool_definition))


def tool_definition_refusal(
    event_id: str, principal: str, *, rpc: str, definition_id: str, code: str, why: str
) -> audit_pb2.AuditEvent:
    """A refused tool-definition RPC (an agent promoting, an id it may not
    see, a bad scope)."""
    definition = audit_pb2.AuditToolDefinition(operation=rpc, id=definition_id[:64])
    event = _tool_definition_base(event_id, principal, definition, "deny", code=code, why=why[:512])
    event.rpc = rpc
    return event


def tool_definition_event(
    event_id: str, principal: str, definition: audit_pb2.AuditToolDefinition
) -> audit_pb2.AuditEvent:
    """An operator's promote or retire of a dynamic tool."""
    why = f"{definition.operation} {definition.id}"
    return _tool_definition_base(event_id, principal, definition, "allow", code=definition.operation, why=why)


def _tool_definition_base(
    event_id: str, principal: str, definition: audit_pb2.AuditToolDefinition, verdict: str, *, code: str, why: str
) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        labels={"component": "gateway", "version": VERSION},
        schema_version=SCHEMA_VERSION,
        kind="tool_definition",
        timestamp=now(),
        decision_id=event_id,
        principal=principal,
        tool=definition.name,
        decision=verdict,
        reasons=[call_pb2.Reason(code=code, message=why)],
        tool_definition=definition,
    )


def minimal_decision(inp: CallInput, decision: Decision, why: str) -> audit_pb2.AuditEvent:
    """What is recorded when the full event could not be built: the decision
    happened, it is a deny, and the gateway failed to describe it."""
    event = _base("decision", inp, decision)
    event.decision = "deny"
    event.reasons.append(call_pb2.Reason(code="internal_error", message=f"audit event could not be built: {why}"))
    return event


def execution_event(
    inp: CallInput,
    decision: Decision,
    run: RunOutcome,
    inputs: tuple[ArtifactRef, ...] = (),
    screenshot: tuple[str, int] | None = None,
) -> audit_pb2.AuditEvent:
    event = _base("execution", inp, decision)
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
            sandbox=wire.use_to_proto(run.sandbox),
            inputs=[wire.to_message(call_pb2.ArtifactRef, a) for a in inputs],
            artifacts=[wire.to_message(call_pb2.ArtifactRef, a) for a in run.artifacts],
            skipped_outputs=[wire.to_message(executor_pb2.SkippedOutput, s) for s in run.skipped_outputs],
        )
    )
    if screenshot is not None:
        event.execution.screenshot_sha256, event.execution.screenshot_bytes = screenshot
    _name_definition(event, decision)
    return event


def session_event(
    event_id: str, *, kind: str, session: SessionInfo | None, code: str, message: str, principal: str = ""
) -> audit_pb2.AuditEvent:
    """A session sandbox started or ended (the executor's report), an
    EndSession request (``principal`` is who asked), or the count of such
    reports the executor had to drop."""
    event = audit_pb2.AuditEvent(
        labels={"component": "gateway", "version": VERSION},
        schema_version=SCHEMA_VERSION,
        kind=kind,
        timestamp=now(),
        decision_id=event_id,
        principal=principal or (session.principal if session else ""),
        session_id=cut(session.session_id, FIELD_CAPS["session_id"]) if session else "",
        decision="observed",
        rpc="EndSession" if kind == "session_end" else "",
    )
    if session is not None:
        event.session.CopyFrom(wire.session_to_proto(session))
    event.reasons.append(call_pb2.Reason(code=code, message=message))
    return event


def observation_event(
    obs: Observation, event_id: str, *, observed: bool, reason: Reason, item: Any
) -> audit_pb2.AuditEvent:
    event = audit_pb2.AuditEvent(
        labels={"component": "gateway", "version": VERSION},
        schema_version=SCHEMA_VERSION,
        kind="observation",
        timestamp=now(),
        decision_id=event_id,
        principal=obs.principal.id if obs.principal else "",
        session_id=cut(obs.session_id, FIELD_CAPS["session_id"]),
        tool=cut(obs.tool, FIELD_CAPS["tool"]),
        item_type=cut(obs.item_type, 64),
        call_id=cut(obs.item_id, FIELD_CAPS["call_id"]),
        decision="observed" if observed else "deny",
        rpc="Observe",
        arguments_bytes=len(obs.item_json.encode()),
    )
    recorded = {
        "principal": principal_doc(obs.principal) if obs.principal else None,
        "item": item
        if isinstance(item, dict)
        else {"item_json": cut(obs.item_json, RAW_AUDIT_CHARS), "status": cut(obs.status, 64)},
    }
    event.input.update(recorded)
    event.reasons.append(call_pb2.Reason(code=reason.code, message=reason.message))
    return event


def summary_event(
    event_id: str,
    *,
    kind: str,
    principal: str,
    rpc: str,
    suppressed: int,
    by_reason: Mapping[str, int],
    since: str,
) -> audit_pb2.AuditEvent:
    """Refusals above the per-window record rate (bad tokens, a principal
    over its rate), counted in one event instead of one each: a flood cannot
    fill the disk, and still nothing goes unrecorded."""
    code = kind.removesuffix("_summary")
    event = audit_pb2.AuditEvent(
        labels={"component": "gateway", "version": VERSION},
        schema_version=SCHEMA_VERSION,
        kind=kind,
        timestamp=now(),
        decision_id=event_id,
        principal=principal,
        decision="deny",
        rpc=rpc,
    )
    event.input.update({"suppressed": suppressed, "by_reason": dict(by_reason), "since": since})
    event.reasons.append(
        call_pb2.Reason(code=code, message=f"{suppressed} {code} refusals since {since} recorded in aggregate")
    )
    return event
