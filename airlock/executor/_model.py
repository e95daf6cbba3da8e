"""The executor's input and result objects (no grpc, no docker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from airlock.common.egress_http import HttpRule, SecretRef, obligation_problem
from airlock.common.wire import ArtifactLimits, InputFile, Limits, RunSpec, SandboxUse
from airlock.executor._errors import RunRefused

Outcome = Literal["ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error")


@dataclass(frozen=True)
class EffectiveLimits(Limits):
    """Limits of one run after clamping to the executor's ceilings: every
    field set, plus the open-files limit, which is the executor's alone."""

    nofile: int = 0


@dataclass
class HttpRequestRecord:
    """One request on an inspected connection (egress/inspect.py): its
    method, path without the query string, the answer's status, bytes each
    way, the rule that allowed it (``host:port#index``; "" when the host has
    no rules), the names of the secrets set on it (never their values), and
    why it was refused or cut ("" when it was relayed)."""

    method: str
    path: str
    status: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    rule: str = ""
    secret_names: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass
class EgressRecord:
    """One egress connection attempt through the proxy, as the audit trail shows it.

    cut is how an allowed connection ended early: bytes_out_limit,
    bytes_in_limit or call_ended (EGRESS_CUTS in _metrics). An inspected
    connection (TLS terminated by the proxy) lists its requests.
    """

    method: Literal["CONNECT", "HTTP"]
    host: str
    port: int
    allowed: bool = False
    reason: str = ""
    message: str = ""
    address: str = ""
    bytes_out: int = 0
    bytes_in: int = 0
    duration_ms: int = 0
    cut: str = ""
    inspected: bool = False
    requests: list[HttpRequestRecord] = field(default_factory=list)
    #: Requests beyond max_records: counted, not listed.
    requests_unrecorded: int = 0
    #: Every request's outcome ("relayed" or its reason) by count, listed
    #: or not: for the metrics only.
    request_outcomes: dict[str, int] = field(default_factory=dict)


SkipReason = Literal[
    "not_regular", "too_large", "count_limit", "total_limit", "bad_name", "nested", "collection_failed"
]
SKIP_REASONS: tuple[SkipReason, ...] = (
    "not_regular",
    "too_large",
    "count_limit",
    "total_limit",
    "bad_name",
    "nested",
    "collection_failed",
)


@dataclass(frozen=True)
class RunFiles:
    """What a call brings into its sandbox and takes out of it: its inputs,
    and its spec's artifact limits once clamped to the executor's ceilings."""

    limits: ArtifactLimits = field(default_factory=ArtifactLimits)
    inputs: tuple[InputFile, ...] = ()

    @property
    def active(self) -> bool:
        """Whether the call needs /inputs or /outputs (and so a container that
        outlives its program); a call without either runs as it always did."""
        return bool(self.inputs) or self.limits.max_outputs > 0


NO_FILES = RunFiles()


@dataclass(frozen=True)
class SkippedOutput:
    """An entry under /outputs that was not collected. ``name`` is sanitised
    for display; "*" stands for entries not examined at all."""

    name: str
    reason: SkipReason


@dataclass(frozen=True)
class OutputFileChunk:
    """One piece of a collected /outputs file; the last has eof and the size."""

    name: str
    data: bytes
    eof: bool = False
    size: int = 0


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    exit_code: int
    output_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    duration_ms: int
    container_start_ms: int
    error: str = ""
    #: Egress connection attempts (executor.egress.proxy.EgressRecord), and
    #: how many more were made than are listed.
    egress: tuple[EgressRecord, ...] = ()
    egress_unrecorded: int = 0
    #: Where it ran: ephemeral or the session's sandbox, the container, the pool claim.
    sandbox: SandboxUse = field(default_factory=SandboxUse)
    #: Entries under /outputs that were not collected, and why.
    skipped_outputs: tuple[SkippedOutput, ...] = ()


def check_egress_http(spec: RunSpec, *, enforced: bool) -> None:
    """Refuses a spec whose inspection, HTTP rules or secrets are malformed
    (spec_invalid: the same checks as the registry and the gateway's), or
    that carries any when this executor's egress proxy cannot enforce them
    (egress_unavailable): a run is never looser than its decision."""
    problem = obligation_problem(
        egress=spec.network_mode == "egress",
        allowlist=spec.egress_allowlist,
        inspect=spec.egress_inspect,
        rules=spec.egress_http_rules,
        secrets=spec.egress_secrets,
    )
    if problem:
        raise RunRefused("spec_invalid", f"network: {problem}")
    if not enforced and (spec.egress_inspect or spec.egress_http_rules or spec.egress_secrets):
        raise RunRefused(
            "egress_unavailable",
            "the decision asks for TLS inspection, HTTP rules or secrets, which this executor's egress proxy "
            "does not enforce; refusing",
        )


@dataclass(frozen=True)
class Chunk:
    """Output to forward; stream is "stdout" or "stderr"."""

    stream: Literal["stdout", "stderr"]
    data: bytes


__all__ = [
    "NO_FILES",
    "SKIP_REASONS",
    "ArtifactLimits",
    "Chunk",
    "EffectiveLimits",
    "EgressRecord",
    "HttpRule",
    "InputFile",
    "Outcome",
    "OutputFileChunk",
    "RunFiles",
    "RunResult",
    "RunSpec",
    "SandboxUse",
    "SecretRef",
    "SkipReason",
    "SkippedOutput",
    "check_egress_http",
]
