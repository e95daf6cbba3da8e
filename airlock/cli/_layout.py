"""Who runs what, and where its files live: the trust domains of a local stack.

Started as root, ``airlock up`` runs each part as its own system user, and
the OS keeps them apart:

- airlock-gateway runs the gateway and reads gateway/: its config, the
  audit log, the audit signing key, its executor and OPA tokens.
- airlock-executor runs the executor and reads executor/ (config, token);
  it reaches the Docker socket through group `docker` and keeps
  CAP_NET_ADMIN for its firewall rules.
- airlock-opa runs OPA and reads opa/ (config, authorization policy,
  bundle-server token), with an empty environment.
- airlock-agent, airlock-untrusted, ...: one per principal; each reads
  agents/<principal>/token, its own credential, and nothing else.
- root (the operator) runs `airlock up` and `airlock policy publish`, and
  alone reads policy/ (the bundle-signing key).

The executor's socket lives in run/executor/ (setgid, group airlock-gateway,
mode 2750) and OPA's in run/opa/ (the same): only the gateway's group can
open them, and the executor checks the peer's uid on top of its token.

Started by an ordinary user, everything runs as that user in a 0700 home:
one trust domain, which ``airlock up`` says at start.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

GATEWAY_USER = "airlock-gateway"
EXECUTOR_USER = "airlock-executor"
OPA_USER = "airlock-opa"
#: The agent user of each principal `airlock up` configures.
AGENT_USERS = {
    "dev-agent": "airlock-agent",
    "dev-untrusted": "airlock-untrusted",
    "dev-operator": "airlock-operator",
    "dev-approver": "airlock-approver",
}
DOCKER_GROUP = "docker"


class LayoutError(RuntimeError):
    """The stack cannot be laid out safely; the message says what to fix."""


@dataclass(frozen=True)
class Identity:
    """A uid/gid (and supplementary groups) a part of the stack runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Identities:
    """Who runs each part. ``separated`` is False when not started as root:
    then every part is the invoking user."""

    separated: bool
    gateway: Identity
    executor: Identity
    opa: Identity
    agents: Mapping[str, Identity] = field(default_factory=dict)


def _lookup(name: str) -> Identity | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return Identity(name, pw.pw_uid, pw.pw_gid)


