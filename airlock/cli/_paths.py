"""Where the CLI finds the shipped defaults and keeps the dev stack's state.

The default policies and registry are package data (``airlock.policies``,
``airlock.deploy``): the same files in a wheel install and in a checkout
(where they are the policies/ and deploy/ folders), never found by walking
up from this file."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

DEFAULT_POLICIES = Path(str(resources.files("airlock.policies")))
DEFAULT_REGISTRY = Path(str(resources.files("airlock.deploy") / "tool_registry.yaml"))
DEV_PRINCIPAL = "dev-agent"
DEV_PROFILE = "default"


def default_home() -> Path:
    """State of the local stack: tokens, sockets, configs, audit log. As root
    it is /var/lib/airlock, which the service users can reach (a home under
    /root cannot be)."""
    env = os.environ.get("AIRLOCK_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/airlock")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "airlock"


def tools_dir() -> Path:
    """Where scripts/bootstrap installs the pinned Go tools (scripts/_env.sh):
    /opt/airlock/tools as root, so service users can run them; else the home."""
    env = os.environ.get("AIRLOCK_TOOLS")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/opt/airlock/tools")
    return Path.home() / ".local" / "share" / "airlock" / "tools"


def find_opa() -> str | None:
    """The opa binary: $AIRLOCK_OPA, the bootstrap's pinned one, or PATH."""
    candidates = [os.environ.get("AIRLOCK_OPA"), str(tools_dir() / "opa"), shutil.which("opa")]
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None
