"""The gateway's own configuration (gateway.yaml), parsed into frozen
dataclasses. ``python -m gateway check --config FILE`` validates one offline.
Relative paths are resolved against the config file's folder."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from airlock import load_yaml_config
from airlock._tls import ClientTLS, ServerTLS
from gateway._mask import DEFAULT_KEY_PATTERN as DEFAULT_MASK_KEY_PATTERN
from gateway._mask import DEFAULT_VALUE_PATTERNS as DEFAULT_MASK_VALUE_PATTERNS

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
#: A busy executor queues runs (max_concurrent_runs); a minute of queueing
#: is generous for an agent, and beyond it the call fails rather than hangs.
DEFAULT_EXECUTOR_START_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class OpaConfig:
    """How to reach the policy engine."""

    url: str = DEFAULT_OPA_URL
    """Base URL of the OPA REST API."""
    decision_path: str = DEFAULT_DECISION_PATH
    """Data API path of the decision document."""
    granted_tools_path: str = DEFAULT_GRANTED_TOOLS_PATH
    """Data API path of the list of tools a principal may use."""
    timeout_ms: int = DEFAULT_OPA_TIMEOUT_MS
    """A decision slower than this is a deny (policy_timeout)."""

    def __post_init__(self) -> None:
        if self.timeout_ms <= 0:
            raise ValueError(f"opa.timeout_ms must be > 0, got {self.timeout_ms}")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"opa.url must be an http(s) URL, got {self.url!r}")


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
    """Client-certificate identity (a SAN DNS/URI entry or the subject CN) when the gateway requires mTLS."""

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class MaskConfig:
    """What to mask before an event is written (the policy sees the real input)."""

    pointers: tuple[str, ...] = ()
    """JSON pointers into the policy input, e.g. /call/arguments/api_key."""
    key_pattern: str | None = DEFAULT_MASK_KEY_PATTERN
    """Object keys whose values are masked wherever they appear (null: none)."""
    value_patterns: tuple[str, ...] = DEFAULT_MASK_VALUE_PATTERNS
    """Regular expressions for secret-shaped text, masked in every string."""

    def __post_init__(self) -> None:
        for p in (*self.value_patterns, *([self.key_pattern] if self.key_pattern else [])):
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"mask pattern {p!r} is not a valid regular expression: {exc}") from exc
        for p in self.pointers:
            if not p.startswith("/"):
                raise ValueError(f"mask pointer {p!r} must start with '/'")


@dataclass(frozen=True)
class AuditConfig:
    """Where audit events go."""

    path: str
    """JSON-lines file; each event is fsynced before the call proceeds."""
    key_file: str | None = None
    """HMAC key for the hash chain (without one, plain SHA-256: edits show, a full rewrite would not)."""
    max_bytes: int = DEFAULT_AUDIT_MAX_BYTES
    """Rotate to <path>.<n> once the file reaches this size."""
    group_commit: bool = True
    """Write and fsync concurrent events together (each caller still waits for its own fsync)."""
    mask: MaskConfig = field(default_factory=MaskConfig)
    """Secret masking."""


@dataclass(frozen=True)
class BudgetConfig:
    """The call counters the gateway puts in the policy input (input.counters)."""

    window_seconds: int = DEFAULT_BUDGET_WINDOW_SECONDS
    """Trailing window the counters cover."""

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError(f"budget.window_seconds must be > 0, got {self.window_seconds}")


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

    def __post_init__(self) -> None:
        ids = [a.id for a in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError("agents: ids must be unique")
        if any(a.tls_identity for a in self.agents) and (self.tls is None or self.tls.client_ca_file is None):
            raise ValueError("agents with tls_identity need tls.client_ca_file (mutual TLS)")
        if self.limits.max_arguments_bytes >= self.limits.max_message_bytes:
            raise ValueError("limits.max_arguments_bytes must be below limits.max_message_bytes")


def load_gateway_config(path: Path) -> GatewayConfig:
    """Loads gateway.yaml and resolves relative paths against its folder."""
    cfg = load_yaml_config(path, GatewayConfig)
    base = path.resolve().parent

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
        audit=replace(
            cfg.audit, path=rel(cfg.audit.path), key_file=rel(cfg.audit.key_file) if cfg.audit.key_file else None
        ),
        agents=tuple(replace(a, token_file=rel(a.token_file)) if a.token_file else a for a in cfg.agents),
    )
