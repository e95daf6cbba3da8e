"""stack.json: what a running ``airlock up`` serves, for the CLI, agents and
tests. One typed writer and one reader. It holds addresses and paths only,
never a secret, so it is world-readable: an agent user learns where its own
token file is, and nothing it could use as another principal."""

from __future__ import annotations

import json
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from airlock.common import parse_config

STACK_VERSION = 1


@dataclass(frozen=True)
class Principal:
    """One agent identity the stack configured."""

    profile: str
    """Its profile in the policy's grants."""
    token_file: str
    """Its credential; readable by its agent user only."""
    user: str
    """The system user an agent of this principal runs as (the CLI drops to it when run as root)."""
    socket: str = ""
    """The Unix socket its agents reach the gateway on: only its agent user (and root) may connect, and only the
    gateway's uid can have made it. Clients of the stack use it instead of the TCP port."""


@dataclass(frozen=True)
class Metrics:
    gateway: str
    executor: str
    opa: str


@dataclass(frozen=True)
class StackFile:
    """stack.json, version 1."""

    gateway: str
    """host:port of the gateway's gRPC listener."""
    opa: str
    """OPA's diagnostic address (health and metrics only; decisions go over a socket only the gateway can open)."""
    opa_socket: str
    policy_revision: str
    shadow: str
    metrics: Metrics
    audit_log: str
    audit_public_key: str
    executor_socket: str
    principal: str
    """The default principal (`airlock call` without --principal)."""
    principals: dict[str, Principal]
    pids: dict[str, int]
    separated: bool
    """True when each part runs as its own system user (started as root)."""
    dev: bool
    """True when policy edits are published automatically (`airlock up --dev`)."""
    egress: dict[str, str] = field(default_factory=dict)
    gateway_uid: int = -1
    """The uid the gateway runs as: clients check that this uid, and no one
    else, listens on the gateway's port before they send a token."""
    version: int = STACK_VERSION

    def as_dict(self) -> dict[str, Any]:
        """The JSON document (every field, defaults included)."""

        def plain(value: Any) -> Any:
            if is_dataclass(value) and not isinstance(value, type):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        result: dict[str, Any] = plain(self)
        return result

    def token_file(self, principal: str | None = None) -> Path:
        return Path(self.entry(principal).token_file)

    def entry(self, principal: str | None = None) -> Principal:
        name = principal or self.principal
        if name not in self.principals:
            known = ", ".join(sorted(self.principals))
            raise KeyError(f"no principal {name!r} in this stack; known: {known}")
        return self.principals[name]

    def target(self, principal: str | None = None) -> str:
        """The gRPC target a client of this principal uses: its own socket
        (checked: see check_socket), else the TCP port (check_gateway)."""
        socket = self.entry(principal).socket
        if socket:
            check_socket(self, Path(socket))
            return f"unix:{socket}"
        check_gateway(self)
        return self.gateway


class StaleStackError(RuntimeError):
    """stack.json names a gateway that is not listening as its own user."""


#: Local addresses (as /proc/net/tcp{,6} writes them) a connection to
#: 127.0.0.1 can reach: 127.0.0.1 itself, the IPv4 and IPv6 wildcards, and
#: the IPv4-mapped 127.0.0.1. A listener on 127.0.0.2 or ::1 cannot take a
#: connection meant for 127.0.0.1, so it neither counts nor blocks.
_REACHABLE = {
    "0100007F",
    "00000000",
    "00000000000000000000000000000000",
    "0000000000000000FFFF00000100007F",
}


def _listeners(port: int) -> set[int]:
    """uids of the TCP sockets listening on ``port`` that a connection to
    127.0.0.1 can reach, on this host (Linux)."""
    uids: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields_ = line.split()
            local, state, uid = fields_[1], fields_[3], fields_[7]
            address, _, local_port = local.rpartition(":")
            if state == "0A" and int(local_port, 16) == port and address.upper() in _REACHABLE:  # 0A: LISTEN
                uids.add(int(uid))
    return uids


def check_gateway(stack: StackFile) -> None:
    """Refuses a stack.json whose gateway port is not held by the gateway's
    uid: a stale file (its stack died) whose port another local user has
    taken would otherwise receive an agent's token."""
    host, _, port = stack.gateway.rpartition(":")
    if stack.gateway_uid < 0 or host not in ("127.0.0.1", "localhost", "[::1]", "::1"):
        return
    owners = _listeners(int(port))
    if owners != {stack.gateway_uid}:
        held = "nothing" if not owners else f"uid {sorted(owners)}"
        raise StaleStackError(
            f"stack.json names a gateway on {stack.gateway}, but {held} listens there instead of the "
            f"gateway's uid {stack.gateway_uid}: the stack is gone; start `airlock up`"
        )


def check_socket(stack: StackFile, socket: Path) -> None:
    """Refuses an agent socket whose folder another uid than the gateway's
    could have put it in: only then is whoever answers there the gateway."""
    try:
        st = socket.parent.lstat()
    except FileNotFoundError:
        raise StaleStackError(f"{socket.parent} is missing: the stack is gone; start `airlock up`") from None
    owner = stack.gateway_uid if stack.gateway_uid >= 0 else st.st_uid
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner or st.st_mode & 0o022:
        raise StaleStackError(
            f"{socket.parent} is not the gateway's own folder (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}; "
            f"the gateway's uid is {stack.gateway_uid}): refusing to send a token there"
        )


def write_stack(path: Path, stack: StackFile) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(stack.as_dict(), indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(path)


def read_stack(path: Path) -> StackFile:
    """Reads stack.json; raises FileNotFoundError when no stack is running."""
    raw: Any = json.loads(path.read_text(encoding="utf-8"))
    return parse_config(raw, StackFile, source=str(path))
