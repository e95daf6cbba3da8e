"""The files of a local stack: folders with their owners and modes, secrets
(each held by the one user that needs it), and the daemons' configs,
validated against the daemons' own config dataclasses before they are
written. ``airlock up`` calls these; see airlock/cli/_layout.py for the
layout itself."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import secrets as secrets_module
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from airlock.cli._layout import (
    Identities,
    Identity,
    Layout,
    LayoutError,
    give,
    make_dir,
    read_private,
    unreachable_by_others,
    write_private,
)
from airlock.cli._opa import authz_policy, opa_argv, opa_config
from airlock.cli._paths import DEV_PRINCIPAL, DEV_PROFILE
from airlock.common import auditlog, parse_config
from airlock.common._config import to_document
from airlock.common.stackfile import Principal

UNTRUSTED_PRINCIPAL = "dev-untrusted"
#: The operator's principal: sees and ends every principal's sessions; its
#: profile grants no tools (the policy knows no "operator" profile).
OPERATOR_PRINCIPAL = "dev-operator"
#: The approver's principal: decides the calls the policy asks about
#: (`airlock approvals`, docs/approvals.md); like the operator's, its
#: profile grants no tools.
APPROVER_PRINCIPAL = "dev-approver"
#: principal -> profile, for the agents `airlock up` configures.
PRINCIPALS = {
    DEV_PRINCIPAL: DEV_PROFILE,
    UNTRUSTED_PRINCIPAL: "untrusted",
    OPERATOR_PRINCIPAL: "operator",
    APPROVER_PRINCIPAL: "operator",
}
#: principal -> roles (default: agent).
ROLES: dict[str, tuple[Literal["agent", "operator", "approver"], ...]] = {
    OPERATOR_PRINCIPAL: ("operator",),
    APPROVER_PRINCIPAL: ("approver",),
}
#: Capabilities the executor keeps: its firewall rules for the egress
#: network (iptables needs both). Nothing else survives the drop.
EXECUTOR_CAPS = "net_admin,net_raw"
#: Rotated audit files `airlock up` keeps (64 x 64 MiB = 4 GiB at most).
AUDIT_KEEP_FILES = 64


def my_uid() -> int:
    return os.geteuid()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def code_paths() -> list[Path]:
    """What the service users must be able to read to run the daemons."""
    import airlock  # noqa: PLC0415 - only to find where the code is

    return [Path(airlock.__file__).parent, Path(sys.executable).resolve()]


def check_reachable(ids: Identities, paths: Iterable[Path]) -> None:
    if not ids.separated:
        return
    for path in paths:
        blocked = unreachable_by_others(path)
        if blocked is not None:
            raise LayoutError(
                f"{path} is not reachable by the service users (airlock-gateway, airlock-executor, airlock-opa): "
                f"{blocked} is not traversable by others. Keep the checkout, the venv's Python, the tools and "
                "AIRLOCK_HOME in world-traversable folders (e.g. /opt, /srv, /var/lib), or run `airlock up` as an "
                "ordinary user (one trust domain)."
            )


@dataclass(frozen=True)
class Secrets:
    """The secrets `airlock up` itself needs (as the supervisor)."""

    opa_token: str
    bundle_token: str


def _token() -> bytes:
    return (secrets_module.token_urlsafe(32) + "\n").encode()


def _own_secret(path: Path, owner: Identity, value: bytes | None = None) -> bytes:
    """A secret file held by ``owner`` alone: kept if it exists (and
    re-owned), else written with ``value`` or a fresh token."""
    if path.exists() or path.is_symlink():
        give(path, owner, 0o600)  # refuses a link: it fails `up` instead of following it
        return read_private(path)
    data = value if value is not None else _token()
    write_private(path, data, owner)
    return data


def _copy_secret(data: bytes, path: Path, owner: Identity) -> None:
    write_private(path, data, owner)


def prepare(layout: Layout, ids: Identities) -> Secrets:
    """Folders, owners, modes and secrets; idempotent."""
    root = Identity("root", my_uid(), os.getegid())
    home_mode = 0o755 if ids.separated else 0o700
    make_dir(layout.home, root, home_mode)
    make_dir(layout.gateway_dir, ids.gateway, 0o700)
    make_dir(layout.audit_dir, ids.gateway, 0o700)
    # The artifact store: the gateway's alone (no agent, no sandbox reads it).
    make_dir(layout.gateway_dir / "artifacts", ids.gateway, 0o700)
    make_dir(layout.executor_dir, ids.executor, 0o700)
    make_dir(layout.opa_dir, ids.opa, 0o700)
    make_dir(layout.policy_dir, root, 0o700)
    make_dir(layout.run_dir, root, 0o755)
    # Sockets: setgid folders of the gateway's group, so the sockets the
    # executor and OPA create there belong to that group (mode 0660).
    make_dir(layout.executor_socket.parent, ids.executor, 0o2750, group=ids.gateway.gid)
    make_dir(layout.opa_socket.parent, ids.opa, 0o2750, group=ids.gateway.gid)
    make_dir(layout.home / "agents", root, 0o755)
    make_dir(layout.run_dir / "gateway", root, 0o755)
    for principal, who in ids.agents.items():
        make_dir(layout.agent_dir(principal), who, 0o700)
        # A fresh token at every start: one captured while an earlier stack
        # ran is worth nothing now.
        write_private(layout.agent_token(principal), _token(), who)
        # The agent's own socket: only the gateway can create it, only the
        # agent (its group) can connect.
        make_dir(layout.agent_socket(principal).parent, ids.gateway, 0o2750, group=who.gid)

    executor_token = _own_secret(layout.executor_dir / "executor.token", ids.executor)
    _copy_secret(executor_token, layout.gateway_dir / "executor.token", ids.gateway)
    opa_token = _own_secret(layout.gateway_dir / "opa.token", ids.gateway)
    bundle_token = _own_secret(layout.bundle_token, root)
    _copy_secret(bundle_token, layout.opa_bundle_token, ids.opa)

    if not layout.audit_signing_key.exists():
        auditlog.generate_signing_key(layout.audit_signing_key, layout.audit_public_key)
    give(layout.audit_signing_key, ids.gateway, 0o600)
    give(layout.audit_public_key, root, 0o644)
    _bundle_signing_key(layout, root)
    return Secrets(opa_token.decode().strip(), bundle_token.decode().strip())


def _bundle_signing_key(layout: Layout, root: Identity) -> None:
    """An RSA key pair for signing policy bundles: the private half stays
    with the operator (policy/), OPA gets only the public half."""
    from airlock.cli._bundle import ensure_signing_key  # noqa: PLC0415 - it imports the gateway's registry

    public = ensure_signing_key(layout.bundle_signing_key, root)
    layout.bundle_public_key.write_bytes(public)
    layout.bundle_public_key.chmod(0o644)


def _write_yaml(path: Path, data: dict[str, Any], owner: Identity) -> None:
    text = "# Written by `airlock up`; edits are overwritten.\n" + yaml.safe_dump(data, sort_keys=False)
    write_private(path, text.encode(), owner)


def write_opa_files(
    opa: str, layout: Layout, ids: Identities, secrets: Secrets, *, bundle_url: str, diagnostic: str
) -> list[str]:
    """OPA's config and authorization policy; returns its argv."""
    config = layout.opa_dir / "opa.yaml"
    _write_yaml(
        config,
        opa_config(bundle_url, layout.opa_bundle_token, layout.bundle_public_key.read_text(encoding="utf-8")),
        ids.opa,
    )
    authz = layout.opa_dir / "authz.rego"
    write_private(authz, authz_policy(secrets.opa_token).encode(), ids.opa)
    layout.opa_socket.unlink(missing_ok=True)
    return opa_argv(opa, socket=layout.opa_socket, diagnostic=diagnostic, config=config, authz=authz)


