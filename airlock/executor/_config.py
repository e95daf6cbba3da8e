"""The executor's configuration (executor.yaml). Its limits are both the
defaults and the ceilings: a run spec can only ask for less."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from airlock.common import load_yaml_config, parse_duration_ms, parse_size
from airlock.common._tls import ServerTLS

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
#: The smallest egress subnet: a /28 still holds the gateway and 13 sandboxes.
MAX_EGRESS_PREFIX = 28
#: The uid:gid of the process that keeps a long-lived sandbox container
#: alive; any non-root ids other than the sandbox user's.
DEFAULT_KEEPER_USER = "65533:65533"
#: The egress CA's folder when egress.ca_dir is not set: beside token_file,
#: in the folder that holds the executor's own secrets (``executor/``, 0700,
#: under ``airlock up``).
DEFAULT_EGRESS_CA_DIR_NAME = "egress-ca"


def _own_uid() -> tuple[int, ...]:
    return (os.geteuid(),)


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
class EgressSettings:
    """The egress proxy and its network (see airlock/executor/egress)."""

    enabled: bool = True
    """Offer egress to runs whose decision grants it. When false, or when setup fails, such runs are refused."""
    network: str = "airlock-egress"
    """Docker network (internal: true) that sandboxes with egress join; created if missing."""
    bridge: str = "airlock-egress0"
    """Host bridge interface of that network; the firewall rules name it (at most 15 characters)."""
    max_connections: int = 64
    """Connection attempts per call, allowed or not."""
    max_bytes_out: int | str = "16Mi"
    """Bytes a call may send through the proxy, over all its connections."""
    max_bytes_in: int | str = "256Mi"
    """Bytes a call may receive through the proxy, over all its connections."""
    connect_timeout: int | str = "5s"
    """Resolving plus connecting to the destination."""
    header_timeout: int | str = "10s"
    """Time the sandbox has to send a request head."""
    max_records: int = 256
    """Connection records kept per call for the audit trail; further attempts are counted, not listed."""
    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Static name -> addresses answers the proxy uses before DNS (like /etc/hosts); checked like DNS answers."""
    subnet: str | None = None
    """IPv4 subnet of the egress network when the executor creates it; None = one Docker picks as free.
    Each sandbox gets a fixed address in it, the only one its proxy credential works from."""
    ca_dir: str | None = None
    """Folder of the egress CA that signs the proxy's TLS-inspection leaves (ca.key 0600, ca.pem; created
    0700, and the CA made, when missing). None = ``egress-ca`` beside token_file, the executor's own
    private folder (ExecutorConfig.egress_ca_dir); set it where that folder is read-only."""
    trust_anchors: tuple[str, ...] = ()
    """PEM files of CAs trusted when the proxy verifies an upstream server, besides the system store."""
    secrets_file: str | None = None
    """YAML ``{version: 1, secrets: {name: value}}`` of secrets the proxy may inject (owned by the executor's
    uid, mode 0600); read at start, so a change needs a restart. None = no file."""
    secrets_env: bool = True
    """Also take secrets from ``AIRLOCK_EGRESS_SECRET_<NAME>`` variables (the file wins for a name in both)."""

    def __post_init__(self) -> None:
        if not 0 < len(self.bridge) <= 15:  # noqa: PLR2004 - Linux IFNAMSIZ - 1
            raise ValueError("egress.bridge must be 1 to 15 characters (a Linux interface name)")
        for name in ("max_bytes_out", "max_bytes_in"):
            if parse_size(getattr(self, name)) <= 0:
                raise ValueError(f"egress.{name} must be > 0")
        if parse_duration_ms(self.connect_timeout) <= 0 or parse_duration_ms(self.header_timeout) <= 0:
            raise ValueError("egress.connect_timeout and header_timeout must be > 0")
        if self.max_connections <= 0 or self.max_records <= 0:
            raise ValueError("egress.max_connections and max_records must be > 0")
        if self.subnet is not None:
            _check_subnet(self.subnet)
        _check_hosts(self.hosts)
        if any(not path.strip() for path in (self.ca_dir, self.secrets_file, *self.trust_anchors) if path is not None):
            raise ValueError("egress.ca_dir, secrets_file and trust_anchors entries must be non-empty paths")


@dataclass(frozen=True)
class PoolSettings:
    """The warm pool (airlock/executor/sandboxes/pool.py): idle hardened
    containers per class, claimed by ephemeral calls without network."""

    enabled: bool = True
    """When false, every ephemeral call cold-starts its container."""
    size: int = 2
    """Idle containers kept per class."""
    max_classes: int = 8
    """Classes (image, runtime, memory, CPU, pids, tmpfs) kept warm; the least recently wanted goes first."""
    max_starting: int = 2
    """Pool containers being started at once, so refilling never takes the whole engine."""
    max_idle: int | str = "10m"
    """An idle container older than this is replaced."""
    class_ttl: int | str = "30m"
    """A class nobody asked for in this long is no longer kept warm."""
    check_interval: int | str = "10s"
    """How often idle containers are checked again (process list included)."""
    prewarm: bool = True
    """At start, warm the classes the registry's network-less tools would get."""

    def __post_init__(self) -> None:
        if self.size < 0 or self.max_classes <= 0 or self.max_starting <= 0:
            raise ValueError("pool.size must be >= 0, pool.max_classes and pool.max_starting > 0")
        for name in ("max_idle", "class_ttl", "check_interval"):
            if parse_duration_ms(getattr(self, name)) <= 0:
                raise ValueError(f"pool.{name} must be > 0")


