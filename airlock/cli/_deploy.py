"""``airlock deploy compose-init``: the files the Docker Compose deployment
(deploy/compose/) mounts -- secrets, daemon configs, the signed bundle --
each owned by the one container uid that needs it.

The container uids are fixed by the images (deploy/images/): a secret file
must belong to the uid that reads it, mode 0600 (airlock/common/_secrets.py),
so the same OS rule that separates the daemons under ``airlock up`` holds
between the containers. The agent's folder holds only its token; the
gateway's holds the digests of agent tokens, the OPA and executor tokens and
the audit signing key (and, for an S3 artifact store, its credentials file:
deploy/compose/README.md); OPA's holds the digest of the OPA token (in its
authorization policy), the bundle token and the bundle's public key; the
operator's holds the bundle signing key, which no container mounts.

Existing tokens and keys are kept (re-owned); configs are rewritten from the
daemons' own config dataclasses, so a generated file is one they accept.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from airlock.cli._bundle import build_bundle, ensure_signing_key
from airlock.cli._layout import Identity, LayoutError, give, make_dir, read_private, write_private
from airlock.cli._opa import authz_policy, opa_config, write_capabilities
from airlock.cli._paths import DEV_PROFILE
from airlock.common import auditlog, parse_config
from airlock.common._config import to_document

#: The images' uids (deploy/images/): one trust domain each.
GATEWAY = Identity("airlock-gateway", 10001, 10001)
EXECUTOR = Identity("airlock-executor", 10002, 10002)
OPA = Identity("airlock-opa", 10003, 10003)
AGENT = Identity("airlock-agent", 10004, 10004)
BUNDLES = Identity("airlock-bundles", 10006, 10006)
#: The agent principal of the compose example, and its profile.
AGENT_PRINCIPAL = "agent"
#: Where the containers see their folders (deploy/compose/compose.yaml).
ETC = Path("/etc/airlock")
OPA_SOCKET = "/run/airlock/opa/opa.sock"
EXECUTOR_SOCKET = "/run/airlock/executor/executor.sock"
AUDIT_LOG = "/var/lib/airlock/audit/audit.jsonl"
#: The artifact store: a named volume only the gateway mounts (its image
#: makes the folder uid 10001, mode 0700, which a new volume inherits).
ARTIFACTS_PATH = "/var/lib/airlock/artifacts"
BUNDLE_URL = "http://bundles:8181"
GATEWAY_LISTEN = "127.0.0.1:50051"
AUDIT_KEEP_FILES = 64


@dataclass(frozen=True)
class ComposeInit:
    state: Path
    env_file: Path
    policies: Path
    registry: Path
    docker_gid: int
    version: str
    runtimes: tuple[str, ...] = ("runc", "runsc")


def _token() -> bytes:
    return (secrets.token_urlsafe(32) + "\n").encode()


def _keep_or_make(path: Path, owner: Identity) -> bytes:
    if path.exists() or path.is_symlink():
        give(path, owner, 0o600)
        return read_private(path).strip()
    data = _token()
    write_private(path, data, owner)
    return data.strip()


def _yaml(data: object) -> bytes:
    header = "# Written by `airlock deploy compose-init`; edits are overwritten.\n"
    return (header + yaml.safe_dump(data, sort_keys=False)).encode()


def _config(cfg: object, cls: type[object], path: Path, owner: Identity) -> None:
    doc = to_document(cfg, version=1)
    if parse_config(doc, cls, source=str(path)) != cfg:
        raise LayoutError(f"{path}: the generated config does not read back as written")
    write_private(path, _yaml(doc), owner)


def compose_init(opa: str, o: ComposeInit) -> str:
    """Writes everything; returns the policy revision of the bundle."""
    if os.geteuid() != 0:
        raise LayoutError("compose-init runs as root: each file must belong to its container's uid")
    root = Identity("root", 0, 0)
    state = o.state.resolve()
    make_dir(state, root, 0o755)
    dirs = {"gateway": GATEWAY, "executor": EXECUTOR, "opa": OPA, "agent": AGENT, "bundles": BUNDLES}
    for name, who in dirs.items():
        make_dir(state / name, who, 0o700)
    make_dir(state / "operator", root, 0o700)

    agent_token = _keep_or_make(state / "agent" / "agent.token", AGENT)
    executor_token = _keep_or_make(state / "executor" / "executor.token", EXECUTOR)
    write_private(state / "gateway" / "executor.token", executor_token + b"\n", GATEWAY)
    opa_token = _keep_or_make(state / "gateway" / "opa.token", GATEWAY)
    bundle_token = _keep_or_make(state / "bundles" / "bundle.token", BUNDLES)
    write_private(state / "opa" / "bundle.token", bundle_token + b"\n", OPA)

    audit_key = state / "gateway" / "audit-signing.pem"
    if not audit_key.exists():
        auditlog.generate_signing_key(audit_key, state / "audit-public.pem")
    give(audit_key, GATEWAY, 0o600)
    signing = state / "operator" / "bundle-signing.pem"
    public = ensure_signing_key(signing, root)
    write_private(state / "opa" / "bundle-public.pem", public, OPA)

    registry = o.registry.read_bytes()
    for name, who in (("gateway", GATEWAY), ("executor", EXECUTOR)):
        write_private(state / name / "tool_registry.yaml", registry, who)
    revision = build_signed_bundle(opa, o.policies, o.registry, signing, state / "bundles" / "bundle.tar.gz")
    give(state / "bundles" / "bundle.tar.gz", BUNDLES, 0o600)

    write_private(
        state / "opa" / "opa.yaml",
        _yaml(opa_config(BUNDLE_URL, ETC / "opa" / "bundle.token", public.decode())),
        OPA,
    )
    write_private(state / "opa" / "authz.rego", authz_policy(opa_token.decode()).encode(), OPA)
    _gateway_config(state, hashlib.sha256(agent_token).hexdigest())
    _executor_config(state, o.runtimes)
    env = {
        "AIRLOCK_STATE": str(state),
        "AIRLOCK_VERSION": o.version,
        "DOCKER_GID": str(o.docker_gid),
    }
    o.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    return revision


def build_signed_bundle(  # noqa: PLR0917 - opa, inputs, key, output: all needed, in that order
    opa: str, policies: Path, registry: Path, signing_key: Path, out: Path, allow_builtins: tuple[str, ...] = ()
) -> str:
    """The operator's explicit, signed publishing step outside ``airlock up``:
    the bundle is built against the restricted capabilities and signed; the
    file is replaced atomically (a bundle server never serves half of one)."""
    with tempfile.TemporaryDirectory(prefix="airlock-build-") as tmp:
        caps = write_capabilities(opa, Path(tmp) / "capabilities.json", allow_builtins)
        return build_bundle(opa, policies, registry, out, signing_key, capabilities=caps).revision


def _gateway_config(state: Path, agent_digest: str) -> None:
    from airlock.gateway._config import (  # noqa: PLC0415 - the CLI sits above the daemons
        Agent,
        ArtifactsConfig,
        AuditConfig,
        ExecutorLink,
        GatewayConfig,
        OpaConfig,
        RetentionConfig,
    )

    etc = ETC / "gateway"
    cfg = GatewayConfig(
        listen=GATEWAY_LISTEN,
        metrics_listen="0.0.0.0:9464",
        registry=str(etc / "tool_registry.yaml"),
        opa=OpaConfig(url=f"unix://{OPA_SOCKET}", token_file=str(etc / "opa.token")),
        executor=ExecutorLink(socket=EXECUTOR_SOCKET, token_file=str(etc / "executor.token")),
        audit=AuditConfig(
            path=AUDIT_LOG,
            signing_key_file=str(etc / "audit-signing.pem"),
            retention=RetentionConfig(keep_files=AUDIT_KEEP_FILES),
        ),
        agents=(Agent(id=AGENT_PRINCIPAL, profile=DEV_PROFILE, token_sha256=agent_digest),),
        # As `airlock up`: the local backend, default quotas and retention.
        # backend s3 is set by environment overrides (deploy/compose/README.md).
        artifacts=ArtifactsConfig(path=ARTIFACTS_PATH),
    )
    _config(cfg, GatewayConfig, state / "gateway" / "gateway.yaml", GATEWAY)


def _executor_config(state: Path, runtimes: tuple[str, ...]) -> None:
    from airlock.executor._config import EgressSettings, ExecutorConfig  # noqa: PLC0415 - CLI above the daemons

    etc = ETC / "executor"
    cfg = ExecutorConfig(
        socket=EXECUTOR_SOCKET,
        token_file=str(etc / "executor.token"),
        metrics_listen="0.0.0.0:9465",
        runtimes=runtimes,
        allowed_peer_uids=(GATEWAY.uid,),
        socket_group=GATEWAY.gid,
        registry_file=str(etc / "tool_registry.yaml"),
        # Egress needs the host's network namespace (its proxy listens on the
        # egress bridge, its firewall rules guard the host): off in this
        # example, so grants are refused with egress_unavailable
        # (deploy/compose/README.md says how to turn it on).
        egress=EgressSettings(enabled=False),
    )
    _config(cfg, ExecutorConfig, state / "executor" / "executor.yaml", EXECUTOR)
