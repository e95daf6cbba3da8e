"""The one adapter between the wire (airlock.v1) and plain Python names:
enums are derived from the proto descriptors, messages with plain scalar
fields are converted by field name, and refusal details travel as a
google.rpc.Status (grpc-status) carrying the Decision. Every process uses
this module instead of its own copy of the tables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from airlock.common.egress_http import HttpRule, SecretRef
from airlock.v1 import call_pb2, executor_pb2


def _enum(enum: Any, prefix: str) -> dict[int, str]:
    """number -> snake-case name, without the prefix and the 0 value."""
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.DESCRIPTOR.values if v.number != 0}


#: Wire item types <-> the Responses API item type names.
ITEM_TYPE_NAMES: Mapping[int, str] = _enum(call_pb2.ItemType, "ITEM_TYPE_")
# cast: the stubs type each enum as its own int subclass, the runtime as int.
ITEM_TYPE_NUMBERS: Mapping[str, call_pb2.ItemType] = {
    name: cast("call_pb2.ItemType", n) for n, name in ITEM_TYPE_NAMES.items()
}
#: Run outcomes: ok, nonzero_exit, timeout, oom_killed, killed, error.
OUTCOME_NAMES: Mapping[int, str] = _enum(executor_pb2.Outcome, "OUTCOME_")
OUTCOME_NUMBERS: Mapping[str, executor_pb2.Outcome] = {
    name: cast("executor_pb2.Outcome", n) for n, name in OUTCOME_NAMES.items()
}
OUTCOMES: tuple[str, ...] = tuple(OUTCOME_NAMES.values())
#: Why the executor refuses a run before it starts (FAILED_PRECONDITION
#: "code: message"): its metric label set, and the codes the gateway passes
#: on as the run's own.
EXECUTOR_REFUSALS = (
    "egress_unavailable",
    "runtime_unavailable",
    "image_missing",
    "image_not_allowed",
    "spec_invalid",
    "session_limit",
    "inputs_too_many",
    "inputs_too_large",
    "input_name_invalid",
    "input_name_duplicate",
    "desktop_needs_session",
    "secret_unavailable",
    "image_mismatch",
)
#: Hosted items: run by the model provider, only observed.
HOSTED_ITEM_TYPES = frozenset({"web_search_call", "file_search_call", "code_interpreter_call", "mcp_call"})


@dataclass(frozen=True)
class Limits:
    """One run's resource limits, as the wire carries them (airlock.v1.Limits).
    0 means "not set": the policy's caps, then the executor's ceilings apply."""

    memory_bytes: int = 0
    cpu_millis: int = 0
    pids: int = 0
    timeout_ms: int = 0
    output_bytes: int = 0
    tmpfs_bytes: int = 0


LIMIT_KEYS: tuple[str, ...] = tuple(f.name for f in call_pb2.Limits.DESCRIPTOR.fields)


@dataclass(frozen=True)
class ArtifactLimits:
    """One call's artifact limits (airlock.v1.ArtifactLimits), an obligation
    of its decision. 0 outputs: nothing under /outputs is collected; 0
    inputs: the call may name no input artifact."""

    max_outputs: int = 0
    max_output_bytes: int = 0
    max_output_file_bytes: int = 0
    max_inputs: int = 0
    max_input_bytes: int = 0


ARTIFACT_LIMIT_KEYS: tuple[str, ...] = tuple(f.name for f in call_pb2.ArtifactLimits.DESCRIPTOR.fields)


@dataclass(frozen=True)
class InputFile:
    """A file copied into the sandbox, read-only, at /inputs/<name>."""

    name: str
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class SkippedOutput:
    """An entry under /outputs that was not collected, and why."""

    name: str
    reason: str


SandboxMode = Literal["ephemeral", "session"]
SANDBOX_MODE_NAMES: Mapping[int, str] = _enum(call_pb2.SandboxMode, "SANDBOX_MODE_")
SANDBOX_MODE_NUMBERS: Mapping[str, call_pb2.SandboxMode] = {
    name: cast("call_pb2.SandboxMode", n) for n, name in SANDBOX_MODE_NAMES.items()
}


@dataclass(frozen=True)
class SandboxPlan:
    """Where a call runs (airlock.v1.Sandbox): its own container, or its
    session's; for a session, how long the container may idle and live
    (0: the executor's defaults; the executor clamps both to its ceilings)."""

    mode: SandboxMode = "ephemeral"
    idle_ttl_ms: int = 0
    max_lifetime_ms: int = 0
    #: A desktop sandbox's display (0 x 0: not a desktop).
    desktop_width: int = 0
    desktop_height: int = 0

    @property
    def desktop(self) -> bool:
        return self.desktop_width > 0 and self.desktop_height > 0


@dataclass(frozen=True)
class SandboxUse:
    """Where a call ran (airlock.v1.SandboxUse)."""

    mode: SandboxMode = "ephemeral"
    container_id: str = ""
    sandbox_id: str = ""
    pool_hit: bool = False
    claim_ms: int = 0
    session_started: bool = False
    session_calls: int = 0


@dataclass(frozen=True)
class SessionInfo:
    """One live session sandbox (airlock.v1.SessionInfo)."""

    sandbox_id: str
    principal: str
    session_id: str
    image: str = ""
    runtime: str = ""
    container_id: str = ""
    started_unix_ms: int = 0
    last_used_unix_ms: int = 0
    calls: int = 0
    idle_ttl_ms: int = 0
    max_lifetime_ms: int = 0
    network: str = "none"
    pool_label: str = ""


def sandbox_to_proto(plan: SandboxPlan) -> call_pb2.Sandbox:
    msg = call_pb2.Sandbox(
        mode=SANDBOX_MODE_NUMBERS[plan.mode], idle_ttl_ms=plan.idle_ttl_ms, max_lifetime_ms=plan.max_lifetime_ms
    )
    if plan.desktop:
        msg.desktop.CopyFrom(call_pb2.Display(width=plan.desktop_width, height=plan.desktop_height))
    return msg


def sandbox_from_proto(message: call_pb2.Sandbox) -> SandboxPlan:
    mode: SandboxMode = "session" if message.mode == call_pb2.SANDBOX_MODE_SESSION else "ephemeral"
    width, height = (message.desktop.width, message.desktop.height) if message.HasField("desktop") else (0, 0)
    return SandboxPlan(
        mode, max(message.idle_ttl_ms, 0), max(message.max_lifetime_ms, 0), max(width, 0), max(height, 0)
    )


def use_to_proto(use: SandboxUse) -> executor_pb2.SandboxUse:
    fields = {f.name: getattr(use, f.name) for f in executor_pb2.SandboxUse.DESCRIPTOR.fields}
    fields["mode"] = SANDBOX_MODE_NUMBERS[use.mode]
    return executor_pb2.SandboxUse(**fields)


def use_from_proto(message: executor_pb2.SandboxUse) -> SandboxUse:
    fields = from_message(message)
    fields["mode"] = "session" if message.mode == call_pb2.SANDBOX_MODE_SESSION else "ephemeral"
    return SandboxUse(**fields)


def session_to_proto(info: SessionInfo) -> executor_pb2.SessionInfo:
    return to_message(executor_pb2.SessionInfo, info)


def session_from_proto(message: executor_pb2.SessionInfo) -> SessionInfo:
    return SessionInfo(**from_message(message))


@dataclass(frozen=True)
class RunSpec:
    """One run as the gateway asks the executor for it (airlock.v1.RunSpec):
    the gateway builds it from an allowed decision, the executor runs it."""

    run_id: str
    tool: str
    image: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    #: 0 in a field means "the executor's ceiling".
    limits: Limits = field(default_factory=Limits)
    network_mode: Literal["none", "egress"] = "none"
    egress_allowlist: tuple[str, ...] = ()
    #: Always-denied networks the registry explicitly opens for this tool.
    egress_allow_cidrs: tuple[str, ...] = ()
    #: Allowlist hosts (host:port) whose TLS the egress proxy inspects.
    egress_inspect: tuple[str, ...] = ()
    #: Per-request rules for inspected hosts (airlock.common.egress_http).
    egress_http_rules: tuple[HttpRule, ...] = ()
    #: Secrets (by name) the egress proxy adds to inspected hosts' requests.
    egress_secrets: tuple[SecretRef, ...] = ()
    runtime: str = "runc"
    #: The authenticated principal and its session id: a session sandbox is
    #: this pair's alone.
    principal: str = ""
    session_id: str = ""
    sandbox: SandboxPlan = field(default_factory=SandboxPlan)
    #: What is collected from /outputs, and how much may come in.
    artifacts: ArtifactLimits = field(default_factory=ArtifactLimits)
    #: The pinned image id the policy decided with ("": not pinned).
    image_digest: str = ""


def network_to_proto(
    mode: Literal["none", "egress"],
    allowlist: tuple[str, ...],
    allow_cidrs: tuple[str, ...],
    *,
    inspect: tuple[str, ...] = (),
    rules: tuple[HttpRule, ...] = (),
    secrets: tuple[SecretRef, ...] = (),
) -> call_pb2.Network:
    """airlock.v1.Network: a run spec's and a decision's obligations alike."""
    return call_pb2.Network(
        mode=call_pb2.NETWORK_MODE_EGRESS if mode == "egress" else call_pb2.NETWORK_MODE_NONE,
        egress_allowlist=list(allowlist),
        egress_allow_cidrs=list(allow_cidrs),
        inspect_hosts=list(inspect),
        http_rules=[
            call_pb2.HttpRule(
                host=r.host, methods=list(r.methods), paths=list(r.paths), max_body_bytes=r.max_body_bytes
            )
            for r in rules
        ],
        secrets=[to_message(call_pb2.SecretRef, s) for s in secrets],
    )


def http_rules_from_proto(network: call_pb2.Network) -> tuple[HttpRule, ...]:
    return tuple(HttpRule(r.host, tuple(r.methods), tuple(r.paths), r.max_body_bytes) for r in network.http_rules)


def secrets_from_proto(network: call_pb2.Network) -> tuple[SecretRef, ...]:
    return tuple(SecretRef(**from_message(s)) for s in network.secrets)


def spec_to_proto(spec: RunSpec) -> executor_pb2.RunSpec:
    return executor_pb2.RunSpec(
        run_id=spec.run_id,
        tool=spec.tool,
        image=spec.image,
        argv=list(spec.argv),
        env=spec.env,
        limits=to_message(call_pb2.Limits, spec.limits),
        network=network_to_proto(
            spec.network_mode,
            spec.egress_allowlist,
            spec.egress_allow_cidrs,
            inspect=spec.egress_inspect,
            rules=spec.egress_http_rules,
            secrets=spec.egress_secrets,
        ),
        runtime=spec.runtime,
        principal=spec.principal,
        session_id=spec.session_id,
        sandbox=sandbox_to_proto(spec.sandbox),
        artifacts=to_message(call_pb2.ArtifactLimits, spec.artifacts),
        image_digest=spec.image_digest,
    )


def spec_from_proto(spec: executor_pb2.RunSpec) -> RunSpec:
    return RunSpec(
        run_id=spec.run_id,
        tool=spec.tool,
        image=spec.image,
        argv=tuple(spec.argv),
        env=dict(spec.env),
        limits=Limits(**from_message(spec.limits)),
        network_mode="egress" if spec.network.mode == call_pb2.NETWORK_MODE_EGRESS else "none",
        egress_allowlist=tuple(spec.network.egress_allowlist),
        egress_allow_cidrs=tuple(spec.network.egress_allow_cidrs),
        # Carried as sent: the executor checks them (spec_invalid) before
        # anything runs.
        egress_inspect=tuple(spec.network.inspect_hosts),
        egress_http_rules=http_rules_from_proto(spec.network),
        egress_secrets=secrets_from_proto(spec.network),
        runtime=spec.runtime or "runc",
        principal=spec.principal,
        session_id=spec.session_id,
        sandbox=sandbox_from_proto(spec.sandbox),
        artifacts=ArtifactLimits(**{k: max(v, 0) for k, v in from_message(spec.artifacts).items()}),
        image_digest=spec.image_digest,
    )


def item_type_name(number: int) -> str:
    """The item type's name; "" for UNSPECIFIED or a number we do not know."""
    return ITEM_TYPE_NAMES.get(number, "")


def outcome_name(number: int) -> str:
    return OUTCOME_NAMES.get(number, "error")


M = TypeVar("M", bound=Message)


def to_message(cls: type[M], value: Any) -> M:
    """A message with the scalar fields of ``value`` (a dataclass or any
    object with those attributes) copied by name: Limits and friends, whose
    fields are the same on both sides."""
    return cls(**{f.name: getattr(value, f.name) for f in cls.DESCRIPTOR.fields if hasattr(value, f.name)})


def from_message(message: Message) -> dict[str, Any]:
    """The scalar fields of a message by name, for a dataclass's constructor."""
    return {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}


def decision_status(code: int, message: str, decision: call_pb2.Decision) -> status_pb2.Status:
    """The google.rpc.Status a refusal carries: the Decision in ``details``."""
    detail = any_pb2.Any()
    detail.Pack(decision)
    return status_pb2.Status(code=code, message=message, details=[detail])


def decision_from_status(status: status_pb2.Status | None) -> call_pb2.Decision | None:
    """The Decision packed in a refusal's status, if any."""
    if status is None:
        return None
    for detail in status.details:
        decision = call_pb2.Decision()
        if detail.Unpack(decision):
            return decision
    return None
