from airlock.v1 import call_pb2 as _call_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_NONZERO_EXIT: _ClassVar[Outcome]
    OUTCOME_TIMEOUT: _ClassVar[Outcome]
    OUTCOME_OOM_KILLED: _ClassVar[Outcome]
    OUTCOME_KILLED: _ClassVar[Outcome]
    OUTCOME_ERROR: _ClassVar[Outcome]

class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_UNSPECIFIED: _ClassVar[Stream]
    STREAM_STDOUT: _ClassVar[Stream]
    STREAM_STDERR: _ClassVar[Stream]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_OK: Outcome
OUTCOME_NONZERO_EXIT: Outcome
OUTCOME_TIMEOUT: Outcome
OUTCOME_OOM_KILLED: Outcome
OUTCOME_KILLED: Outcome
OUTCOME_ERROR: Outcome
STREAM_UNSPECIFIED: Stream
STREAM_STDOUT: Stream
STREAM_STDERR: Stream

class RunSpec(_message.Message):
    __slots__ = ("run_id", "tool", "image", "argv", "env", "limits", "network", "runtime", "principal", "session_id", "sandbox", "artifacts", "image_digest")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    tool: str
    image: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    limits: _call_pb2.Limits
    network: _call_pb2.Network
    runtime: str
    principal: str
    session_id: str
    sandbox: _call_pb2.Sandbox
    artifacts: _call_pb2.ArtifactLimits
    image_digest: str
    def __init__(self, run_id: _Optional[str] = ..., tool: _Optional[str] = ..., image: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[_call_pb2.Limits, _Mapping]] = ..., network: _Optional[_Union[_call_pb2.Network, _Mapping]] = ..., runtime: _Optional[str] = ..., principal: _Optional[str] = ..., session_id: _Optional[str] = ..., sandbox: _Optional[_Union[_call_pb2.Sandbox, _Mapping]] = ..., artifacts: _Optional[_Union[_call_pb2.ArtifactLimits, _Mapping]] = ..., image_digest: _Optional[str] = ...) -> None: ...

class InputFile(_message.Message):
    __slots__ = ("name", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: bytes
    def __init__(self, name: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("spec", "inputs")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    inputs: _containers.RepeatedCompositeFieldContainer[InputFile]
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[InputFile, _Mapping]]] = ...) -> None: ...

class RunResult(_message.Message):
    __slots__ = ("outcome", "exit_code", "output_truncated", "stdout_bytes", "stderr_bytes", "duration_ms", "container_start_ms", "error", "egress", "egress_unrecorded", "sandbox", "skipped_outputs")
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
    SKIPPED_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    exit_code: int
    output_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    duration_ms: int
    container_start_ms: int
    error: str
    egress: _containers.RepeatedCompositeFieldContainer[_call_pb2.EgressConnection]
    egress_unrecorded: int
    sandbox: SandboxUse
    skipped_outputs: _containers.RepeatedCompositeFieldContainer[SkippedOutput]
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., exit_code: _Optional[int] = ..., output_truncated: _Optional[bool] = ..., stdout_bytes: _Optional[int] = ..., stderr_bytes: _Optional[int] = ..., duration_ms: _Optional[int] = ..., container_start_ms: _Optional[int] = ..., error: _Optional[str] = ..., egress: _Optional[_Iterable[_Union[_call_pb2.EgressConnection, _Mapping]]] = ..., egress_unrecorded: _Optional[int] = ..., sandbox: _Optional[_Union[SandboxUse, _Mapping]] = ..., skipped_outputs: _Optional[_Iterable[_Union[SkippedOutput, _Mapping]]] = ...) -> None: ...