@dataclass(frozen=True)
class SessionSettings:
    """Session sandboxes (airlock/executor/sandboxes/sessions.py)."""

    enabled: bool = True
    """When false, calls whose decision says session run ephemeral (nothing persists)."""
    max_sessions: int = 32
    """Live session sandboxes on this executor; beyond it a new one is refused: session_limit."""
    max_per_principal: int = 8
    """... and per principal."""
    idle_ttl: int | str = "10m"
    """A session's idle TTL when the decision does not set one."""
    max_lifetime: int | str = "1h"
    """A session's lifetime when the decision does not set one."""
    max_idle_ttl: int | str = "1h"
    """The most any decision may ask for."""
    max_max_lifetime: int | str = "8h"
    """The most any decision may ask for; also how long an unclaimed container lives at most (its keeper's deadline)."""
    check_interval: int | str = "5s"
    """How often idle session containers are checked (alive, unchanged, current)."""

    def __post_init__(self) -> None:
        if self.max_sessions <= 0 or self.max_per_principal <= 0:
            raise ValueError("sessions.max_sessions and sessions.max_per_principal must be > 0")
        for name in ("idle_ttl", "max_lifetime", "max_idle_ttl", "max_max_lifetime", "check_interval"):
            if parse_duration_ms(getattr(self, name)) <= 0:
                raise ValueError(f"sessions.{name} must be > 0")
        if parse_duration_ms(self.idle_ttl) > parse_duration_ms(self.max_idle_ttl):
            raise ValueError("sessions.idle_ttl must not exceed sessions.max_idle_ttl")
        if parse_duration_ms(self.max_lifetime) > parse_duration_ms(self.max_max_lifetime):
            raise ValueError("sessions.max_lifetime must not exceed sessions.max_max_lifetime")


@dataclass(frozen=True)
class ArtifactSettings:
    """Ceilings of the files a call brings into its sandbox (/inputs) and
    takes out of it (/outputs); a decision's ArtifactLimits can only ask for
    less (docs/executor-artifacts.md)."""

    max_inputs: int = 32
    """Input files one call may bring."""
    max_input_bytes: int | str = "64Mi"
    """Their total size; also sizes /inputs and, with some headroom, the largest RunRequest the
    executor's gRPC server accepts."""
    max_outputs: int = 256
    """Files collected from /outputs per call."""
    max_output_bytes: int | str = "256Mi"
    """Their total size (the /outputs tmpfs is the container's tmpfs limit in any case)."""
    max_output_file_bytes: int | str = "256Mi"
    """The largest single collected file."""
    transfer_timeout: int | str = "30s"
    """Wall-clock bound on copying the inputs in, and separately on collecting the outputs."""

    def __post_init__(self) -> None:
        if self.max_inputs < 0 or self.max_outputs < 0:
            raise ValueError("artifacts.max_inputs and artifacts.max_outputs must be >= 0")
        for name in ("max_input_bytes", "max_output_bytes", "max_output_file_bytes"):
            if parse_size(getattr(self, name)) <= 0:
                raise ValueError(f"artifacts.{name} must be > 0")
        if parse_duration_ms(self.transfer_timeout) <= 0:
            raise ValueError("artifacts.transfer_timeout must be > 0")


def _check_hosts(hosts: Mapping[str, tuple[str, ...]]) -> None:
    for name, addresses in hosts.items():
        for address in addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"egress.hosts.{name}: {address!r} is not an IP address") from None


def _check_subnet(subnet: str) -> None:
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError:
        raise ValueError(f"egress.subnet: {subnet!r} is not an IPv4 network like 172.30.0.0/16") from None
    if net.prefixlen > MAX_EGRESS_PREFIX:
        raise ValueError(f"egress.subnet must be a /{MAX_EGRESS_PREFIX} or larger")


