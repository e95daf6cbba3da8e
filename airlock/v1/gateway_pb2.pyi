from airlock.v1 import call_pb2 as _call_pb2
from airlock.v1 import executor_pb2 as _executor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecideRequest(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: _call_pb2.ToolCall
    def __init__(self, call: _Optional[_Union[_call_pb2.ToolCall, _Mapping]] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: _call_pb2.Decision
    def __init__(self, decision: _Optional[_Union[_call_pb2.Decision, _Mapping]] = ...) -> None: ...

class InvokeRequest(_message.Message):
    __slots__ = ("call",)
    CALL_FIELD_NUMBER: _ClassVar[int]
    call: _call_pb2.ToolCall
    def __init__(self, call: _Optional[_Union[_call_pb2.ToolCall, _Mapping]] = ...) -> None: ...

class InvokeResponse(_message.Message):
    __slots__ = ("decision", "result", "stdout", "stderr", "artifacts")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    decision: _call_pb2.Decision
    result: _executor_pb2.RunResult
    stdout: bytes
    stderr: bytes
    artifacts: _containers.RepeatedCompositeFieldContainer[_call_pb2.ArtifactRef]
    def __init__(self, decision: _Optional[_Union[_call_pb2.Decision, _Mapping]] = ..., result: _Optional[_Union[_executor_pb2.RunResult, _Mapping]] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., artifacts: _Optional[_Iterable[_Union[_call_pb2.ArtifactRef, _Mapping]]] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ToolInfo(_message.Message):
    __slots__ = ("name", "description", "parameters_json_schema", "item_type", "definition_id", "scope", "display", "environment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json_schema: str
    item_type: _call_pb2.ItemType
    definition_id: str
    scope: str
    display: _call_pb2.Display
    environment: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json_schema: _Optional[str] = ..., item_type: _Optional[_Union[_call_pb2.ItemType, str]] = ..., definition_id: _Optional[str] = ..., scope: _Optional[str] = ..., display: _Optional[_Union[_call_pb2.Display, _Mapping]] = ..., environment: _Optional[str] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("principal", "tools", "policy_revision")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    principal: str
    tools: _containers.RepeatedCompositeFieldContainer[ToolInfo]
    policy_revision: str
    def __init__(self, principal: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[ToolInfo, _Mapping]]] = ..., policy_revision: _Optional[str] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("item_type", "item_id", "tool", "status", "item_json", "session_id")
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEM_JSON_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    item_type: str
    item_id: str
    tool: str
    status: str
    item_json: str
    session_id: str
    def __init__(self, item_type: _Optional[str] = ..., item_id: _Optional[str] = ..., tool: _Optional[str] = ..., status: _Optional[str] = ..., item_json: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ObserveResponse(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_executor_pb2.SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[_executor_pb2.SessionInfo, _Mapping]]] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id", "sandbox_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sandbox_id: str
    def __init__(self, session_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("ended",)
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ended: _containers.RepeatedCompositeFieldContainer[_executor_pb2.SessionInfo]
    def __init__(self, ended: _Optional[_Iterable[_Union[_executor_pb2.SessionInfo, _Mapping]]] = ...) -> None: ...

class ToolDefinitionInfo(_message.Message):
    __slots__ = ("id", "name", "description", "base", "scope", "owner", "sha256", "network", "parameters_json_schema", "source", "created_at", "session_id", "call_id", "policy_revision", "retired", "calls", "sessions", "decision_id", "artifact_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    description: str
    base: str
    scope: str
    owner: str
    sha256: str
    network: bool
    parameters_json_schema: str
    source: str
    created_at: str
    session_id: str
    call_id: str
    policy_revision: str
    retired: bool
    calls: int
    sessions: int
    decision_id: str
    artifact_id: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., base: _Optional[str] = ..., scope: _Optional[str] = ..., owner: _Optional[str] = ..., sha256: _Optional[str] = ..., network: _Optional[bool] = ..., parameters_json_schema: _Optional[str] = ..., source: _Optional[str] = ..., created_at: _Optional[str] = ..., session_id: _Optional[str] = ..., call_id: _Optional[str] = ..., policy_revision: _Optional[str] = ..., retired: _Optional[bool] = ..., calls: _Optional[int] = ..., sessions: _Optional[int] = ..., decision_id: _Optional[str] = ..., artifact_id: _Optional[str] = ...) -> None: ...

class ListToolDefinitionsRequest(_message.Message):
    __slots__ = ("all", "session_id")
    ALL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    all: bool
    session_id: str
    def __init__(self, all: _Optional[bool] = ..., session_id: _Optional[str] = ...) -> None: ...

class ListToolDefinitionsResponse(_message.Message):
    __slots__ = ("definitions",)
    DEFINITIONS_FIELD_NUMBER: _ClassVar[int]
    definitions: _containers.RepeatedCompositeFieldContainer[ToolDefinitionInfo]
    def __init__(self, definitions: _Optional[_Iterable[_Union[ToolDefinitionInfo, _Mapping]]] = ...) -> None: ...

class GetToolDefinitionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetToolDefinitionResponse(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: ToolDefinitionInfo
    def __init__(self, definition: _Optional[_Union[ToolDefinitionInfo, _Mapping]] = ...) -> None: ...

class PromoteToolDefinitionRequest(_message.Message):
    __slots__ = ("id", "to")
    ID_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    id: str
    to: str
    def __init__(self, id: _Optional[str] = ..., to: _Optional[str] = ...) -> None: ...

class PromoteToolDefinitionResponse(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: ToolDefinitionInfo
    def __init__(self, definition: _Optional[_Union[ToolDefinitionInfo, _Mapping]] = ...) -> None: ...

class RetireToolDefinitionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RetireToolDefinitionResponse(_message.Message):
    __slots__ = ("definition",)
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    definition: ToolDefinitionInfo
    def __init__(self, definition: _Optional[_Union[ToolDefinitionInfo, _Mapping]] = ...) -> None: ...
