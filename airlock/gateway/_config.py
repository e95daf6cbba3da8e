"""The gateway's own configuration (gateway.yaml), parsed into frozen
dataclasses. ``python -m airlock.gateway check --config FILE`` validates one offline.
Relative paths are resolved against the config file's folder."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from airlock.common import load_yaml_config
from airlock.common._tls import ClientTLS, ServerTLS
from airlock.gateway._mask import DEFAULT_KEY_PATTERN as DEFAULT_MASK_KEY_PATTERN
from airlock.gateway._mask import DEFAULT_VALUE_PATTERNS as DEFAULT_MASK_VALUE_PATTERNS
from airlock.gateway._model import ROLES, Role

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
DEFAULT_OPA_URL = "http://127.0.0.1:8181"
DEFAULT_DECISION_PATH = "airlock/decision"
DEFAULT_GRANTED_TOOLS_PATH = "airlock/granted_tools"
#: OPA answers in well under a millisecond locally; 250 ms only trips when it
#: is really stuck, and then the call is denied rather than left hanging.
DEFAULT_OPA_TIMEOUT_MS = 250
DEFAULT_MAX_ARGUMENTS_BYTES = 64 * 1024
#: The transport cap sits above the arguments cap so that an oversized call
#: still reaches our code and gets its audit event; only a message beyond
#: this is refused by gRPC itself (RESOURCE_EXHAUSTED, before any parsing).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: Extra time on top of a run's own timeout before the gateway gives up on
#: the executor (container start and teardown happen outside the timeout).
DEFAULT_EXECUTOR_GRACE_MS = 15_000
DEFAULT_AUDIT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_BUDGET_WINDOW_SECONDS = 3600
#: A local Redis answers a count in well under a millisecond; 50 ms only
#: trips when it is really stuck, and then the call is denied.
DEFAULT_BUDGET_REDIS_TIMEOUT_MS = 50
DEFAULT_BUDGET_REDIS_USERNAME = "airlock-gateway"
DEFAULT_BUDGET_REDIS_KEY_PREFIX = "airlock:budget"
_KEY_PREFIX_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: A busy executor queues runs (max_concurrent_runs); a minute of queueing
#: is generous for an agent, and beyond it the call fails rather than hangs.
DEFAULT_EXECUTOR_START_TIMEOUT_MS = 60_000
#: The executor's default max_concurrent_runs, and half of it per principal:
#: a second principal always finds free slots while one is busy.
DEFAULT_EXECUTOR_RUN_SLOTS = 16
DEFAULT_EXECUTOR_RUNS_PER_PRINCIPAL = 8
#: Decisions in progress at once (parsing, OPA, the audit record), and one
#: principal's share: 16 keep both cores busy; 4 for one principal leave
#: room for everyone else when one floods.
DEFAULT_POLICY_CONCURRENCY = 16
DEFAULT_POLICY_PER_PRINCIPAL = 4
DEFAULT_POLICY_QUEUE_TIMEOUT_MS = 5_000
DEFAULT_MAX_ARGUMENTS_DEPTH = 32
DEFAULT_MAX_IN_FLIGHT_PER_PRINCIPAL = 32
#: Streams one connection may hold open (gRPC clients share one connection
#: per target between channels, so a busy client process multiplexes many).
DEFAULT_MAX_CONCURRENT_STREAMS = 64
#: Connections are recycled after this age (clients reconnect on their own),
#: so a connection held open with never-finished streams does not live on.
DEFAULT_MAX_CONNECTION_AGE_MS = 600_000
DEFAULT_MAX_CONNECTION_AGE_GRACE_MS = 300_000
DEFAULT_MAX_CONNECTION_IDLE_MS = 120_000
#: An agent needs one connection; the cap stops an fd exhaustion (20,600
#: idle connections did it before) and sits far below the fd limit the
#: gateway raises itself to at start.
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTIONS_PER_SOCKET = 256
#: Per principal. Far above what an agent loop does (a few calls a second)
#: and what the benchmarks drive, while an agent that floods writes at most
#: a few MB/s of audit log: with the retention `airlock up` sets, the disk
#: cannot fill.
DEFAULT_CALLS_PER_SECOND = 5000.0
DEFAULT_CALLS_BURST = 10_000
DEFAULT_ARGUMENT_BYTES_PER_SECOND = 2 * 1024 * 1024
DEFAULT_ARGUMENT_BYTES_BURST = 16 * 1024 * 1024
DEFAULT_UNAUTHENTICATED_RECORDS = 20
DEFAULT_UNAUTHENTICATED_WINDOW_MS = 10_000


@dataclass(frozen=True)
class OpaConfig:
    """How to reach the policy engine."""

    url: str = DEFAULT_OPA_URL
    """OPA's REST API: ``unix:///path/opa.sock`` (what ``airlock up`` uses: a
    socket only the gateway's group can open), ``https://host:port``, or
    ``http://`` on a loopback address only (a network attacker who could
    answer "allow" must never be able to)."""
    token_file: str | None = None
    """Bearer token OPA requires (``--authentication=token``); OPA's
    authorization policy admits only this token, and only for the decision
    queries."""
    tls: ClientTLS | None = None
    """CA (and client certificate for mTLS) for an ``https://`` OPA."""
    decision_path: str = DEFAULT_DECISION_PATH
    """Data API path of the decision document."""
    granted_tools_path: str = DEFAULT_GRANTED_TOOLS_PATH
    """Data API path of the list of tools a principal may use."""
    timeout_ms: int = DEFAULT_OPA_TIMEOUT_MS
    """A decision slower than this is a deny (policy_timeout)."""
    concurrency: int = DEFAULT_POLICY_CONCURRENCY
    """Decisions in progress at once (parsing, policy, audit), shared fairly between principals."""
    per_principal: int = DEFAULT_POLICY_PER_PRINCIPAL
    """One principal's share of ``concurrency``."""
    queue_timeout_ms: int = DEFAULT_POLICY_QUEUE_TIMEOUT_MS
    """How long a call waits for a decision slot before it is denied (gateway_overloaded)."""

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0 or self.queue_timeout_ms <= 0:
            raise ValueError("opa.timeout_ms and opa.queue_timeout_ms must be > 0")
        if self.concurrency < 1 or self.per_principal < 1:
            raise ValueError("opa.concurrency and opa.per_principal must be >= 1")
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme == "unix":
            if not parsed.path.startswith("/"):
                raise ValueError(f"opa.url: a unix socket URL needs an absolute path, got {self.url!r}")
        elif parsed.scheme == "http":
            if not _is_loopback(parsed.hostname or ""):
                raise ValueError(
                    f"opa.url {self.url!r}: plain http is accepted only on a loopback address; "
                    "use https:// (with opa.tls) or a unix:// socket"
                )
        elif parsed.scheme != "https":
            raise ValueError(f"opa.url must be unix://, https:// or loopback http://, got {self.url!r}")
        if self.tls is not None and parsed.scheme != "https":
            raise ValueError("opa.tls applies to an https:// opa.url only")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ExecutorLink:
    """How to reach the executor daemon."""

    token_file: str
    """File holding the shared secret the executor requires."""
    socket: str | None = None
    """Path of the executor's Unix socket (the default transport)."""
    address: str | None = None
    """host:port of a remote executor; requires tls with a client certificate."""
    tls: ClientTLS | None = None
    """mTLS settings for ``address``."""
    grace_ms: int = DEFAULT_EXECUTOR_GRACE_MS
    """Added to a run's timeout to bound the run once its container started."""
    start_timeout_ms: int = DEFAULT_EXECUTOR_START_TIMEOUT_MS
    """How long a run may wait for a free executor slot and a started container."""
    max_concurrent_runs: int = DEFAULT_EXECUTOR_RUN_SLOTS
    """Runs the gateway sends at once (set it to the executor's max_concurrent_runs)."""
    max_runs_per_principal: int = DEFAULT_EXECUTOR_RUNS_PER_PRINCIPAL
    """One principal's share of those runs, so one agent cannot hold every slot."""

    def __post_init__(self) -> None:
        if (self.socket is None) == (self.address is None):
            raise ValueError("executor: set exactly one of socket or address")
        if self.address is not None and (self.tls is None or self.tls.cert_file is None):
            raise ValueError("executor.address needs tls with cert_file and key_file (mutual TLS)")

    @property
    def target(self) -> str:
        return f"unix://{self.socket}" if self.socket else str(self.address)


