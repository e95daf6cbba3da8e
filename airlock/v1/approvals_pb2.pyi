from airlock.v1 import call_pb2 as _call_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Approval(_message.Message):
    __slots__ = ("id", "state", "principal", "session_id", "tool", "item_type", "arguments_sha256", "policy_revision", "call_id", "decision_id", "reasons", "created_at", "expires_at", "decided_at", "approver", "note", "arguments", "requested_limits_sha256", "requested_limits_json", "shadow_reasons")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_LIMITS_SHA256_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_LIMITS_JSON_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REASONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    principal: str
    session_id: str
    tool: str
    item_type: _call_pb2.ItemType
    arguments_sha256: str
    policy_revision: str
    call_id: str
    decision_id: str
    reasons: _containers.RepeatedCompositeFieldContainer[_call_pb2.Reason]
    created_at: str
    expires_at: str
    decided_at: str
    approver: str
    note: str
    arguments: str
    requested_limits_sha256: str
    requested_limits_json: str
    shadow_reasons: _containers.RepeatedCompositeFieldContainer[_call_pb2.Reason]
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., principal: _Optional[str] = ..., session_id: _Optional[str] = ..., tool: _Optional[str] = ..., item_type: _Optional[_Union[_call_pb2.ItemType, str]] = ..., arguments_sha256: _Optional[str] = ..., policy_revision: _Optional[str] = ..., call_id: _Optional[str] = ..., decision_id: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[_call_pb2.Reason, _Mapping]]] = ..., created_at: _Optional[str] = ..., expires_at: _Optional[str] = ..., decided_at: _Optional[str] = ..., approver: _Optional[str] = ..., note: _Optional[str] = ..., arguments: _Optional[str] = ..., requested_limits_sha256: _Optional[str] = ..., requested_limits_json: _Optional[str] = ..., shadow_reasons: _Optional[_Iterable[_Union[_call_pb2.Reason, _Mapping]]] = ...) -> None: ...

class ListApprovalsRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ListApprovalsResponse(_message.Message):
    __slots__ = ("approvals",)
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ...) -> None: ...

class GetApprovalRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetApprovalResponse(_message.Message):
    __slots__ = ("approval",)
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    approval: Approval
    def __init__(self, approval: _Optional[_Union[Approval, _Mapping]] = ...) -> None: ...

class ApproveCallRequest(_message.Message):
    __slots__ = ("id", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    note: str
    def __init__(self, id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ApproveCallResponse(_message.Message):
    __slots__ = ("approval",)
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    approval: Approval
    def __init__(self, approval: _Optional[_Union[Approval, _Mapping]] = ...) -> None: ...

class DenyCallRequest(_message.Message):
    __slots__ = ("id", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    note: str
    def __init__(self, id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class DenyCallResponse(_message.Message):
    __slots__ = ("approval",)
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    approval: Approval
    def __init__(self, approval: _Optional[_Union[Approval, _Mapping]] = ...) -> None: ...