class SkippedOutput(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class OutputFileChunk(_message.Message):
    __slots__ = ("name", "data", "eof", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    eof: bool
    size: int
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ..., eof: _Optional[bool] = ..., size: _Optional[int] = ...) -> None: ...

class SandboxUse(_message.Message):
    __slots__ = ("mode", "container_id", "sandbox_id", "pool_hit", "claim_ms", "session_started", "session_calls")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_HIT_FIELD_NUMBER: _ClassVar[int]
    CLAIM_MS_FIELD_NUMBER: _ClassVar[int]
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    SESSION_CALLS_FIELD_NUMBER: _ClassVar[int]
    mode: _call_pb2.SandboxMode
    container_id: str
    sandbox_id: str
    pool_hit: bool
    claim_ms: int
    session_started: bool
    session_calls: int
    def __init__(self, mode: _Optional[_Union[_call_pb2.SandboxMode, str]] = ..., container_id: _Optional[str] = ..., sandbox_id: _Optional[str] = ..., pool_hit: _Optional[bool] = ..., claim_ms: _Optional[int] = ..., session_started: _Optional[bool] = ..., session_calls: _Optional[int] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("stream", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    data: bytes
    def __init__(self, stream: _Optional[_Union[Stream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ("container_id",)
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    def __init__(self, container_id: _Optional[str] = ...) -> None: ...

class RunResponse(_message.Message):
    __slots__ = ("started", "output", "result", "output_file")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FILE_FIELD_NUMBER: _ClassVar[int]
    started: Started
    output: OutputChunk
    result: RunResult
    output_file: OutputFileChunk
    def __init__(self, started: _Optional[_Union[Started, _Mapping]] = ..., output: _Optional[_Union[OutputChunk, _Mapping]] = ..., result: _Optional[_Union[RunResult, _Mapping]] = ..., output_file: _Optional[_Union[OutputFileChunk, _Mapping]] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("sandbox_id", "principal", "session_id", "image", "runtime", "container_id", "started_unix_ms", "last_used_unix_ms", "calls", "idle_ttl_ms", "max_lifetime_ms", "network", "pool_label")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIFETIME_MS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    POOL_LABEL_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    principal: str
    session_id: str
    image: str
    runtime: str
    container_id: str
    started_unix_ms: int
    last_used_unix_ms: int
    calls: int
    idle_ttl_ms: int
    max_lifetime_ms: int
    network: str
    pool_label: str
    def __init__(self, sandbox_id: _Optional[str] = ..., principal: _Optional[str] = ..., session_id: _Optional[str] = ..., image: _Optional[str] = ..., runtime: _Optional[str] = ..., container_id: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., last_used_unix_ms: _Optional[int] = ..., calls: _Optional[int] = ..., idle_ttl_ms: _Optional[int] = ..., max_lifetime_ms: _Optional[int] = ..., network: _Optional[str] = ..., pool_label: _Optional[str] = ...) -> None: ...

class ListSandboxesRequest(_message.Message):
    __slots__ = ("principal",)
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    principal: str
    def __init__(self, principal: _Optional[str] = ...) -> None: ...

class ListSandboxesResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class EndSandboxesRequest(_message.Message):
    __slots__ = ("sandbox_id", "principal", "session_id")
    SANDBOX_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    sandbox_id: str
    principal: str
    session_id: str
    def __init__(self, sandbox_id: _Optional[str] = ..., principal: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class EndSandboxesResponse(_message.Message):
    __slots__ = ("ended",)
    ENDED_FIELD_NUMBER: _ClassVar[int]
    ended: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, ended: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class WatchSandboxesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchSandboxesResponse(_message.Message):
    __slots__ = ("snapshot", "started", "ended", "lost")
    class Snapshot(_message.Message):
        __slots__ = ("sessions",)
        SESSIONS_FIELD_NUMBER: _ClassVar[int]
        sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
        def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...
    class Started(_message.Message):
        __slots__ = ("session",)
        SESSION_FIELD_NUMBER: _ClassVar[int]
        session: SessionInfo
        def __init__(self, session: _Optional[_Union[SessionInfo, _Mapping]] = ...) -> None: ...
    class Ended(_message.Message):
        __slots__ = ("session", "cause")
        SESSION_FIELD_NUMBER: _ClassVar[int]
        CAUSE_FIELD_NUMBER: _ClassVar[int]
        session: SessionInfo
        cause: str
        def __init__(self, session: _Optional[_Union[SessionInfo, _Mapping]] = ..., cause: _Optional[str] = ...) -> None: ...
    class Lost(_message.Message):
        __slots__ = ("count",)
        COUNT_FIELD_NUMBER: _ClassVar[int]
        count: int
        def __init__(self, count: _Optional[int] = ...) -> None: ...
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    snapshot: WatchSandboxesResponse.Snapshot
    started: WatchSandboxesResponse.Started
    ended: WatchSandboxesResponse.Ended
    lost: WatchSandboxesResponse.Lost
    def __init__(self, snapshot: _Optional[_Union[WatchSandboxesResponse.Snapshot, _Mapping]] = ..., started: _Optional[_Union[WatchSandboxesResponse.Started, _Mapping]] = ..., ended: _Optional[_Union[WatchSandboxesResponse.Ended, _Mapping]] = ..., lost: _Optional[_Union[WatchSandboxesResponse.Lost, _Mapping]] = ...) -> None: ...