@dataclass(frozen=True)
class Agent:
    """One agent identity: a bearer token (token_file or token_sha256), a
    client certificate (tls_identity), or both."""

    id: str
    """The principal id policy sees."""
    profile: str = "default"
    """The principal's profile (grant set and caps in policy data)."""
    token_file: str | None = None
    """File holding the agent's bearer token."""
    token_sha256: str | None = None
    """Hex SHA-256 of the bearer token, so the config need not hold the secret."""
    tls_identity: str | None = None
    """Client-certificate identity when the gateway requires mTLS: a URI SAN
    (e.g. ``spiffe://airlock/agent/dev-agent``) in a certificate issued by
    ``tls.client_ca_file``, which must be a CA dedicated to Airlock agents.
    Only URI SANs count; DNS names and the subject CN never do."""
    roles: tuple[Role, ...] = ("agent",)
    """What this principal may do: ``agent`` (call tools), ``operator``
    (manage the gateway), ``approver`` (decide approvals)."""
    socket: str | None = None
    """A Unix socket this agent alone reaches the gateway on (its folder, made by root, is the gateway's with
    the agent's group, mode 2750): no other local user can connect to it or pose as the gateway there. Served
    by a gRPC server of its own (``limits.max_connections_per_socket``), and only this agent's credential is
    accepted on it."""

    def __post_init__(self) -> None:
        # The executor reads an empty principal as "no filter" (ListSandboxes,
        # EndSandboxes): an agent named "" would see and end everyone's sandboxes.
        if not self.id.strip():
            raise ValueError(f"agent id {self.id!r} is empty: each agent needs a non-blank id (its principal)")
        if self.id.startswith("airlock:"):
            # The artifact store's namespaces of the gateway's own (dynamic
            # tools' definitions) start with it.
            raise ValueError(f"agent id {self.id!r}: ids starting with 'airlock:' are reserved")
        for role in self.roles:
            if role not in ROLES:
                raise ValueError(f"agent {self.id!r}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if "agent" in self.roles and "approver" in self.roles:
            # One token that both calls tools and approves could approve the
            # calls of every other agent (docs/approvals.md).
            raise ValueError(
                f"agent {self.id!r}: roles 'agent' and 'approver' cannot be combined: a principal that calls "
                "tools must not approve calls; give the approver a principal of its own"
            )
        if self.tls_identity is not None and "://" not in self.tls_identity:
            raise ValueError(f"agent {self.id!r}: tls_identity must be a URI SAN such as spiffe://airlock/agent/NAME")
        if self.token_file is not None and self.token_sha256 is not None:
            raise ValueError(f"agent {self.id!r}: set token_file or token_sha256, not both")
        if self.token_file is None and self.token_sha256 is None and self.tls_identity is None:
            raise ValueError(f"agent {self.id!r}: needs a token (token_file or token_sha256) or a tls_identity")
        if self.token_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.token_sha256):
            raise ValueError(f"agent {self.id!r}: token_sha256 must be 64 hex characters")


