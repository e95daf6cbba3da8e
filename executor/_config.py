"""The executor's configuration (executor.yaml). Its limits are both the
defaults and the ceilings: a run spec can only ask for less."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from airlock import load_yaml_config, parse_duration_ms, parse_size
from airlock._tls import ServerTLS

DEFAULT_METRICS_LISTEN = "127.0.0.1:9465"
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
#: Debian's "nobody"; present in every Debian-based image, owns nothing.
DEFAULT_USER = "65534:65534"
DEFAULT_MEMORY = "512Mi"
DEFAULT_CPUS = 1.0
DEFAULT_PIDS = 128
DEFAULT_TIMEOUT = "60s"
DEFAULT_OUTPUT = "1Mi"
DEFAULT_TMPFS = "64Mi"
DEFAULT_NOFILE = 1024
#: How many runs may be in flight; more wait for a slot rather than
#: overcommitting a small host.
DEFAULT_MAX_CONCURRENT_RUNS = 16


@dataclass(frozen=True)
class Ceilings:
    """Hardened defaults; also the most any run may get."""

    memory: int | str = DEFAULT_MEMORY
    """Memory limit; swap is disabled (memory+swap = memory)."""
    cpus: float = DEFAULT_CPUS
    """CPU quota in cores."""
    pids: int = DEFAULT_PIDS
    """cgroup pids limit (stops fork bombs)."""
    timeout: int | str = DEFAULT_TIMEOUT
    """Wall-clock limit; the container is killed when it expires."""
    output: int | str = DEFAULT_OUTPUT
    """stdout+stderr bytes kept (head and tail; the middle is cut)."""
    tmpfs: int | str = DEFAULT_TMPFS
    """Size of each writable tmpfs (/tmp and /work); also the fsize ulimit."""
    nofile: int = DEFAULT_NOFILE
    """Open-files ulimit."""

    def __post_init__(self) -> None:
        for name in ("memory", "output", "tmpfs"):
            if parse_size(getattr(self, name)) <= 0:
                raise ValueError(f"limits.{name} must be > 0")
        if parse_duration_ms(self.timeout) <= 0 or self.cpus <= 0 or self.pids <= 0 or self.nofile <= 0:
            raise ValueError("limits.timeout, cpus, pids and nofile must be > 0")


@dataclass(frozen=True)
class ExecutorConfig:
    """executor.yaml, version 1."""

    token_file: str
    """Shared secret the gateway must present (on every transport)."""
    socket: str | None = None
    """Unix socket the gateway connects to (created 0600 in a 0700 folder). The default transport."""
    listen: str | None = None
    """host:port for a remote executor; requires tls with client_ca_file (mutual TLS)."""
    tls: ServerTLS | None = None
    """TLS for ``listen``."""
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    """Prometheus /metrics listen address."""
    docker_url: str = DEFAULT_DOCKER_URL
    """Docker engine endpoint; only the executor ever talks to it."""
    user: str = DEFAULT_USER
    """uid:gid every container runs as; never root."""
    runtimes: tuple[str, ...] = ("runc",)
    """Container runtimes a run may ask for (add "runsc" once gVisor is registered)."""
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    """Runs beyond this wait for a free slot."""
    limits: Ceilings = field(default_factory=Ceilings)
    """Defaults and ceilings for every run."""
    seccomp_profile: str | None = None
    """Path of the seccomp profile (JSON) every sandbox gets; None = the profile shipped in
    deploy/seccomp/airlock.json, resolved relative to the repo."""

    def __post_init__(self) -> None:
        if (self.socket is None) == (self.listen is None):
            raise ValueError("set exactly one of socket (local, the default) or listen (remote, with mTLS)")
        if self.listen is not None and (self.tls is None or self.tls.client_ca_file is None):
            raise ValueError("listen needs tls with client_ca_file: a remote executor accepts only mutual TLS")
        uid, _, gid = self.user.partition(":")
        if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0 or int(gid) == 0:
            raise ValueError(f"user must be a numeric non-root uid:gid, got {self.user!r}")
        if self.max_concurrent_runs <= 0:
            raise ValueError("max_concurrent_runs must be > 0")


def load_executor_config(path: Path) -> ExecutorConfig:
    cfg = load_yaml_config(path, ExecutorConfig)
    base = path.resolve().parent
    return replace(
        cfg,
        socket=str((base / cfg.socket).resolve()) if cfg.socket else None,
        token_file=str((base / cfg.token_file).resolve()),
        tls=cfg.tls.resolved(base) if cfg.tls else None,
        seccomp_profile=str((base / cfg.seccomp_profile).resolve()) if cfg.seccomp_profile else None,
    )
