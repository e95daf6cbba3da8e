"""Renders an artifact operation as an ``airlock.v1.AuditEvent`` of kind
"artifact": who, which operation, the decision and the artifact's reference
(sha256 and size, never the content). Masking is the audit sink's job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from airlock.gateway._audit import SCHEMA_VERSION
from airlock.gateway._input import FIELD_CAPS, cut, now
from airlock.gateway._metrics import VERSION
from airlock.gateway.artifacts._model import ArtifactRecord
from airlock.v1 import audit_pb2, call_pb2

if TYPE_CHECKING:
    from airlock.gateway.artifacts._ops import ArtifactDecision, ArtifactOp


def ref_to_proto(record: ArtifactRecord) -> call_pb2.ArtifactRef:
    return call_pb2.ArtifactRef(
        id=record.id, name=record.name, sha256=record.sha256, size=record.size, media_type=record.media_type
    )


def _raw(op: ArtifactOp) -> dict[str, Any]:
    """What was asked, for a refusal before the policy (names cut to bounds)."""
    return {
        "operation": op.operation,
        "session": cut(op.session, FIELD_CAPS["session_id"]),
        "artifact": {"id": cut(op.artifact_id, 64), "name": cut(op.name, 300), "size": op.size},
    }


def artifact_event(
    op: ArtifactOp,
    decision: ArtifactDecision,
    record: ArtifactRecord | None,
    *,
    listed: int = 0,
    operation: str = "",
) -> audit_pb2.AuditEvent:
    event = audit_pb2.AuditEvent(
        labels={"component": "gateway", "version": VERSION},
        schema_version=SCHEMA_VERSION,
        kind="artifact",
        timestamp=now(),
        decision_id=decision.decision_id,
        principal=decision.principal,
        session_id=cut(op.session, FIELD_CAPS["session_id"]),
        decision=decision.verdict,
        policy_revision=decision.policy_revision,
        rpc=op.rpc,
        path=decision.path,
    )
    event.input.update(decision.policy_input if decision.policy_input is not None else _raw(op))
    if decision.policy_result is not None:
        json_format.ParseDict(decision.policy_result, event.result)
    for name, revision in (decision.bundles or {}).items():
        event.bundles[name].revision = revision
    event.reasons.extend(call_pb2.Reason(code=r.code, message=r.message) for r in decision.reasons)
    artifact = audit_pb2.AuditArtifact(operation=operation or op.operation, listed=listed)
    if record is not None:
        artifact.ref.CopyFrom(ref_to_proto(record))
        artifact.artifact_session_id = cut(record.session, FIELD_CAPS["session_id"])
    event.artifact.CopyFrom(artifact)
    return event