@dataclass(frozen=True)
class Limits:
    """Input size limits."""

    max_arguments_bytes: int = DEFAULT_MAX_ARGUMENTS_BYTES
    """A call whose raw arguments are longer is refused (arguments_too_large)."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """gRPC transport cap on one request message."""
    max_arguments_depth: int = DEFAULT_MAX_ARGUMENTS_DEPTH
    """Deepest nesting of arrays/objects accepted in arguments (arguments_malformed above)."""
    max_in_flight_per_principal: int = DEFAULT_MAX_IN_FLIGHT_PER_PRINCIPAL
    """Calls one principal may have in flight; more are refused at once (too_many_in_flight)."""
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    """HTTP/2 streams one connection may open at once."""
    max_connection_age_ms: int = DEFAULT_MAX_CONNECTION_AGE_MS
    """A connection older than this is closed gracefully (clients reconnect)."""
    max_connection_age_grace_ms: int = DEFAULT_MAX_CONNECTION_AGE_GRACE_MS
    """How long calls on a closing connection may still finish (longer than any run)."""
    max_connection_idle_ms: int = DEFAULT_MAX_CONNECTION_IDLE_MS
    """A connection idle this long is closed, so idle connections cannot hoard file descriptors."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open client connections at most; beyond it new ones are refused (kept below the fd limit)."""
    max_connections_per_socket: int = DEFAULT_MAX_CONNECTIONS_PER_SOCKET
    """Open connections at most on each agent's own socket (agents[].socket): one agent cannot take another's."""
    calls_per_second: float = DEFAULT_CALLS_PER_SECOND
    """Calls (Decide, Invoke, Observe) one principal may make per second, sustained; above it: rate_limited."""
    calls_burst: int = DEFAULT_CALLS_BURST
    """How many calls a principal may make at once above the sustained rate."""
    argument_bytes_per_second: int = DEFAULT_ARGUMENT_BYTES_PER_SECOND
    """Argument (and observed item) bytes one principal may send per second, sustained."""
    argument_bytes_burst: int = DEFAULT_ARGUMENT_BYTES_BURST
    """Burst allowance of argument bytes (at least max_arguments_bytes)."""
    unauthenticated_records_per_window: int = DEFAULT_UNAUTHENTICATED_RECORDS
    """Unauthenticated calls recorded one event each per window; the rest go into one summary event."""
    unauthenticated_window_ms: int = DEFAULT_UNAUTHENTICATED_WINDOW_MS
    """The window for ``unauthenticated_records_per_window``."""

    def __post_init__(self) -> None:
        for name in (
            "max_arguments_bytes",
            "max_arguments_depth",
            "max_in_flight_per_principal",
            "max_concurrent_streams",
            "max_connection_age_ms",
            "max_connection_age_grace_ms",
            "max_connection_idle_ms",
            "max_connections",
            "calls_burst",
            "argument_bytes_per_second",
            "argument_bytes_burst",
            "unauthenticated_window_ms",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"limits.{name} must be >= 1")
        if self.calls_per_second <= 0:
            raise ValueError("limits.calls_per_second must be > 0")
        if self.argument_bytes_burst < self.max_arguments_bytes:
            raise ValueError("limits.argument_bytes_burst must be at least limits.max_arguments_bytes")

    @property
    def max_concurrent_rpcs(self) -> int:
        """gRPC's server-wide RPC cap, set so that no set of connections can
        reach it: it counts a stream from its headers, before authentication
        and before the per-principal caps, so a lower value would let a few
        connections of never-finished streams refuse everyone (seen: 4
        connections x 64 streams against a cap of 256)."""
        return self.max_connections * self.max_concurrent_streams + 64