@dataclass(frozen=True)
class ExecutorConfig:
    """executor.yaml, version 1."""

    token_file: str
    """Shared secret the gateway must present (on every transport)."""
    socket: str | None = None
    """Unix socket the gateway connects to. The default transport. Without socket_group it is 0600 in a
    0700 folder; with it, 0660 in a 0750 setgid folder, both of that group."""
    allowed_peer_uids: tuple[int, ...] = field(default_factory=_own_uid)
    """uids whose processes may talk to the socket (checked with SO_PEERCRED on every connection, before
    gRPC sees a byte, in addition to the token); default: the executor's own uid."""
    socket_group: int | None = None
    """gid that may open the socket (the gateway's group); None: only the executor's uid (and root)."""
    registry_file: str | None = None
    """The tool registry (tool_registry.yaml): only images its tools name are run (re-read when it
    changes). Without it (and without allowed_images) every run is refused: image_not_allowed."""
    allowed_images: tuple[str, ...] = ()
    """Images allowed besides the registry's, by exact reference; for tests and bench setups."""
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
    keeper_user: str = DEFAULT_KEEPER_USER
    """uid:gid of the keeper of long-lived (pool and session) containers: never root, never ``user``,
    so a call's processes cannot signal it and one sweep as ``user`` ends them all."""
    runtimes: tuple[str, ...] = ("runc",)
    """Container runtimes a run may ask for (add "runsc" once gVisor is registered)."""
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    """Runs beyond this wait for a free slot."""
    limits: Ceilings = field(default_factory=Ceilings)
    """Defaults and ceilings for every run."""
    egress: EgressSettings = field(default_factory=EgressSettings)
    """Filtered egress for runs whose decision grants it."""
    pool: PoolSettings = field(default_factory=PoolSettings)
    """The warm pool of idle sandbox containers."""
    sessions: SessionSettings = field(default_factory=SessionSettings)
    """Session sandboxes."""
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    """Files copied into sandboxes (/inputs) and collected from them (/outputs)."""
    instance: str | None = None
    """Names this executor's sandboxes on the Docker engine (its start-up sweep removes only its own
    leftovers); None: a digest of ``socket`` or ``listen``. Set it when executors in containers share
    one engine, where every one has the same socket path (deploy/compose sets the project name)."""
    seccomp_profile: str | None = None
    """Path of the seccomp profile (JSON) every sandbox gets; None = the profile shipped in
    deploy/seccomp/airlock.json (package data ``airlock.deploy``)."""

    def __post_init__(self) -> None:
        if (self.socket is None) == (self.listen is None):
            raise ValueError("set exactly one of socket (local, the default) or listen (remote, with mTLS)")
        if self.listen is not None and (self.tls is None or self.tls.client_ca_file is None):
            raise ValueError("listen needs tls with client_ca_file: a remote executor accepts only mutual TLS")
        for name in ("user", "keeper_user"):
            uid, _, gid = getattr(self, name).partition(":")
            if not (uid.isdigit() and gid.isdigit()) or int(uid) == 0 or int(gid) == 0:
                raise ValueError(f"{name} must be a numeric non-root uid:gid, got {getattr(self, name)!r}")
        if self.keeper_user.partition(":")[0] == self.user.partition(":")[0]:
            raise ValueError("keeper_user must have another uid than user (a call must not be able to signal it)")
        if self.max_concurrent_runs <= 0:
            raise ValueError("max_concurrent_runs must be > 0")
        if not self.allowed_peer_uids or any(u < 0 for u in self.allowed_peer_uids):
            raise ValueError("allowed_peer_uids must list at least one uid, each >= 0")
        if self.socket_group is not None and self.socket_group < 0:
            raise ValueError("socket_group must be a gid >= 0")
        if (self.instance is not None and not self.instance.strip()) or any(
            not image.strip() for image in self.allowed_images
        ):
            raise ValueError("instance and allowed_images entries must be non-empty")

    @property
    def egress_ca_dir(self) -> Path:
        """egress.ca_dir, or by default ``egress-ca`` beside token_file."""
        if self.egress.ca_dir is not None:
            return Path(self.egress.ca_dir)
        return Path(self.token_file).parent / DEFAULT_EGRESS_CA_DIR_NAME


#: Environment variables that override executor.yaml keys start with this
#: (``AIRLOCK_EXECUTOR_POOL__SIZE=4``); ``AIRLOCK_EXECUTOR_CONFIG`` names the file.
ENV_PREFIX = "AIRLOCK_EXECUTOR_"


def load_executor_config(path: Path | None, env: Mapping[str, str] | None = None) -> ExecutorConfig:
    """Loads executor.yaml (plus ``AIRLOCK_EXECUTOR_*`` overrides from ``env``;
    None: none); relative paths resolve against the file's folder."""
    cfg = load_yaml_config(path, ExecutorConfig, env=env, env_prefix=ENV_PREFIX if env is not None else None)
    base = path.resolve().parent if path is not None else Path.cwd()
    egress = cfg.egress
    return replace(
        cfg,
        egress=replace(
            egress,
            ca_dir=str((base / egress.ca_dir).resolve()) if egress.ca_dir else None,
            trust_anchors=tuple(str((base / anchor).resolve()) for anchor in egress.trust_anchors),
            secrets_file=str((base / egress.secrets_file).resolve()) if egress.secrets_file else None,
        ),
        socket=str((base / cfg.socket).resolve()) if cfg.socket else None,
        token_file=str((base / cfg.token_file).resolve()),
        tls=cfg.tls.resolved(base) if cfg.tls else None,
        seccomp_profile=str((base / cfg.seccomp_profile).resolve()) if cfg.seccomp_profile else None,
        registry_file=str((base / cfg.registry_file).resolve()) if cfg.registry_file else None,
    )
