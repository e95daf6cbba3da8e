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

The registry's sandbox images are pinned by the id the executor's engine (the
Docker socket compose mounts into it) has now, in the operator's folder
(``operator/images/``, the layout of airlock/cli/_images.py), and published
as ``airlock policy publish`` does under ``airlock up``: in the signed bundle
(``data.images``) and beside the gateway's registry (``gateway/images.json``),
so the gateway sends each run's digest and the executor refuses any other id
(``image_mismatch``). ``airlock deploy rescan`` scans the pinned images with
Trivy on the host and publishes again; only the operator's step signs, so
no container gains the signing key or the Docker socket (docs/images.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airlock.cli import _images
from airlock.cli._bundle import build_bundle, ensure_signing_key
from airlock.cli._layout import Identity, LayoutError, give, make_dir, read_private, write_private
from airlock.cli._opa import authz_policy, opa_config, write_capabilities
from airlock.cli._paths import DEV_PROFILE
from airlock.common import auditlog, parse_config
from airlock.common._config import to_document
from airlock.gateway._images import IMAGES_FILE

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
#: The Docker socket compose mounts into the executor (deploy/compose/compose.yaml):
#: the engine whose image ids are pinned and scanned.
DOCKER_SOCKET = Path("/var/run/docker.sock")


@dataclass(frozen=True)
class ComposeInit:
    state: Path
    env_file: Path
    policies: Path
    registry: Path
    docker_gid: int
    version: str
    runtimes: tuple[str, ...] = ("runc", "runsc")
    docker_socket: Path = DOCKER_SOCKET


@dataclass(frozen=True)
class Published:
    """What compose-init or a rescan published."""

    revision: str
    """The signed bundle's policy revision."""
    pins: dict[str, str] = field(default_factory=dict)
    """Image reference to pinned digest, as published."""
    unpinned: tuple[str, ...] = ()
    """Registry images the engine does not have (compose-init leaves them unpinned)."""
    scans: tuple[dict[str, Any], ...] = ()
    """The rescan's summaries, one per pinned registry image."""


def pins_home(state: Path) -> Path:
    """The operator's pins and scans (``images/`` under it): beside the
    bundle-signing key, in a folder no container mounts."""
    return state / "operator"


@contextlib.contextmanager
def docker_engine(socket: Path) -> Iterator[None]:
    """The docker CLI and Trivy ask the engine the executor uses, whatever
    DOCKER_HOST or context the operator's shell has. A command-line process:
    nothing else runs while it is set."""
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = f"unix://{socket.resolve()}"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old


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


def compose_init(opa: str, o: ComposeInit) -> Published:
    """Writes everything, pins the registry's images; returns what it published."""
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
    with docker_engine(o.docker_socket):
        _, unpinned = _images.pin(pins_home(state), o.registry)
    published = publish_state(opa, state, o.policies, o.registry)
    _keep_policies(o.policies, published_policies(state))

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
    return Published(published.revision, published.pins, tuple(unpinned))


def published_policies(state: Path) -> Path:
    """The copy of the policies compose-init last published: what a rescan
    re-signs by default, so a rescan changes the scans and nothing else."""
    return state / "operator" / "policies"


def _keep_policies(src: Path, dst: Path) -> None:
    staged = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(src, staged, symlinks=False)
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    staged.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def publish_state(opa: str, state: Path, policies: Path, registry: Path) -> Published:
    """The pins and scans in the operator's folder, published: to the
    gateway (``images.json`` beside its registry) first, then in the signed
    bundle, each file replaced atomically with its container's owner."""
    state = state.resolve()
    doc = _images.policy_data(pins_home(state))
    write_private(state / "gateway" / IMAGES_FILE, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), GATEWAY)
    with tempfile.TemporaryDirectory(prefix="airlock-publish-") as tmp:
        staged = Path(tmp) / "bundle.tar.gz"
        revision = build_signed_bundle(
            opa, policies, registry, state / "operator" / "bundle-signing.pem", staged, images=doc
        )
        # Never a moment in which the bundle server cannot read its file.
        write_private(state / "bundles" / "bundle.tar.gz", staged.read_bytes(), BUNDLES)
    return Published(revision, {ref: pin["digest"] for ref, pin in doc.items()})


@dataclass(frozen=True)
class Rescan:
    """``airlock deploy rescan``'s arguments; None takes the default."""

    state: Path
    policies: Path | None = None
    """Default: the copy compose-init published (``published_policies``)."""
    registry: Path | None = None
    """Default: the deployed copy, ``gateway/tool_registry.yaml``."""
    db: Path | None = None
    """The Trivy DB folder; default $AIRLOCK_TRIVY_DB, else ``operator/images/trivy-db``."""
    docker_socket: Path = DOCKER_SOCKET


def rescan(opa: str, r: Rescan) -> Published:
    """Trivy, offline, against the executor's engine for every pinned
    registry image, then the results published. Pins are never moved here
    (a retag fails the scan with ``image_mismatch``); compose-init is the
    step that pins."""
    if os.geteuid() != 0:
        raise LayoutError("deploy rescan runs as root: the files it publishes belong to the containers' uids")
    policies = r.policies or published_policies(r.state)
    if not policies.is_dir():
        raise FileNotFoundError(f"no {policies}: run `airlock deploy compose-init` first (or give --policies)")
    registry = r.registry or r.state / "gateway" / "tool_registry.yaml"
    with docker_engine(r.docker_socket):
        scans = _images.scan(pins_home(r.state), registry, _images.db_dir(pins_home(r.state), r.db), pinned_only=True)
    published = publish_state(opa, r.state, policies, registry)
    return Published(published.revision, published.pins, scans=tuple(scans))


def run_rescans(opa: str, r: Rescan, *, every_hours: float | None) -> int:
    """Once (exit status 1 on a failed scan), or at start and every
    ``every_hours`` until SIGTERM or SIGINT, a failed round said and the
    next one tried. A failure publishes nothing: the last scans stay, and a
    profile asking for fresh ones denies once they are too old."""

    def once() -> int:
        try:
            done = rescan(opa, r)
        except _images.ImageError as exc:
            print(f"airlock deploy rescan: {exc.code}: {exc}", file=sys.stderr, flush=True)
            return 1
        for summary in done.scans:
            print(json.dumps(summary), flush=True)
        print(f"airlock deploy rescan: published policy bundle {done.revision}", flush=True)
        return 0

    if every_hours is None:
        return once()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while True:
        try:
            once()
        except (RuntimeError, OSError, ValueError) as exc:  # the policies, OPA, the state: say so, try again later
            print(f"airlock deploy rescan: not published (the last bundle stays): {exc}", file=sys.stderr, flush=True)
        if stop.wait(every_hours * 3600):
            return 0


def build_signed_bundle(  # noqa: PLR0917 - opa, inputs, key, output: all needed, in that order
    opa: str,
    policies: Path,
    registry: Path,
    signing_key: Path,
    out: Path,
    allow_builtins: tuple[str, ...] = (),
    *,
    images: dict[str, Any] | None = None,
) -> str:
    """The operator's explicit, signed publishing step outside ``airlock up``:
    the bundle is built against the restricted capabilities and signed, with
    the image pins as ``data.images``; the file is replaced atomically (a
    bundle server never serves half of one)."""
    with tempfile.TemporaryDirectory(prefix="airlock-build-") as tmp:
        caps = write_capabilities(opa, Path(tmp) / "capabilities.json", allow_builtins)
        return build_bundle(opa, policies, registry, out, signing_key, capabilities=caps, images=images).revision


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