@dataclass(frozen=True)
class MaskConfig:
    """What to mask before an event is written (the policy sees the real input)."""

    pointers: tuple[str, ...] = ()
    """JSON pointers into the policy input, e.g. /call/arguments/api_key (the event's /input/call/arguments/api_key)."""
    key_pattern: str | None = DEFAULT_MASK_KEY_PATTERN
    """RE2 pattern for object keys whose values are masked wherever they appear (null: none)."""
    value_patterns: tuple[str, ...] = DEFAULT_MASK_VALUE_PATTERNS
    """RE2 patterns for secret-shaped text, masked in every string (a group named secret* narrows the mask)."""

    def __post_init__(self) -> None:
        # Imported here so this edit stays inside the audit section; _mask
        # is already loaded by the module-level import above.
        from airlock.gateway._mask import compile_pattern  # noqa: PLC0415

        for p in (*self.value_patterns, *([self.key_pattern] if self.key_pattern else [])):
            compile_pattern(p)  # ValueError naming the pattern and RE2's reason
        for p in self.pointers:
            if not p.startswith("/"):
                raise ValueError(f"mask pointer {p!r} must start with '/'")


#: A signed checkpoint at least every this many lines and seconds: what a
#: crash can leave unsigned, and how stale the signature can be.
DEFAULT_AUDIT_CHECKPOINT_EVENTS = 1000
DEFAULT_AUDIT_CHECKPOINT_SECONDS = 10.0


