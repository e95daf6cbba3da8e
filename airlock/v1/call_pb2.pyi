from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_TYPE_UNSPECIFIED: _ClassVar[ItemType]
    ITEM_TYPE_FUNCTION_CALL: _ClassVar[ItemType]
    ITEM_TYPE_CUSTOM_TOOL_CALL: _ClassVar[ItemType]
    ITEM_TYPE_SHELL_CALL: _ClassVar[ItemType]
    ITEM_TYPE_LOCAL_SHELL_CALL: _ClassVar[ItemType]
    ITEM_TYPE_APPLY_PATCH_CALL: _ClassVar[ItemType]
    ITEM_TYPE_WEB_SEARCH_CALL: _ClassVar[ItemType]
    ITEM_TYPE_FILE_SEARCH_CALL: _ClassVar[ItemType]
    ITEM_TYPE_CODE_INTERPRETER_CALL: _ClassVar[ItemType]
    ITEM_TYPE_MCP_CALL: _ClassVar[ItemType]
    ITEM_TYPE_COMPUTER_CALL: _ClassVar[ItemType]

class NetworkMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_MODE_UNSPECIFIED: _ClassVar[NetworkMode]
    NETWORK_MODE_NONE: _ClassVar[NetworkMode]
    NETWORK_MODE_EGRESS: _ClassVar[NetworkMode]

class SandboxMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_MODE_UNSPECIFIED: _ClassVar[SandboxMode]
    SANDBOX_MODE_EPHEMERAL: _ClassVar[SandboxMode]
    SANDBOX_MODE_SESSION: _ClassVar[SandboxMode]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_ALLOW: _ClassVar[Verdict]
    VERDICT_DENY: _ClassVar[Verdict]
    VERDICT_ASK: _ClassVar[Verdict]
ITEM_TYPE_UNSPECIFIED: ItemType
ITEM_TYPE_FUNCTION_CALL: ItemType
ITEM_TYPE_CUSTOM_TOOL_CALL: ItemType
ITEM_TYPE_SHELL_CALL: ItemType
ITEM_TYPE_LOCAL_SHELL_CALL: ItemType
ITEM_TYPE_APPLY_PATCH_CALL: ItemType
ITEM_TYPE_WEB_SEARCH_CALL: ItemType
ITEM_TYPE_FILE_SEARCH_CALL: ItemType
ITEM_TYPE_CODE_INTERPRETER_CALL: ItemType
ITEM_TYPE_MCP_CALL: ItemType
ITEM_TYPE_COMPUTER_CALL: ItemType
NETWORK_MODE_UNSPECIFIED: NetworkMode
NETWORK_MODE_NONE: NetworkMode
NETWORK_MODE_EGRESS: NetworkMode
SANDBOX_MODE_UNSPECIFIED: SandboxMode
SANDBOX_MODE_EPHEMERAL: SandboxMode
SANDBOX_MODE_SESSION: SandboxMode
VERDICT_UNSPECIFIED: Verdict
VERDICT_ALLOW: Verdict
VERDICT_DENY: Verdict
VERDICT_ASK: Verdict

class ToolCall(_message.Message):
    __slots__ = ("call_id", "item_type", "tool", "arguments", "session_id", "requested_limits")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_LIMITS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    item_type: ItemType
    tool: str
    arguments: str
    session_id: str
    requested_limits: Limits
    def __init__(self, call_id: _Optional[str] = ..., item_type: _Optional[_Union[ItemType, str]] = ..., tool: _Optional[str] = ..., arguments: _Optional[str] = ..., session_id: _Optional[str] = ..., requested_limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class ArtifactRef(_message.Message):
    __slots__ = ("id", "name", "sha256", "size", "media_type")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    sha256: str
    size: int
    media_type: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ..., media_type: _Optional[str] = ...) -> None: ...

