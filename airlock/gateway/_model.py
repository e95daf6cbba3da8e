"""The gateway's input and decision objects. Plain dataclasses, no grpc: the
servicer translates protobuf to these and back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any, Literal

from airlock.common.egress_http import HttpRule, SecretRef
from airlock.common.wire import ArtifactLimits, Limits, RunSpec, SandboxPlan, SandboxUse, SessionInfo, SkippedOutput

#: The item types a registry entry may have.
ItemTypeName = Literal[
    "function_call",
    "custom_tool_call",
    "shell_call",
    "local_shell_call",
    "apply_patch_call",
    # Hosted: known so a ToolCall of these types is refused by name (item_type_hosted).
    "web_search_call",
    "file_search_call",
    "code_interpreter_call",
    "mcp_call",
    # The computer-use tool: actions run in the session's desktop sandbox.
    "computer_call",
]
#: A call's item type; "" when the caller did not say.
ItemType = ItemTypeName | Literal[""]
#: How a refusal surfaces to the caller; the servicer maps it to a gRPC code.
Refusal = Literal[
    "none",
    "unauthenticated",
    "invalid_argument",
    "permission_denied",
    "resource_exhausted",
    "unavailable",
    "internal",
    # An ask held as a pending approval (approval_pending).
    "failed_precondition",
]
#: What a principal may do besides calling tools (gateway.yaml agents[].roles).
Role = Literal["agent", "operator", "approver"]
ROLES: tuple[Role, ...] = ("agent", "operator", "approver")


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by authentication -- never by the request."""

    id: str
    profile: str
    authn: str = "token"
    roles: tuple[Role, ...] = ("agent",)


@dataclass(frozen=True)
class Call:
    """A tool call exactly as the model emitted it."""

    call_id: str
    item_type: ItemType
    tool: str
    arguments: str
    session_id: str = ""
    #: Limits the caller asked for (e.g. a shell_call's timeout_ms); None or
    #: zero fields mean no preference. The policy can only clamp them down.
    requested_limits: Limits | None = None