@dataclass(frozen=True)
class RetentionConfig:
    """What happens to rotated audit files. The defaults keep every file; when
    files are pruned, a signed "pruned" checkpoint says so in the live chain
    first, so `airlock audit verify` on the rest shows no cut."""

    keep_files: int | None = None
    """Keep at most this many rotated files (<path>.<n>) next to the log (null: all)."""
    max_age_days: float | None = None
    """Prune rotated files last written more than this many days ago (null: never by age)."""
    archive_dir: str | None = None
    """Move pruned files into this folder instead of deleting them (relative to the config file)."""

    def __post_init__(self) -> None:
        if self.keep_files is not None and self.keep_files < 0:
            raise ValueError(f"audit.retention.keep_files must be >= 0, got {self.keep_files}")
        if self.max_age_days is not None and self.max_age_days <= 0:
            raise ValueError(f"audit.retention.max_age_days must be > 0, got {self.max_age_days}")
        if self.archive_dir is not None and self.keep_files is None and self.max_age_days is None:
            raise ValueError("audit.retention.archive_dir needs keep_files or max_age_days (nothing would be moved)")

    @property
    def prunes(self) -> bool:
        return self.keep_files is not None or self.max_age_days is not None


@dataclass(frozen=True)
class AuditConfig:
    """Where audit events go."""

    path: str
    """JSON-lines file; each event is fsynced before the call proceeds. Its folder must be the gateway's own."""
    signing_key_file: str | None = None
    """Ed25519 private key (PEM) that signs checkpoints; required to serve. Verifiers need only the public key."""
    max_bytes: int = DEFAULT_AUDIT_MAX_BYTES
    """Rotate to <path>.<n> once the file reaches this size."""
    group_commit: bool = True
    """Write and fsync concurrent events together (each caller still waits for its own fsync)."""
    checkpoint_events: int = DEFAULT_AUDIT_CHECKPOINT_EVENTS
    """Write a signed checkpoint after at most this many lines."""
    checkpoint_seconds: float = DEFAULT_AUDIT_CHECKPOINT_SECONDS
    """... and at most this many seconds after an unsigned line."""
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    """Pruning or archiving of rotated files."""
    mask: MaskConfig = field(default_factory=MaskConfig)
    """Secret masking."""

    def __post_init__(self) -> None:
        if self.checkpoint_events < 1:
            raise ValueError(f"audit.checkpoint_events must be >= 1, got {self.checkpoint_events}")
        if self.checkpoint_seconds <= 0:
            raise ValueError(f"audit.checkpoint_seconds must be > 0, got {self.checkpoint_seconds}")
        if self.max_bytes < 1:
            raise ValueError(f"audit.max_bytes must be >= 1, got {self.max_bytes}")


@dataclass(frozen=True)
class BudgetRedisConfig:
    """The Redis server several gateways share their counters in (docs/scaling.md)."""

    url: str
    """``unix:///path/redis.sock`` (a socket only the gateway's group can
    open), ``rediss://host:port`` (TLS), or ``redis://`` on a loopback
    address only (the password must not cross a network in clear)."""
    password_file: str
    """The ACL user's password: the gateway's own file, mode 0600."""
    username: str = DEFAULT_BUDGET_REDIS_USERNAME
    """The ACL user (Redis's ``default`` user should be off)."""
    timeout_ms: int = DEFAULT_BUDGET_REDIS_TIMEOUT_MS
    """A count slower than this is a deny (budget_unavailable)."""
    key_prefix: str = DEFAULT_BUDGET_REDIS_KEY_PREFIX
    """Namespace of every key; gateways that share budgets use the same one."""
    tls: ClientTLS | None = None
    """CA (and client certificate) for a ``rediss://`` url."""

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ValueError(f"budget.redis.timeout_ms must be > 0, got {self.timeout_ms}")
        if not self.username:
            raise ValueError("budget.redis.username must not be empty")
        if not _KEY_PREFIX_RE.fullmatch(self.key_prefix):
            raise ValueError(
                f"budget.redis.key_prefix {self.key_prefix!r}: 1 to 64 of letters, digits and . _ - : expected"
            )
        scheme = _check_redis_url(self.url)
        if self.tls is not None and scheme != "rediss":
            raise ValueError("budget.redis.tls applies to a rediss:// url only")


