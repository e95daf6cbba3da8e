"""``airlock tools [ls [--dynamic] | show ID | promote ID --to SCOPE | retire ID]``:
the tools a principal may call and the dynamic tools (docs/dynamic-tools.md).

``ls`` and ``ls --dynamic`` print JSON (one object per line for definitions);
``show`` prints a definition for a human, with every control character of
the model-written text escaped (``--json`` for JSON). Exit codes as
``airlock call``: 0 done, 3 refused (the reason code is printed), 4 the
gateway could not be reached."""

from __future__ import annotations

import json
import sys
import unicodedata
from typing import Any

import grpc

from airlock.cli._artifacts_cmd import _metadata
from airlock.cli._client import EXIT_DENIED, EXIT_OK, EXIT_UNAVAILABLE, Target, _emit
from airlock.v1 import gateway_pb2, gateway_pb2_grpc

_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}


def _stub(target: Target) -> tuple[grpc.Channel, gateway_pb2_grpc.GatewayServiceStub]:
    channel = target.channel()
    return channel, gateway_pb2_grpc.GatewayServiceStub(channel)


#: Unicode categories shown escaped: controls, format characters (bidi
#: overrides, zero-width), surrogates, private use, line and paragraph
#: separators, non-ASCII spaces, and combining marks (which can stack over
#: or blank out the character before them).
_ESCAPED = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp", "Zs", "Mn"})
#: Letters that render as nothing (Hangul fillers, and similar), which the
#: categories above do not cover.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def escape(text: str, *, keep_lines: bool = False, backslashes: bool = True) -> str:
    """``text`` with control and format characters (ANSI escapes, carriage
    returns, bidi overrides, zero-width characters, C1 controls), invisible
    letters, non-ASCII spaces and combining marks shown as
    ``\\xNN``/``\\uNNNN``: what a model wrote cannot move the cursor,
    recolour the terminal, hide text or reorder what the operator reads.
    Newlines (and tabs) are kept where ``keep_lines``."""
    out = []
    for ch in text:
        if keep_lines and ch in "\n\t":
            out.append(ch)
        elif ch == "\\" and backslashes:
            out.append("\\\\")
        elif ch != " " and (ch in _INVISIBLE or unicodedata.category(ch) in _ESCAPED):
            out.append(ascii(ch)[1:-1] if ch != "'" else ch)
        else:
            out.append(ch)
    return "".join(out)


def _info_json(d: gateway_pb2.ToolDefinitionInfo, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "base": d.base,
        "scope": d.scope,
        "owner": d.owner,
        "sha256": d.sha256,
        "network": d.network,
        "created_at": d.created_at,
        "session_id": d.session_id,
        "call_id": d.call_id,
        "policy_revision": d.policy_revision,
        "decision_id": d.decision_id,
        "artifact_id": d.artifact_id,
        "retired": d.retired,
        "calls": d.calls,
        "sessions": d.sessions,
    }
    if full:
        out["parameters"] = json.loads(d.parameters_json_schema or "{}")
        out["source"] = d.source
    return out


def _call(target: Target, timeout_s: float, rpc: str, request: Any) -> Any:
    channel, stub = _stub(target)
    with channel:
        return getattr(stub, rpc)(request, metadata=_metadata(target), timeout=timeout_s)


def _refused(exc: grpc.RpcError) -> int:
    details = exc.details() or ""
    code, _, message = details.partition(": ")
    _emit({"refused": True, "status": exc.code().name, "reason": code, "message": message or details})
    return EXIT_UNAVAILABLE if exc.code() in _UNAVAILABLE else EXIT_DENIED


def ls_dynamic(target: Target, *, everyone: bool, session: str, timeout_s: float) -> int:
    try:
        resp = _call(
            target,
            timeout_s,
            "ListToolDefinitions",
            gateway_pb2.ListToolDefinitionsRequest(all=everyone, session_id=session),
        )
    except grpc.RpcError as exc:
        return _refused(exc)
    for d in resp.definitions:
        _emit(_info_json(d))
    return EXIT_OK


def show(target: Target, definition_id: str, *, as_json: bool, timeout_s: float) -> int:
    try:
        resp = _call(target, timeout_s, "GetToolDefinition", gateway_pb2.GetToolDefinitionRequest(id=definition_id))
    except grpc.RpcError as exc:
        return _refused(exc)
    d = resp.definition
    if as_json:
        _emit(_info_json(d, full=True))
        return EXIT_OK
    lines = [
        f"id:          {d.id}",
        f"name:        {escape(d.name)}",
        f"description: {escape(d.description)}",
        f"base:        {d.base}   network: {str(d.network).lower()}",
        f"scope:       {escape(d.scope)}{'   RETIRED' if d.retired else ''}",
        f"owner:       {escape(d.owner)}",
        f"defined:     {d.created_at} in session {escape(d.session_id)!s}, call {escape(d.call_id)}",
        f"admitted by: policy revision {escape(d.policy_revision)} (decision {d.decision_id})",
        f"stored as:   {d.artifact_id} sha256 {d.sha256}",
        f"used:        {d.calls} calls in {d.sessions} sessions",
        "parameters:",
        # JSON escapes its own control characters and backslashes already.
        escape(
            json.dumps(json.loads(d.parameters_json_schema or "{}"), indent=2, ensure_ascii=False),
            keep_lines=True,
            backslashes=False,
        ),
        "source:",
        escape(d.source, keep_lines=True),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def promote(target: Target, definition_id: str, to: str, timeout_s: float) -> int:
    request = gateway_pb2.PromoteToolDefinitionRequest(id=definition_id, to=to)
    try:
        resp = _call(target, timeout_s, "PromoteToolDefinition", request)
    except grpc.RpcError as exc:
        return _refused(exc)
    _emit({"promoted": True, **_info_json(resp.definition)})
    return EXIT_OK


def retire(target: Target, definition_id: str, timeout_s: float) -> int:
    try:
        resp = _call(
            target, timeout_s, "RetireToolDefinition", gateway_pb2.RetireToolDefinitionRequest(id=definition_id)
        )
    except grpc.RpcError as exc:
        return _refused(exc)
    _emit({"retired": True, **_info_json(resp.definition)})
    return EXIT_OK
