"""``airlock decide --offline``: the full decision for a call, evaluated by
`opa eval` straight against the policy files and the registry -- no gateway,
no OPA server, nothing executed. The input is built by the gateway's own
function, so an author tries exactly what the gateway would ask, the tool
image's pin and last scan (``input.image``, docs/images.md) included."""

from __future__ import annotations

import json
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from airlock.cli._bundle import build_bundle
from airlock.gateway import Call, CallInput, Principal, build_policy_input, load_registry, parse_arguments
from airlock.gateway._images import IMAGES_FILE, ImagePins


def decide_offline(
    opa: str,
    *,
    policies: Path,
    registry_path: Path,
    tool: str,
    arguments: str,
    item_type: str,
    principal: str,
    profile: str,
    session: str,
    images: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """``images``: the pins and scans as published (``data.images``); the
    input's ``image`` is the tool image's, read as the gateway reads it."""
    registry = load_registry(registry_path)
    try:
        parsed = parse_arguments(item_type, arguments)
    except (ValueError, RecursionError) as exc:
        return 3, {"decision": "deny", "reasons": [{"code": "arguments_malformed", "message": str(exc)}]}
    who = Principal(principal, profile, "offline")
    inp = CallInput(
        call=Call(call_id="call_offline", item_type=item_type, tool=tool, arguments=arguments, session_id=session),  # type: ignore[arg-type]
        principal=who,
        rpc="Decide",
    )
    counters = {"window_seconds": 3600, "session_calls": 0, "session_tool_calls": 0, "principal_tool_calls": 0}
    with tempfile.TemporaryDirectory(prefix="airlock-decide-") as tmp:
        pins = Path(tmp) / IMAGES_FILE
        pins.write_text(json.dumps(images or {}), encoding="utf-8")
        doc = build_policy_input(
            registry,
            inp,
            who,
            decision_id=str(uuid.uuid4()),
            arguments=parsed,
            counters=counters,
            images=ImagePins(pins),
        )
        bundle = build_bundle(opa, policies, registry_path, Path(tmp) / "bundle.tar.gz", images=images)
        input_file = Path(tmp) / "input.json"
        input_file.write_text(json.dumps(doc))
        proc = subprocess.run(  # noqa: S603 - pinned opa, our arguments
            [opa, "eval", "--bundle", str(bundle.path), "--input", str(input_file), "--format", "json",
             "data.airlock.decision"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"opa eval failed:\n{proc.stderr or proc.stdout}")
    results = json.loads(proc.stdout).get("result") or []
    if not results:
        return 3, {"decision": "deny", "reasons": [{"code": "policy_undefined", "message": "decision is undefined"}]}
    value = results[0]["expressions"][0]["value"]
    out = {
        "decision": "allow" if value.get("allow") is True else "ask" if value.get("ask") is True else "deny",
        "principal": principal,
        "profile": profile,
        "policy_revision": bundle.revision,
        "reasons": value.get("reasons", []),
        "shadow": value.get("shadow", []),
        "shadow_asks": value.get("shadow_asks", []),
        "obligations": value.get("obligations", {}),
        "input": doc,
    }
    return (0 if out["decision"] == "allow" else 3), out