def _check_redis_url(url: str) -> str:
    """The url's scheme; ValueError unless it is one we accept."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "unix":
        if not parsed.path.startswith("/") or parsed.netloc:
            raise ValueError(f"budget.redis.url: a unix socket URL needs an absolute path, got {url!r}")
    elif parsed.scheme == "redis":
        if not _is_loopback(parsed.hostname or ""):
            raise ValueError(
                f"budget.redis.url {url!r}: plain redis:// is accepted only on a loopback address; "
                "use rediss:// (with budget.redis.tls) or a unix:// socket"
            )
    elif parsed.scheme != "rediss":
        raise ValueError(f"budget.redis.url must be unix://, rediss:// or loopback redis://, got {url!r}")
    if parsed.username or parsed.password:
        raise ValueError("budget.redis.url must not carry credentials; use username and password_file")
    return parsed.scheme


@dataclass(frozen=True)
class BudgetConfig:
    """The call counters the gateway puts in the policy input (input.counters)."""

    window_seconds: int = DEFAULT_BUDGET_WINDOW_SECONDS
    """Trailing window the counters cover."""
    store: Literal["memory", "redis"] = "memory"
    """memory: this gateway's own counters; redis: counters shared by every
    gateway using the same Redis and key prefix (several replicas, one budget)."""
    redis: BudgetRedisConfig | None = None
    """Required for store redis."""

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError(f"budget.window_seconds must be > 0, got {self.window_seconds}")
        if (self.store == "redis") != (self.redis is not None):
            raise ValueError("budget.redis is required for store redis and only for it")


#: Artifact store defaults: per principal, 1 GiB in at most 10,000
#: artifacts of at most 256 MiB each; kept 30 days; swept hourly.
DEFAULT_ARTIFACTS_PATH = "artifacts"
DEFAULT_ARTIFACT_QUOTA_BYTES = 1024**3
DEFAULT_ARTIFACT_QUOTA_COUNT = 10_000
DEFAULT_ARTIFACT_MAX_BYTES = 256 * 1024**2
DEFAULT_ARTIFACT_RETENTION_SECONDS = 30 * 86_400
DEFAULT_ARTIFACT_SWEEP_SECONDS = 3600
DEFAULT_ARTIFACTS_DECISION_PATH = "airlock/artifacts/decision"
DEFAULT_S3_PREFIX = "airlock"
DEFAULT_S3_REGION = "us-east-1"


@dataclass(frozen=True)
class ArtifactQuotaConfig:
    """What one principal may hold (the same for every principal)."""

    max_bytes: int = DEFAULT_ARTIFACT_QUOTA_BYTES
    """Bytes of distinct content a principal may hold; a put beyond it is artifact_quota_exceeded."""
    max_count: int = DEFAULT_ARTIFACT_QUOTA_COUNT
    """Artifacts a principal may hold."""
    max_artifact_bytes: int = DEFAULT_ARTIFACT_MAX_BYTES
    """The largest single artifact (artifact_too_large)."""

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_count", "max_artifact_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"artifacts.quota.{name} must be >= 1")


@dataclass(frozen=True)
class ArtifactS3Config:
    """An S3-compatible bucket shared by every gateway that points at it."""

    endpoint_url: str
    """The S3 endpoint, e.g. https://s3.example.com (http:// only on loopback)."""
    bucket: str
    """The bucket (it must exist)."""
    credentials_file: str
    """YAML or JSON with access_key_id and secret_access_key; the gateway's own file, mode 0600."""
    prefix: str = DEFAULT_S3_PREFIX
    """Key prefix for blobs and metadata inside the bucket."""
    region: str = DEFAULT_S3_REGION
    """The region the client signs for."""

    def __post_init__(self) -> None:
        parsed = urllib.parse.urlsplit(self.endpoint_url)
        if parsed.scheme == "http" and not _is_loopback(parsed.hostname or ""):
            raise ValueError(f"artifacts.s3.endpoint_url {self.endpoint_url!r}: plain http only on a loopback address")
        if parsed.scheme not in ("http", "https"):
            raise ValueError(
                f"artifacts.s3.endpoint_url must be https:// (or loopback http://), got {self.endpoint_url!r}"
            )
        if not self.bucket:
            raise ValueError("artifacts.s3.bucket must not be empty")