def _ensure_user(name: str) -> Identity:
    found = _lookup(name)
    if found is not None:
        return found
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [  # noqa: S607 - useradd from the base system
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _lookup(name)  # another `airlock up` may have created it meanwhile
    if found is None:
        raise LayoutError(f"could not create system user {name}: {proc.stderr.strip() or proc.returncode}")
    return found


def ensure_identities(principals: Iterable[str]) -> Identities:
    """Creates the system users (as root) or uses the invoking user for all."""
    if os.geteuid() != 0:
        me = Identity(pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid())
        return Identities(False, me, me, me, dict.fromkeys(principals, me))
    try:
        docker_gid = grp.getgrnam(DOCKER_GROUP).gr_gid
    except KeyError as exc:
        raise LayoutError("group 'docker' does not exist; install docker.io (scripts/bootstrap)") from exc
    gateway = _ensure_user(GATEWAY_USER)
    executor = _ensure_user(EXECUTOR_USER)
    executor = Identity(executor.name, executor.uid, executor.gid, (docker_gid,))
    opa = _ensure_user(OPA_USER)
    agents = {}
    for principal in principals:
        if principal not in AGENT_USERS:
            raise LayoutError(f"no agent user is defined for principal {principal!r}")
        agents[principal] = _ensure_user(AGENT_USERS[principal])
    return Identities(True, gateway, executor, opa, agents)


@dataclass(frozen=True)
class Layout:
    """Every path of a stack, derived from its home."""

    home: Path

    @property
    def stack_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def gateway_dir(self) -> Path:
        return self.home / "gateway"

    @property
    def executor_dir(self) -> Path:
        return self.home / "executor"

    @property
    def opa_dir(self) -> Path:
        return self.home / "opa"

    @property
    def policy_dir(self) -> Path:
        """The operator's: the bundle-signing key and the published bundle."""
        return self.home / "policy"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def executor_socket(self) -> Path:
        return self.run_dir / "executor" / "executor.sock"

    @property
    def opa_socket(self) -> Path:
        return self.run_dir / "opa" / "opa.sock"

    @property
    def audit_dir(self) -> Path:
        return self.gateway_dir / "audit"

    @property
    def audit_log(self) -> Path:
        return self.audit_dir / "audit.jsonl"

    @property
    def audit_signing_key(self) -> Path:
        return self.gateway_dir / "audit-signing.pem"

    @property
    def audit_public_key(self) -> Path:
        """Public: anyone may verify the audit log's checkpoints with it."""
        return self.home / "audit-signing.pub"

    @property
    def bundle(self) -> Path:
        return self.policy_dir / "bundle.tar.gz"

    @property
    def bundle_signing_key(self) -> Path:
        return self.policy_dir / "bundle-signing.pem"

    @property
    def bundle_public_key(self) -> Path:
        return self.opa_dir / "bundle-signing.pub"

    @property
    def bundle_token(self) -> Path:
        """The bundle server's credential, held by the server (operator) and OPA."""
        return self.policy_dir / "bundle-server.token"

    @property
    def opa_bundle_token(self) -> Path:
        return self.opa_dir / "bundle-server.token"

    @property
    def gateway_registry(self) -> Path:
        """The published registry, as the gateway reads it."""
        return self.gateway_dir / "tool_registry.yaml"

    @property
    def executor_registry(self) -> Path:
        """The published registry, as the executor reads it (the images it may run)."""
        return self.executor_dir / "tool_registry.yaml"

    def agent_dir(self, principal: str) -> Path:
        return self.home / "agents" / principal

    def agent_token(self, principal: str) -> Path:
        return self.agent_dir(principal) / "token"

    def agent_socket(self, principal: str) -> Path:
        """Where this principal's agents reach the gateway: a socket in a
        folder of the gateway's uid and the agent's group (2750)."""
        return self.run_dir / "gateway" / principal / "gateway.sock"


def make_dir(path: Path, owner: Identity, mode: int, *, group: int | None = None) -> None:
    """Creates (or fixes) a folder with exactly this owner and mode."""
    path.mkdir(parents=True, exist_ok=True)
    # Through a descriptor opened without following a link: a folder inside
    # another user's folder (audit/ in the gateway's) may have been swapped
    # for a symlink to somewhere root owns.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise LayoutError(f"{path}: not a folder (a symlink?); remove it: {exc.strerror}") from exc
    try:
        if os.geteuid() == 0:
            os.fchown(fd, owner.uid, owner.gid if group is None else group)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


#: A secret or key file `airlock up` reads back is never larger than this.
SECRET_MAX_BYTES = 64 * 1024


def write_private(path: Path, data: bytes, owner: Identity, *, mode: int = 0o600) -> None:
    """Writes a file only ``owner`` can read, atomically (temp file + rename).

    The folder may belong to ``owner`` (an agent's own folder), who can put
    symlinks or files there while root writes: everything goes through one
    descriptor of the folder (opened without following a symlink), the temp
    file has an unguessable name and is created exclusively, and its owner
    and mode are set on the open descriptor, so no path is ever followed."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        tmp = f".{path.name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
        try:
            os.write(fd, data)
            if os.geteuid() == 0:
                os.fchown(fd, owner.uid, owner.gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)


def _open_regular(path: Path) -> int:
    """A descriptor of ``path`` if it is a regular file with one link (not a
    symlink, not a hard link to someone else's file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise LayoutError(f"{path}: a symlink where a file of its own belongs; remove it") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_size > SECRET_MAX_BYTES:
        os.close(fd)
        raise LayoutError(f"{path}: not a regular file of its own (a link, a folder or too large); remove it")
    return fd


def read_private(path: Path) -> bytes:
    """Reads a secret file written by write_private, never through a link."""
    fd = _open_regular(path)
    try:
        return os.read(fd, SECRET_MAX_BYTES + 1)
    finally:
        os.close(fd)


def give(path: Path, owner: Identity, mode: int) -> None:
    """Hands an existing file to ``owner`` with ``mode``, never through a link."""
    fd = _open_regular(path)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def copy_public(src: Path, dst: Path) -> None:
    """Copies a file readable by all (configs, registries, public keys), atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.chmod(0o644)
    tmp.replace(dst)


def unreachable_by_others(path: Path) -> Path | None:
    """The first folder on ``path``'s way from / that other users cannot
    traverse, or None: a service user must reach its files and the code it
    runs (a checkout under /root, 0700, is the usual culprit)."""
    for parent in [*reversed(path.resolve().parents), path.resolve()]:
        if parent.is_dir() and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None
