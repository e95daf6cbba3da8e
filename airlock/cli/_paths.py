"""Where the CLI finds the repo's defaults and keeps the dev stack's state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: The checkout this CLI runs from (the package is installed editable).
REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICIES = REPO / "policies"
DEFAULT_REGISTRY = REPO / "deploy" / "tool_registry.yaml"
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