@dataclass(frozen=True)
class ArtifactsConfig:
    """The artifact store behind ArtifactService (docs/artifacts.md)."""

    backend: Literal["local", "s3"] = "local"
    """local: a directory with SQLite (one gateway); s3: an S3-compatible bucket (several gateways)."""
    path: str = DEFAULT_ARTIFACTS_PATH
    """The local backend's directory (made 0700; relative to the config file); the s3 backend spools here."""
    s3: ArtifactS3Config | None = None
    """Required for backend s3."""
    quota: ArtifactQuotaConfig = field(default_factory=ArtifactQuotaConfig)
    """Per-principal quotas, enforced at put."""
    retention_seconds: int | None = DEFAULT_ARTIFACT_RETENTION_SECONDS
    """Artifacts older than this are removed by the sweeper (null: kept until deleted)."""
    sweep_interval_seconds: int = DEFAULT_ARTIFACT_SWEEP_SECONDS
    """How often the sweeper runs (retention, orphaned blobs, the stored-bytes gauge)."""
    decision_path: str = DEFAULT_ARTIFACTS_DECISION_PATH
    """Data API path of the artifact decision document."""

    def __post_init__(self) -> None:
        if (self.backend == "s3") != (self.s3 is not None):
            raise ValueError("artifacts.s3 is required for backend s3 and only for it")
        if self.retention_seconds is not None and self.retention_seconds < 1:
            raise ValueError("artifacts.retention_seconds must be >= 1 (or null: keep)")
        if self.sweep_interval_seconds < 1:
            raise ValueError("artifacts.sweep_interval_seconds must be >= 1")


#: Approvals: Invoke answers an ask at once; an approval lives 15 minutes;
#: 100 pending per principal.
DEFAULT_APPROVAL_WAIT_MS = 0
DEFAULT_APPROVAL_TTL_MS = 900_000
DEFAULT_APPROVAL_MAX_PENDING = 100


@dataclass(frozen=True)
class ApprovalsConfig:
    """Calls the policy asks a human about (docs/approvals.md)."""

    wait_ms: int = DEFAULT_APPROVAL_WAIT_MS
    """How long Invoke of an ask waits for an approver before it answers
    approval_pending (0: at once). The wait holds one of the principal's
    in-flight calls."""
    ttl_ms: int = DEFAULT_APPROVAL_TTL_MS
    """How long an approval lives from its request, pending or granted and
    unused; then it expires (approval_expired)."""
    max_pending_per_principal: int = DEFAULT_APPROVAL_MAX_PENDING
    """Pending approvals one principal may have; more asks are refused (approvals_full)."""

    def __post_init__(self) -> None:
        if self.wait_ms < 0:
            raise ValueError(f"approvals.wait_ms must be >= 0, got {self.wait_ms}")
        if self.ttl_ms < 1:
            raise ValueError(f"approvals.ttl_ms must be >= 1, got {self.ttl_ms}")
        if self.wait_ms >= self.ttl_ms:
            raise ValueError("approvals.wait_ms must be below approvals.ttl_ms")
        if self.max_pending_per_principal < 1:
            raise ValueError("approvals.max_pending_per_principal must be >= 1")


