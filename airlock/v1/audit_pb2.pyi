from airlock.v1 import call_pb2 as _call_pb2
from airlock.v1 import executor_pb2 as _executor_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditEvent(_message.Message):
    __slots__ = ("schema_version", "kind", "timestamp", "decision_id", "principal", "session_id", "tool", "item_type", "call_id", "decision", "reasons", "obligations", "policy_revision", "rpc", "arguments_bytes", "execution", "seq", "prev_hash", "hash", "path", "input", "result", "labels", "masked", "bundles", "would_deny", "shadow_reasons", "checkpoint", "session", "artifact", "tool_definition", "would_ask", "shadow_ask_reasons", "approval")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class BundlesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: BundleInfo
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[BundleInfo, _Mapping]] = ...) -> None: ...
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    WOULD_DENY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REASONS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    TOOL_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    WOULD_ASK_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ASK_REASONS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    kind: str
    timestamp: str
    decision_id: str
    principal: str
    session_id: str
    tool: str
    item_type: str
    call_id: str
    decision: str
    reasons: _containers.RepeatedCompositeFieldContainer[_call_pb2.Reason]
    obligations: _call_pb2.Obligations
    policy_revision: str
    rpc: str
    arguments_bytes: int
    execution: AuditExecution
    seq: int
    prev_hash: str
    hash: str
    path: str
    input: _struct_pb2.Struct
    result: _struct_pb2.Value
    labels: _containers.ScalarMap[str, str]
    masked: _containers.RepeatedScalarFieldContainer[str]
    bundles: _containers.MessageMap[str, BundleInfo]
    would_deny: bool
    shadow_reasons: _containers.RepeatedCompositeFieldContainer[_call_pb2.Reason]
    checkpoint: AuditCheckpoint
    session: _executor_pb2.SessionInfo
    artifact: AuditArtifact
    tool_definition: AuditToolDefinition
    would_ask: bool
    shadow_ask_reasons: _containers.RepeatedCompositeFieldContainer[_call_pb2.Reason]
    approval: AuditApproval
    def __init__(self, schema_version: _Optional[int] = ..., kind: _Optional[str] = ..., timestamp: _Optional[str] = ..., decision_id: _Optional[str] = ..., principal: _Optional[str] = ..., session_id: _Optional[str] = ..., tool: _Optional[str] = ..., item_type: _Optional[str] = ..., call_id: _Optional[str] = ..., decision: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[_call_pb2.Reason, _Mapping]]] = ..., obligations: _Optional[_Union[_call_pb2.Obligations, _Mapping]] = ..., policy_revision: _Optional[str] = ..., rpc: _Optional[str] = ..., arguments_bytes: _Optional[int] = ..., execution: _Optional[_Union[AuditExecution, _Mapping]] = ..., seq: _Optional[int] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., path: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., result: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., masked: _Optional[_Iterable[str]] = ..., bundles: _Optional[_Mapping[str, BundleInfo]] = ..., would_deny: _Optional[bool] = ..., shadow_reasons: _Optional[_Iterable[_Union[_call_pb2.Reason, _Mapping]]] = ..., checkpoint: _Optional[_Union[AuditCheckpoint, _Mapping]] = ..., session: _Optional[_Union[_executor_pb2.SessionInfo, _Mapping]] = ..., artifact: _Optional[_Union[AuditArtifact, _Mapping]] = ..., tool_definition: _Optional[_Union[AuditToolDefinition, _Mapping]] = ..., would_ask: _Optional[bool] = ..., shadow_ask_reasons: _Optional[_Iterable[_Union[_call_pb2.Reason, _Mapping]]] = ..., approval: _Optional[_Union[AuditApproval, _Mapping]] = ...) -> None: ...

class AuditApproval(_message.Message):
    __slots__ = ("id", "state", "principal", "session_id", "tool", "item_type", "arguments_sha256", "policy_revision", "requested_decision_id", "approver", "note", "expires_at", "decision_ms", "requested_limits_sha256")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_LIMITS_SHA256_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    principal: str
    session_id: str
    tool: str
    item_type: str
    arguments_sha256: str
    policy_revision: str
    requested_decision_id: str
    approver: str
    note: str
    expires_at: str
    decision_ms: int
    requested_limits_sha256: str
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., principal: _Optional[str] = ..., session_id: _Optional[str] = ..., tool: _Optional[str] = ..., item_type: _Optional[str] = ..., arguments_sha256: _Optional[str] = ..., policy_revision: _Optional[str] = ..., requested_decision_id: _Optional[str] = ..., approver: _Optional[str] = ..., note: _Optional[str] = ..., expires_at: _Optional[str] = ..., decision_ms: _Optional[int] = ..., requested_limits_sha256: _Optional[str] = ...) -> None: ...

