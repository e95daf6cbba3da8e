"""Agents never run as root. ``airlock call``, ``decide``, ``tools`` and
``agent run`` started by root switch to the principal's agent user (from the
running stack's stack.json) before they read any credential, so the quick
start never runs an agent that could read the keys, other principals'
tokens or the audit log. ``--as-root`` keeps root, for an operator who knows
why."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from airlock.common.stackfile import read_stack


class DropError(RuntimeError):
    pass


def drop_to_agent(home: Path, principal: str | None) -> str | None:
    """Switches this process to the principal's agent user when we are root
    and a separated stack is running; returns the user name, or None when
    nothing was changed."""
    if os.geteuid() != 0:
        return None
    stack_file = home / "stack.json"
    if not stack_file.exists():
        return None
    stack = read_stack(stack_file)
    if not stack.separated:
        return None
    name = principal or stack.principal
    if name not in stack.principals:
        raise DropError(f"no principal {name!r} in {stack_file}; known: {', '.join(sorted(stack.principals))}")
    user = stack.principals[name].user
    try:
        pw = pwd.getpwnam(user)
    except KeyError as exc:
        raise DropError(f"agent user {user!r} of principal {name!r} does not exist") from exc
    # Groups first, then gid, then uid: after setuid we could not change them.
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.geteuid() == 0 or os.getuid() == 0:
        raise DropError("could not drop root")  # pragma: no cover - setuid either works or raises
    os.environ["HOME"] = "/nonexistent"
    os.environ["USER"] = user
    return user