@dataclass(frozen=True)
class GatewayConfig:
    """gateway.yaml, version 1."""

    registry: str
    """Path of tool_registry.yaml."""
    executor: ExecutorLink
    """The executor daemon."""
    audit: AuditConfig
    """The audit sink."""
    agents: tuple[Agent, ...]
    """Who may call."""
    listen: str = DEFAULT_LISTEN
    """gRPC listen address (host:port; port 0 picks a free one)."""
    metrics_listen: str = DEFAULT_METRICS_LISTEN
    """Prometheus /metrics listen address."""
    opa: OpaConfig = field(default_factory=OpaConfig)
    """The policy engine."""
    tls: ServerTLS | None = None
    """TLS for the gRPC listener; with client_ca_file, agents may authenticate by certificate."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Call counters for budget rules."""
    limits: Limits = field(default_factory=Limits)
    """Input limits."""
    artifacts: ArtifactsConfig | None = None
    """The artifact store and ArtifactService (null: none; every artifact call is artifact_store_unavailable)."""
    approvals: ApprovalsConfig = field(default_factory=ApprovalsConfig)
    """Calls held for an approver (the policy's asks) and ApprovalService."""
    insecure: bool = False
    """Allow a plaintext listener on a non-loopback address (never do this
    outside a test: tokens would cross the network in clear)."""

    def __post_init__(self) -> None:
        host = self.listen.rpartition(":")[0].strip("[]")
        if self.tls is None and not self.insecure and not _is_loopback(host):
            raise ValueError(
                f"listen {self.listen!r} is not a loopback address and tls is not set; "
                "configure tls (or set insecure: true for a throwaway test setup)"
            )
        ids = [a.id for a in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError("agents: ids must be unique")
        sockets = [a.socket for a in self.agents if a.socket]
        if len(sockets) != len(set(sockets)):
            raise ValueError("agents: each agent needs a socket of its own")
        if any(a.tls_identity for a in self.agents) and (self.tls is None or self.tls.client_ca_file is None):
            raise ValueError("agents with tls_identity need tls.client_ca_file (mutual TLS)")
        if self.limits.max_arguments_bytes >= self.limits.max_message_bytes:
            raise ValueError("limits.max_arguments_bytes must be below limits.max_message_bytes")


#: Environment variables that override gateway.yaml keys start with this
#: (``AIRLOCK_GATEWAY_OPA__URL`` sets ``opa.url``); ``AIRLOCK_GATEWAY_CONFIG``
#: names the file itself.
ENV_PREFIX = "AIRLOCK_GATEWAY_"


def load_gateway_config(path: Path | None, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Loads gateway.yaml (plus ``AIRLOCK_GATEWAY_*`` overrides from ``env``;
    None: none) and resolves relative paths against the file's folder (the
    working directory when there is no file)."""
    cfg = load_yaml_config(path, GatewayConfig, env=env, env_prefix=ENV_PREFIX if env is not None else None)
    base = path.resolve().parent if path is not None else Path.cwd()

    def rel(p: str) -> str:
        return str((base / p).resolve())

    return replace(
        cfg,
        registry=rel(cfg.registry),
        executor=replace(
            cfg.executor,
            socket=rel(cfg.executor.socket) if cfg.executor.socket else None,
            token_file=rel(cfg.executor.token_file),
            tls=cfg.executor.tls.resolved(base) if cfg.executor.tls else None,
        ),
        tls=cfg.tls.resolved(base) if cfg.tls else None,
        budget=replace(
            cfg.budget,
            redis=replace(
                cfg.budget.redis,
                password_file=rel(cfg.budget.redis.password_file),
                tls=cfg.budget.redis.tls.resolved(base) if cfg.budget.redis.tls else None,
            )
            if cfg.budget.redis
            else None,
        ),
        audit=replace(
            cfg.audit,
            path=rel(cfg.audit.path),
            signing_key_file=rel(cfg.audit.signing_key_file) if cfg.audit.signing_key_file else None,
            retention=replace(
                cfg.audit.retention,
                archive_dir=rel(cfg.audit.retention.archive_dir) if cfg.audit.retention.archive_dir else None,
            ),
        ),
        artifacts=replace(
            cfg.artifacts,
            path=rel(cfg.artifacts.path),
            s3=replace(cfg.artifacts.s3, credentials_file=rel(cfg.artifacts.s3.credentials_file))
            if cfg.artifacts.s3
            else None,
        )
        if cfg.artifacts
        else None,
        agents=tuple(
            replace(
                a,
                token_file=rel(a.token_file) if a.token_file else None,
                socket=rel(a.socket) if a.socket else None,
            )
            for a in cfg.agents
        ),
    )
