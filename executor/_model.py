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
    runtime: str = "runc"


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