@dataclass(frozen=True)
class CallInput:
    """One operation's input: the call and who made it.

    ``principal`` is None when authentication failed; ``authn_error`` says why.
    """

    call: Call
    principal: Principal | None
    rpc: Literal["Decide", "Invoke"]
    authn_error: str = ""


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class Obligations:
    limits: Limits = field(default_factory=Limits)
    network_mode: Literal["none", "egress"] = "none"
    egress_allowlist: tuple[str, ...] = ()
    #: Always-denied networks the registry explicitly opens (egress_allow_cidrs).
    egress_allow_cidrs: tuple[str, ...] = ()
    #: Where the call runs: its own container, or its session's.
    sandbox: SandboxPlan = field(default_factory=SandboxPlan)
    #: What the run's /outputs may yield and its /inputs may take.
    artifacts: ArtifactLimits = field(default_factory=ArtifactLimits)
    #: A computer_call's pending safety checks are acknowledged.
    acknowledge_safety_checks: bool = False
    #: Allowlist hosts whose TLS the egress proxy inspects (network.inspect).
    egress_inspect: tuple[str, ...] = ()
    #: Per-request rules for inspected hosts (network.http_rules).
    egress_http_rules: tuple[HttpRule, ...] = ()
    #: Secrets by name the egress proxy adds to their requests (network.secrets).
    egress_secrets: tuple[SecretRef, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The answer for one call. ``reasons`` is never empty."""

    decision_id: str
    allowed: bool
    reasons: tuple[Reason, ...]
    refusal: Refusal
    obligations: Obligations = field(default_factory=Obligations)
    policy_revision: str = ""
    principal: str = ""
    #: The parsed arguments (only when they parsed), for building the run.
    arguments: Any = field(default=None, compare=False, repr=False)
    #: What the policy was asked and answered, for the audit event.
    path: str = ""
    policy_input: Any = field(default=None, compare=False, repr=False)
    policy_result: Any = field(default=None, compare=False, repr=False)
    bundles: Any = field(default=None, compare=False, repr=False)
    #: Denies in shadow (report-only) mode on an allowed call.
    shadow: tuple[Reason, ...] = ()
    #: The registry entry the policy decided with, for building the run.
    tool_entry: Any = field(default=None, compare=False, repr=False)
    #: A call to a dynamic tool: the definition it resolved to
    #: (airlock.gateway.tooldefs.Resolved), for building the run.
    dynamic: Any = field(default=None, compare=False, repr=False)
    #: The dynamic tool the decision is about, for the audit event
    #: (AuditToolDefinition's fields: operation, id, name, base, ...).
    tool_definition: Any = field(default=None, compare=False, repr=False)
    #: The policy asks for a human's approval (not allowed; see _approvals).
    ask: bool = False
    #: Asks in shadow (report-only) mode on an allowed call (would_ask).
    shadow_asks: tuple[Reason, ...] = ()
    #: Invoke of an ask: the approval holding the call, or the one it ran on
    #: (airlock.gateway._approvals.Approval), and the event it is owed
    #: after the decision's ("requested", "used", or "" for none).
    approval: Any = field(default=None, compare=False, repr=False)
    approval_event: str = ""

    def __post_init__(self) -> None:
        if not self.reasons:
            raise ValueError("a decision always carries at least one reason")
        if self.allowed != (self.refusal == "none"):
            raise ValueError("an allowed decision has no refusal and a denied one has one")

    @property
    def verdict(self) -> str:
        if self.allowed:
            return "allow"
        return "ask" if self.ask else "deny"


@dataclass(frozen=True)
class RunOutcome:
    """What the executor reported for an allowed call."""

    outcome: Literal["ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error"]
    exit_code: int
    stdout: bytes
    stderr: bytes
    output_truncated: bool
    duration_ms: int
    container_start_ms: int = 0
    error: str = ""
    #: The run's egress connection attempts (airlock.v1.EgressConnection
    #: messages, copied into the execution audit event as they are).
    egress: tuple[Any, ...] = ()
    egress_unrecorded: int = 0
    #: Where it ran (mode, container, pool claim, session).
    sandbox: SandboxUse = field(default_factory=SandboxUse)
    #: Files the run left under /outputs, as the executor sent them
    #: (spooled; the core stores them and closes the files).
    outputs: tuple[OutputFile, ...] = field(default=(), repr=False)
    #: Entries not collected (the executor's) or not stored (the gateway's), and why.
    skipped_outputs: tuple[SkippedOutput, ...] = ()
    #: The outputs as stored artifacts.
    artifacts: tuple[ArtifactRef, ...] = ()


@dataclass(frozen=True)
class OutputFile:
    """One collected /outputs file, spooled to an unnamed temporary file."""

    name: str
    size: int
    file: IO[bytes] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ArtifactRef:
    """A stored artifact as callers see it (airlock.v1.ArtifactRef)."""

    id: str
    name: str
    sha256: str
    size: int
    media_type: str = ""


@dataclass(frozen=True)
class InputArtifact:
    """An artifact a call named as input, checked and read, for /inputs."""

    ref: ArtifactRef
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class InvokeResult:
    """Invoke's answer: the decision and, when it ran, the outcome."""

    decision: Decision
    run: RunOutcome | None = None


@dataclass(frozen=True)
class Observation:
    """A hosted item the model provider ran, to be recorded (Observe)."""

    item_type: str
    item_id: str
    tool: str
    status: str
    item_json: str
    session_id: str
    principal: Principal | None
    authn_error: str = ""


@dataclass(frozen=True)
class Observed:
    """Observe's answer: the audit event's id and, on refusal, why."""

    event_id: str
    refusal: Refusal
    reason: Reason


__all__ = [
    "ROLES",
    "Call",
    "CallInput",
    "Decision",
    "InvokeResult",
    "ItemType",
    "ItemTypeName",
    "Limits",
    "Obligations",
    "Observation",
    "Observed",
    "Principal",
    "Reason",
    "Refusal",
    "Role",
    "RunOutcome",
    "RunSpec",
    "SandboxPlan",
    "SandboxUse",
    "SessionInfo",
]