class AuditToolDefinition(_message.Message):
    __slots__ = ("operation", "id", "name", "base", "scope", "owner", "sha256", "previous_scope", "created")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SCOPE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    operation: str
    id: str
    name: str
    base: str
    scope: str
    owner: str
    sha256: str
    previous_scope: str
    created: bool
    def __init__(self, operation: _Optional[str] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., base: _Optional[str] = ..., scope: _Optional[str] = ..., owner: _Optional[str] = ..., sha256: _Optional[str] = ..., previous_scope: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class AuditArtifact(_message.Message):
    __slots__ = ("operation", "ref", "artifact_session_id", "listed")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LISTED_FIELD_NUMBER: _ClassVar[int]
    operation: str
    ref: _call_pb2.ArtifactRef
    artifact_session_id: str
    listed: int
    def __init__(self, operation: _Optional[str] = ..., ref: _Optional[_Union[_call_pb2.ArtifactRef, _Mapping]] = ..., artifact_session_id: _Optional[str] = ..., listed: _Optional[int] = ...) -> None: ...

class AuditCheckpoint(_message.Message):
    __slots__ = ("reason", "covers_seq", "covers_hash", "pruned_through_seq", "pruned_through_hash", "pruned_files", "archive_dir", "key_id", "signature", "max_events", "chain_id")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COVERS_SEQ_FIELD_NUMBER: _ClassVar[int]
    COVERS_HASH_FIELD_NUMBER: _ClassVar[int]
    PRUNED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    PRUNED_THROUGH_HASH_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FILES_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_DIR_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    reason: str
    covers_seq: int
    covers_hash: str
    pruned_through_seq: int
    pruned_through_hash: str
    pruned_files: _containers.RepeatedScalarFieldContainer[str]
    archive_dir: str
    key_id: str
    signature: str
    max_events: int
    chain_id: str
    def __init__(self, reason: _Optional[str] = ..., covers_seq: _Optional[int] = ..., covers_hash: _Optional[str] = ..., pruned_through_seq: _Optional[int] = ..., pruned_through_hash: _Optional[str] = ..., pruned_files: _Optional[_Iterable[str]] = ..., archive_dir: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[str] = ..., max_events: _Optional[int] = ..., chain_id: _Optional[str] = ...) -> None: ...

class BundleInfo(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: str
    def __init__(self, revision: _Optional[str] = ...) -> None: ...

class AuditExecution(_message.Message):
    __slots__ = ("outcome", "exit_code", "output_truncated", "stdout_bytes", "stderr_bytes", "duration_ms", "container_start_ms", "error", "egress", "egress_unrecorded", "sandbox", "inputs", "artifacts", "skipped_outputs", "screenshot_sha256", "screenshot_bytes")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STDOUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_START_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EGRESS_FIELD_NUMBER: _ClassVar[int]
    EGRESS_UNRECORDED_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCREENSHOT_BYTES_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    exit_code: int
    output_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    duration_ms: int
    container_start_ms: int
    error: str
    egress: _containers.RepeatedCompositeFieldContainer[_call_pb2.EgressConnection]
    egress_unrecorded: int
    sandbox: _executor_pb2.SandboxUse
    inputs: _containers.RepeatedCompositeFieldContainer[_call_pb2.ArtifactRef]
    artifacts: _containers.RepeatedCompositeFieldContainer[_call_pb2.ArtifactRef]
    skipped_outputs: _containers.RepeatedCompositeFieldContainer[_executor_pb2.SkippedOutput]
    screenshot_sha256: str
    screenshot_bytes: int
    def __init__(self, outcome: _Optional[str] = ..., exit_code: _Optional[int] = ..., output_truncated: _Optional[bool] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ..., duration_ms: _Optional[int] = ..., container_start_ms: _Optional[int] = ..., error: _Optional[str] = ..., egress: _Optional[_Iterable[_Union[_call_pb2.EgressConnection, _Mapping]]] = ..., egress_unrecorded: _Optional[int] = ..., sandbox: _Optional[_Union[_executor_pb2.SandboxUse, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[_call_pb2.ArtifactRef, _Mapping]]] = ..., artifacts: _Optional[_Iterable[_Union[_call_pb2.ArtifactRef, _Mapping]]] = ..., skipped_outputs: _Optional[_Iterable[_Union[_executor_pb2.SkippedOutput, _Mapping]]] = ..., screenshot_sha256: _Optional[str] = ..., screenshot_bytes: _Optional[int] = ...) -> None: ...
