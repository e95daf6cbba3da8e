"""``airlock approvals [ls [--all] | show ID | approve ID [--note] | deny ID [--note]]``:
an approver's side of the calls the policy asks about (docs/approvals.md),
through the gateway's ApprovalService with the approver's token.

``ls``, ``approve`` and ``deny`` print JSON (one object per line for ``ls``);
``show`` prints the held call for a human: its raw arguments exactly as the
agent sent them (never masked: the approver decides on what will run) with
their SHA-256, the policy's reasons and any shadowed denies, every control,
format and invisible character escaped (what a model wrote cannot move the
cursor or hide text). Exit codes as ``airlock
call``: 0 done, 3 refused (the reason code is printed), 4 the gateway could
not be reached."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc

from airlock.cli._artifacts_cmd import _metadata
from airlock.cli._client import EXIT_OK, Target
from airlock.cli._tools_cmd import _refused, escape
from airlock.common import wire
from airlock.v1 import approvals_pb2, approvals_pb2_grpc


def add_arguments(a: argparse.ArgumentParser) -> None:
    """The sub-command's arguments (the caller adds the gateway, token and TLS ones)."""
    a.add_argument("action", nargs="?", choices=["ls", "show", "approve", "deny"], default="ls")
    a.add_argument("id", nargs="?", default="", help="show, approve, deny: the approval id (apr_...)")
    a.add_argument("--all", action="store_true", help="ls: the decided, expired and used ones too")
    a.add_argument("--note", default="", help="approve, deny: a note recorded in the audit log with you")
    a.add_argument("--json", action="store_true", help="show: print JSON instead of escaped text")


def run(args: argparse.Namespace, target: Target) -> int:
    if args.action != "ls" and not args.id:
        print(f"airlock approvals {args.action}: give the approval id", file=sys.stderr)
        return 2
    timeout = args.timeout
    match args.action:
        case "show":
            return show(target, args.id, as_json=args.json, timeout_s=timeout)
        case "approve" | "deny":
            return decide(target, args.id, grant=args.action == "approve", note=args.note, timeout_s=timeout)
        case _:
            return ls(target, everything=args.all, timeout_s=timeout)


def _call(target: Target, timeout_s: float, rpc: str, request: Any) -> Any:
    channel = target.channel()
    with channel:
        stub = approvals_pb2_grpc.ApprovalServiceStub(channel)
        return getattr(stub, rpc)(request, metadata=_metadata(target), timeout=timeout_s)


def approval_json(a: approvals_pb2.Approval) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": a.id,
        "state": a.state,
        "principal": a.principal,
        "session_id": a.session_id,
        "tool": a.tool,
        "item_type": wire.item_type_name(a.item_type),
        "arguments_sha256": a.arguments_sha256,
        "requested_limits_sha256": a.requested_limits_sha256,
        "requested_limits": json.loads(a.requested_limits_json or "null"),
        "policy_revision": a.policy_revision,
        "call_id": a.call_id,
        "decision_id": a.decision_id,
        "reasons": [{"code": r.code, "message": r.message} for r in a.reasons],
        "shadow_reasons": [{"code": r.code, "message": r.message} for r in a.shadow_reasons],
        "created_at": a.created_at,
        "expires_at": a.expires_at,
        "decided_at": a.decided_at,
        "approver": a.approver,
        "note": a.note,
    }
    if a.arguments:
        # The raw text: parsing could hide what the agent sent.
        out["arguments"] = a.arguments
    return out


def ls(target: Target, *, everything: bool, timeout_s: float) -> int:
    try:
        resp = _call(target, timeout_s, "ListApprovals", approvals_pb2.ListApprovalsRequest(all=everything))
    except grpc.RpcError as exc:
        return _refused(exc)
    for a in resp.approvals:
        json.dump(approval_json(a), sys.stdout)
        sys.stdout.write("\n")
    return EXIT_OK


def show(target: Target, approval_id: str, *, as_json: bool, timeout_s: float) -> int:
    try:
        resp = _call(target, timeout_s, "GetApproval", approvals_pb2.GetApprovalRequest(id=approval_id))
    except grpc.RpcError as exc:
        return _refused(exc)
    a = resp.approval
    if as_json:
        json.dump(approval_json(a), sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK
    lines = [
        f"id:        {escape(a.id)}   {escape(a.state).upper()}",
        f"principal: {escape(a.principal)}   session: {escape(a.session_id)}",
        f"tool:      {escape(a.tool)} ({wire.item_type_name(a.item_type)})   call: {escape(a.call_id)}",
        f"asked by:  policy revision {escape(a.policy_revision)} (decision {escape(a.decision_id)})",
        f"requested: {a.created_at}   expires: {a.expires_at}",
        f"arguments: sha256 {a.arguments_sha256}, as sent (unmasked; \\ doubled, hidden characters as \\uNNNN):",
        f"  {escape(a.arguments)}",
        *_parsed(a.arguments),
        f"limits:    {escape(a.requested_limits_json)} requested (sha256 {a.requested_limits_sha256})",
        "reasons:",
        *(f"  {escape(r.code)}: {escape(r.message)}" for r in a.reasons),
    ]
    if a.shadow_reasons:
        lines.append("would deny (shadow mode, rules being rolled out):")
        lines.extend(f"  {escape(r.code)}: {escape(r.message)}" for r in a.shadow_reasons)
    if a.approver:
        lines.append(f"decided:   {a.decided_at} by {escape(a.approver)}: {escape(a.note)}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _parsed(raw: str) -> list[str]:
    """The arguments' string values decoded (JSON escapes such as \\u0067
    resolved), one per line: what the tool's command is built from."""
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(value, dict):
        return []
    return [
        "decoded:",
        *(f"  {escape(str(k))}: {escape(v if isinstance(v, str) else json.dumps(v))}" for k, v in value.items()),
    ]


def decide(target: Target, approval_id: str, *, grant: bool, note: str, timeout_s: float) -> int:
    rpc, request = (
        ("ApproveCall", approvals_pb2.ApproveCallRequest(id=approval_id, note=note))
        if grant
        else ("DenyCall", approvals_pb2.DenyCallRequest(id=approval_id, note=note))
    )
    try:
        resp = _call(target, timeout_s, rpc, request)
    except grpc.RpcError as exc:
        return _refused(exc)
    json.dump(approval_json(resp.approval), sys.stdout)
    sys.stdout.write("\n")
    return EXIT_OK
