"""How ``airlock up`` runs OPA so that it answers the gateway and no one else.

- **Where it listens.** Decisions go over a Unix socket in run/opa/ (group
  airlock-gateway, mode 0660 inside a 2750 folder): other local users cannot
  connect at all. Health and metrics are on a separate, read-only diagnostic
  address on loopback (``--diagnostic-addr``), for probes and Prometheus.
- **Who it answers.** ``--authentication=token --authorization=basic`` with
  the ``system.authz`` policy below: only the gateway's token, only POSTs to
  the decision documents the gateway asks for. No policy or data writes, no
  ad-hoc queries, no compile API -- even for a process that reaches the socket.
- **What policies may do.** Bundles are built with OPA capabilities that
  leave out the builtins that reach the network or the process
  (``http.send``, ``net.lookup_ip_addr``, ``opa.runtime``): a policy using
  them does not build, so it cannot be published (an operator can allow
  them explicitly: ``airlock policy publish --allow-builtin NAME``).
- **As whom.** Its own uid (airlock-opa: no Docker socket) and an empty
  environment, so ``opa.runtime().env`` has nothing to leak.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Builtins a policy cannot use unless an operator allows them: each reaches
#: outside the evaluation (the network, or OPA's own environment and config).
DENIED_BUILTINS = ("http.send", "net.lookup_ip_addr", "opa.runtime")
#: The documents the gateway queries (gateway.yaml opa.decision_path,
#: granted_tools_path, artifacts.decision_path, and the revision probe at start).
GATEWAY_QUERIES = (
    ("v1", "data", "airlock", "decision"),
    ("v1", "data", "airlock", "artifacts", "decision"),
    ("v1", "data", "airlock", "tool_definitions", "decision"),
    ("v1", "data", "airlock", "granted_tools"),
    ("v1", "data", "airlock", "config", "shadow"),
)


def authz_policy(gateway_token: str) -> str:
    """OPA's system.authz policy: the gateway's token may POST its queries.

    The token is compared by digest, so the policy file does not hold it.
    """
    digest = hashlib.sha256(gateway_token.encode()).hexdigest()
    paths = ",\n\t".join(json.dumps(list(p)) for p in GATEWAY_QUERIES)
    return f"""# Written by `airlock up`: who may use this OPA's API (see airlock/cli/_opa.py).
package system.authz

default allow := false

gateway_queries := {{
\t{paths},
}}

# The gateway, and only for the decision documents it asks for.
allow if {{
\tcrypto.sha256(input.identity) == "{digest}"
\tinput.method == "POST"
\tinput.path in gateway_queries
}}

# Liveness and metrics, for probes and Prometheus (the diagnostic address
# serves nothing else, and the same authorization applies there).
allow if {{
\tinput.method == "GET"
\tinput.path in {{["health"], ["metrics"]}}
}}
"""


def capabilities(opa: str, allow: Iterable[str] = ()) -> dict[str, Any]:
    """This OPA's capabilities without DENIED_BUILTINS (except those in ``allow``)."""
    proc = subprocess.run([opa, "capabilities", "--current"], capture_output=True, text=True, check=True)  # noqa: S603
    caps: dict[str, Any] = json.loads(proc.stdout)
    denied = set(DENIED_BUILTINS) - set(allow)
    caps["builtins"] = [b for b in caps["builtins"] if b.get("name") not in denied]
    if "http.send" in denied:
        caps["allow_net"] = []
    return caps


def write_capabilities(opa: str, path: Path, allow: Iterable[str] = ()) -> Path:
    path.write_text(json.dumps(capabilities(opa, allow)), encoding="utf-8")
    return path


def opa_config(bundle_url: str, bundle_token_path: Path, public_key: str) -> dict[str, Any]:
    """OPA pulls the bundle like it would from a bundle server in production:
    with a credential, polling with ETags, verifying the signature,
    activating atomically, and keeping the last good bundle when a new one
    does not verify."""
    return {
        "services": {"airlock": {"url": bundle_url, "credentials": {"bearer": {"token_path": str(bundle_token_path)}}}},
        "bundles": {
            "airlock": {
                "service": "airlock",
                "resource": "bundle.tar.gz",
                "persist": False,
                "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2},
                "signing": {"keyid": "airlock"},
            }
        },
        "keys": {"airlock": {"algorithm": "RS256", "key": public_key}},
    }


def opa_argv(opa: str, *, socket: Path, diagnostic: str, config: Path, authz: Path) -> list[str]:
    return [
        opa,
        "run",
        "--server",
        "--addr",
        f"unix://{socket}",
        "--unix-socket-perm",
        "660",
        "--diagnostic-addr",
        diagnostic,
        "--authentication=token",
        "--authorization=basic",
        "--log-level",
        "error",
        "--config-file",
        str(config),
        str(authz),
    ]