def daemon_env(home: Path) -> dict[str, str]:
    """What the Python daemons get: a fixed, minimal environment."""
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def executor_argv(layout: Layout, ids: Identities) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "airlock.executor",
        "serve",
        "--config",
        str(layout.executor_dir / "executor.yaml"),
        "--ready-file",
        str(layout.executor_dir / "executor.ready"),
    ]
    if not ids.separated:
        return argv
    ex = ids.executor
    # setpriv keeps CAP_NET_ADMIN/CAP_NET_RAW across the uid change as
    # ambient capabilities (iptables for the egress firewall) and drops
    # every other capability from the bounding set.
    return [
        "setpriv",
        f"--reuid={ex.uid}",
        f"--regid={ex.gid}",
        f"--groups={','.join(str(g) for g in ex.groups)}" if ex.groups else "--clear-groups",
        f"--inh-caps=-all,+{EXECUTOR_CAPS.replace(',', ',+')}",
        f"--ambient-caps=-all,+{EXECUTOR_CAPS.replace(',', ',+')}",
        f"--bounding-set=-all,+{EXECUTOR_CAPS.replace(',', ',+')}",
        "--",
        *argv,
    ]


def write_executor_config(layout: Layout, ids: Identities, metrics_listen: str, egress_config: Path | None) -> None:
    """executor.yaml, built as the executor's own ExecutorConfig."""
    from airlock.executor._config import EgressSettings, ExecutorConfig  # noqa: PLC0415 - CLI above the daemons

    path = layout.executor_dir / "executor.yaml"
    egress = EgressSettings()
    if egress_config is not None:
        raw = yaml.safe_load(egress_config.read_text(encoding="utf-8"))
        egress = parse_config(raw, EgressSettings, source=str(egress_config), key="egress")
    cfg = ExecutorConfig(
        socket=str(layout.executor_socket),
        token_file=str(layout.executor_dir / "executor.token"),
        metrics_listen=metrics_listen,
        # runsc is used only by tools that ask for it, and only if Docker has
        # it registered (scripts/bootstrap does that).
        runtimes=("runc", "runsc"),
        # Only the gateway's uid may connect (SO_PEERCRED), through its group.
        allowed_peer_uids=(ids.gateway.uid,),
        socket_group=ids.gateway.gid,
        # The images it may run: those the published registry names.
        registry_file=str(layout.executor_registry),
        egress=egress,
    )
    _write_config(path, cfg, ExecutorConfig, ids.executor)


