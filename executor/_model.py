"""The executor's input and result objects (no grpc, no docker)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error")


@dataclass(frozen=True)
class Limits:
    """Effective limits of one run, every field set (after clamping)."""

    memory_bytes: int
    cpu_millis: int
    pids: int
    timeout_ms: int
    output_bytes: int
    tmpfs_bytes: int
    nofile: int


@dataclass(frozen=True)
class RunSpec:
    """One run as the gateway asked for it; 0 in a limit means "default"."""

    run_id: str
    tool: str
    image: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    memory_bytes: int = 0
    cpu_millis: int = 0
    pids: int = 0
    timeout_ms: int = 0
    output_bytes: int = 0
    tmpfs_bytes: int = 0
    network_mode: Literal["none", "egress"] = "none"
    egress_allowlist: tuple[str, ...] = ()
    #: Private or otherwise always-denied networks the registry explicitly opens for this tool.
    egress_allow_cidrs: tuple[str, ...] = ()
    runtime: str = "runc"


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


@dataclass(frozen=True)
class Chunk:
    """Output to forward; stream is "stdout" or "stderr"."""

    stream: Literal["stdout", "stderr"]
    data: bytes


class RunRefused(Exception):  # noqa: N818 - a refusal, not an error: the executor is working as designed
    """The spec cannot be run safely; nothing was started."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
