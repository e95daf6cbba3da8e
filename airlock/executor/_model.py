"""The executor's input and result objects (no grpc, no docker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from airlock.common.wire import ArtifactLimits, InputFile, Limits, RunSpec, SandboxUse

Outcome = Literal["ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error")


@dataclass(frozen=True)
class EffectiveLimits(Limits):
    """Limits of one run after clamping to the executor's ceilings: every
    field set, plus the open-files limit, which is the executor's alone."""

    nofile: int = 0


@dataclass
class EgressRecord:
    """One egress connection attempt through the proxy, as the audit trail shows it.

    cut is how an allowed connection ended early: bytes_out_limit,
    bytes_in_limit or call_ended (EGRESS_CUTS in _metrics).
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
    "InputFile",
    "Outcome",
    "OutputFileChunk",
    "RunFiles",
    "RunResult",
    "RunSpec",
    "SandboxUse",
    "SkipReason",
    "SkippedOutput",
]