def _write_config(path: Path, cfg: Any, cls: type[Any], owner: Identity) -> None:
    """Writes a config dataclass as YAML, after checking it reads back equal."""
    doc = to_document(cfg, version=1)
    if parse_config(doc, cls, source=str(path)) != cfg:
        raise LayoutError(f"{path}: the generated config does not read back as written")
    _write_yaml(path, doc, owner)


def _agents(layout: Layout) -> tuple[Any, ...]:
    """The gateway holds each agent's token digest, never the token."""
    from airlock.gateway._config import Agent  # noqa: PLC0415 - the CLI sits above the daemons

    out = []
    for principal, profile in PRINCIPALS.items():
        token = read_private(layout.agent_token(principal)).strip()
        digest = hashlib.sha256(token).hexdigest()
        out.append(
            Agent(
                id=principal,
                profile=profile,
                token_sha256=digest,
                roles=ROLES.get(principal, ("agent",)),
                socket=str(layout.agent_socket(principal)),
            )
        )
    return tuple(out)


def write_gateway_config(
    layout: Layout, ids: Identities, *, listen: str, metrics_listen: str, opa_timeout_ms: int
) -> None:
    """gateway.yaml, built as the gateway's own GatewayConfig."""
    from airlock.gateway._config import (  # noqa: PLC0415 - the CLI sits above the daemons
        ArtifactsConfig,
        AuditConfig,
        ExecutorLink,
        GatewayConfig,
        OpaConfig,
        RetentionConfig,
    )

    cfg = GatewayConfig(
        listen=listen,
        metrics_listen=metrics_listen,
        registry=str(layout.gateway_registry),
        opa=OpaConfig(
            url=f"unix://{layout.opa_socket}",
            token_file=str(layout.gateway_dir / "opa.token"),
            timeout_ms=opa_timeout_ms,
        ),
        executor=ExecutorLink(
            socket=str(layout.executor_socket), token_file=str(layout.gateway_dir / "executor.token")
        ),
        # Retention bounds the disk the log can take (64 rotated files of
        # 64 MiB), so no agent can fill it; the prune is itself a signed
        # record in the chain. Production: set audit.retention.archive_dir.
        audit=AuditConfig(
            path=str(layout.audit_log),
            signing_key_file=str(layout.audit_signing_key),
            retention=RetentionConfig(keep_files=AUDIT_KEEP_FILES),
        ),
        agents=_agents(layout),
        # The local store in the gateway's own folder, default quotas and retention.
        artifacts=ArtifactsConfig(path=str(layout.gateway_dir / "artifacts")),
    )
    _write_config(layout.gateway_dir / "gateway.yaml", cfg, GatewayConfig, ids.gateway)


def principals(layout: Layout, ids: Identities) -> dict[str, Principal]:
    return {
        p: Principal(
            profile=profile,
            token_file=str(layout.agent_token(p)),
            user=ids.agents[p].name,
            socket=str(layout.agent_socket(p)),
        )
        for p, profile in PRINCIPALS.items()
    }


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("opa", timeout=5)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def opa_query(layout: Layout, token: str, path: str, input_doc: Any = None) -> Any:
    """POSTs a data query over OPA's socket with the gateway's token (root only)."""
    conn = _UnixHTTPConnection(layout.opa_socket)
    try:
        body = json.dumps({"input": input_doc or {}})
        conn.request(
            "POST",
            f"/v1/data/{path}",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        data = json.loads(resp.read() or b"{}")
    finally:
        conn.close()
    return data


def shadow_status(layout: Layout, opa_token: str) -> str:
    """What the active policy reports as report-only, for the startup banner."""
    try:
        shadow = opa_query(layout, opa_token, "airlock/config/shadow").get("result")
    except (OSError, ValueError, http.client.HTTPException):
        return "unknown (could not read data.airlock.config.shadow)"
    if not isinstance(shadow, dict):
        return "off"
    if shadow.get("all"):
        return "ON for every deny (report only: nothing is enforced by policy)"
    parts = [f"{key} {shadow[key]}" for key in ("packages", "codes") if shadow.get(key)]
    return "report only for " + ", ".join(parts) if parts else "off"