class ArtifactLimits(_message.Message):
    __slots__ = ("max_outputs", "max_output_bytes", "max_output_file_bytes", "max_inputs", "max_input_bytes")
    MAX_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_FILE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_outputs: int
    max_output_bytes: int
    max_output_file_bytes: int
    max_inputs: int
    max_input_bytes: int
    def __init__(self, max_outputs: _Optional[int] = ..., max_output_bytes: _Optional[int] = ..., max_output_file_bytes: _Optional[int] = ..., max_inputs: _Optional[int] = ..., max_input_bytes: _Optional[int] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("memory_bytes", "cpu_millis", "pids", "timeout_ms", "output_bytes", "tmpfs_bytes")
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TMPFS_BYTES_FIELD_NUMBER: _ClassVar[int]
    memory_bytes: int
    cpu_millis: int
    pids: int
    timeout_ms: int
    output_bytes: int
    tmpfs_bytes: int
    def __init__(self, memory_bytes: _Optional[int] = ..., cpu_millis: _Optional[int] = ..., pids: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., output_bytes: _Optional[int] = ..., tmpfs_bytes: _Optional[int] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("mode", "egress_allowlist", "egress_allow_cidrs", "inspect_hosts", "http_rules", "secrets")
    MODE_FIELD_NUMBER: _ClassVar[int]
    EGRESS_ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    EGRESS_ALLOW_CIDRS_FIELD_NUMBER: _ClassVar[int]
    INSPECT_HOSTS_FIELD_NUMBER: _ClassVar[int]
    HTTP_RULES_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    mode: NetworkMode
    egress_allowlist: _containers.RepeatedScalarFieldContainer[str]
    egress_allow_cidrs: _containers.RepeatedScalarFieldContainer[str]
    inspect_hosts: _containers.RepeatedScalarFieldContainer[str]
    http_rules: _containers.RepeatedCompositeFieldContainer[HttpRule]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretRef]
    def __init__(self, mode: _Optional[_Union[NetworkMode, str]] = ..., egress_allowlist: _Optional[_Iterable[str]] = ..., egress_allow_cidrs: _Optional[_Iterable[str]] = ..., inspect_hosts: _Optional[_Iterable[str]] = ..., http_rules: _Optional[_Iterable[_Union[HttpRule, _Mapping]]] = ..., secrets: _Optional[_Iterable[_Union[SecretRef, _Mapping]]] = ...) -> None: ...

class HttpRule(_message.Message):
    __slots__ = ("host", "methods", "paths", "max_body_bytes")
    HOST_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    host: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    paths: _containers.RepeatedScalarFieldContainer[str]
    max_body_bytes: int
    def __init__(self, host: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., paths: _Optional[_Iterable[str]] = ..., max_body_bytes: _Optional[int] = ...) -> None: ...

class SecretRef(_message.Message):
    __slots__ = ("name", "host", "header", "format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    host: str
    header: str
    format: str
    def __init__(self, name: _Optional[str] = ..., host: _Optional[str] = ..., header: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class EgressConnection(_message.Message):
    __slots__ = ("method", "host", "port", "allowed", "reason", "message", "address", "bytes_out", "bytes_in", "duration_ms", "cut", "inspected", "requests", "requests_unrecorded")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    INSPECTED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_UNRECORDED_FIELD_NUMBER: _ClassVar[int]
    method: str
    host: str
    port: int
    allowed: bool
    reason: str
    message: str
    address: str
    bytes_out: int
    bytes_in: int
    duration_ms: int
    cut: str
    inspected: bool
    requests: _containers.RepeatedCompositeFieldContainer[EgressRequest]
    requests_unrecorded: int
    def __init__(self, method: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., address: _Optional[str] = ..., bytes_out: _Optional[int] = ..., bytes_in: _Optional[int] = ..., duration_ms: _Optional[int] = ..., cut: _Optional[str] = ..., inspected: _Optional[bool] = ..., requests: _Optional[_Iterable[_Union[EgressRequest, _Mapping]]] = ..., requests_unrecorded: _Optional[int] = ...) -> None: ...

class EgressRequest(_message.Message):
    __slots__ = ("method", "path", "status", "bytes_out", "bytes_in", "rule", "secret_names", "reason")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SECRET_NAMES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    method: str
    path: str
    status: int
    bytes_out: int
    bytes_in: int
    rule: str
    secret_names: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, method: _Optional[str] = ..., path: _Optional[str] = ..., status: _Optional[int] = ..., bytes_out: _Optional[int] = ..., bytes_in: _Optional[int] = ..., rule: _Optional[str] = ..., secret_names: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class Sandbox(_message.Message):
    __slots__ = ("mode", "idle_ttl_ms", "max_lifetime_ms", "desktop")
    MODE_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIFETIME_MS_FIELD_NUMBER: _ClassVar[int]
    DESKTOP_FIELD_NUMBER: _ClassVar[int]
    mode: SandboxMode
    idle_ttl_ms: int
    max_lifetime_ms: int
    desktop: Display
    def __init__(self, mode: _Optional[_Union[SandboxMode, str]] = ..., idle_ttl_ms: _Optional[int] = ..., max_lifetime_ms: _Optional[int] = ..., desktop: _Optional[_Union[Display, _Mapping]] = ...) -> None: ...

class Display(_message.Message):
    __slots__ = ("width", "height")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Obligations(_message.Message):
    __slots__ = ("limits", "network", "sandbox", "artifacts", "computer")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTER_FIELD_NUMBER: _ClassVar[int]
    limits: Limits
    network: Network
    sandbox: Sandbox
    artifacts: ArtifactLimits
    computer: ComputerObligation
    def __init__(self, limits: _Optional[_Union[Limits, _Mapping]] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., sandbox: _Optional[_Union[Sandbox, _Mapping]] = ..., artifacts: _Optional[_Union[ArtifactLimits, _Mapping]] = ..., computer: _Optional[_Union[ComputerObligation, _Mapping]] = ...) -> None: ...

class ComputerObligation(_message.Message):
    __slots__ = ("acknowledge_safety_checks",)
    ACKNOWLEDGE_SAFETY_CHECKS_FIELD_NUMBER: _ClassVar[int]
    acknowledge_safety_checks: bool
    def __init__(self, acknowledge_safety_checks: _Optional[bool] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "verdict", "reasons", "obligations", "policy_revision", "principal", "shadow_reasons", "shadow_ask_reasons", "approval_id")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REASONS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ASK_REASONS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    verdict: Verdict
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    obligations: Obligations
    policy_revision: str
    principal: str
    shadow_reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    shadow_ask_reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    approval_id: str
    def __init__(self, decision_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., obligations: _Optional[_Union[Obligations, _Mapping]] = ..., policy_revision: _Optional[str] = ..., principal: _Optional[str] = ..., shadow_reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., shadow_ask_reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., approval_id: _Optional[str] = ...) -> None: ...
