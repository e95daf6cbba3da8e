"""``airlock call``, ``airlock decide`` and ``airlock tools``: the shared
GatewayClient (airlock/common/client.py) plus JSON output and exit codes.
They find a running ``airlock up`` through its stack.json."""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from airlock.common import wire
from airlock.common._grpc_tls import channel_credentials, channel_options
from airlock.common._tls import ClientTLS
from airlock.common.client import ITEM_TYPES, GatewayClient, GatewayUnavailable, ToolResult
from airlock.common.stackfile import StackFile, check_gateway, read_stack
from airlock.v1 import call_pb2, executor_pb2

#: Exit statuses, documented in the README.
EXIT_OK = 0
EXIT_TOOL_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_UNAVAILABLE = 4

__all__ = ["ITEM_TYPES", "Target", "call", "decide", "end_session", "resolve_target", "sessions", "tools"]


@dataclass(frozen=True)
class Target:
    address: str
    token: str | None
    tls: ClientTLS | None = None

    def client(self, timeout_s: float) -> GatewayClient:
        return GatewayClient(self.address, self.token, tls=self.tls, timeout_s=timeout_s)

    def channel(self) -> grpc.Channel:
        """A channel to the gateway for the services GatewayClient does not
        wrap (ArtifactService, the tool-definition RPCs): TLS when set."""
        if self.tls is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, channel_credentials(self.tls), options=channel_options(self.tls))


def resolve_target(
    home: Path,
    gateway: str | None,
    token_file: Path | None,
    tls: ClientTLS | None = None,
    principal: str | None = None,
) -> Target:
    """The gateway and credentials: flags first, then the running `airlock up`.

    With a client certificate and no token file, the certificate alone
    authenticates (mTLS). ``principal`` picks that principal's token from the
    running stack: it selects a credential file, it does not claim an
    identity (the gateway decides identity from the token, and the file is
    readable only by that principal's agent user)."""
    stack_file = home / "stack.json"
    stack: StackFile | None = read_stack(stack_file) if stack_file.exists() else None
    address = gateway
    if stack is not None and gateway is None:
        if tls is not None and tls.cert_file and principal is None:
            check_gateway(stack)  # a certificate identity goes over TLS, on the port
            address = stack.gateway
        else:
            try:
                # The principal's own socket (or, for a stack without one,
                # the checked TCP port): never a port someone else may hold.
                address = stack.target(principal)
            except KeyError as exc:
                raise FileNotFoundError(str(exc.args[0])) from exc
    token_path = token_file
    if token_path is None and stack is not None and (principal is not None or not (tls and tls.cert_file)):
        try:
            token_path = stack.token_file(principal)
        except KeyError as exc:
            raise FileNotFoundError(str(exc.args[0])) from exc
    if not address or (token_path is None and not (tls and tls.cert_file)):
        raise FileNotFoundError(
            f"no running stack found ({stack_file} missing); start `airlock up`, or pass --gateway and "
            "--token-file (or --tls-cert/--tls-key)"
        )
    try:
        token = token_path.read_text(encoding="utf-8").strip() if token_path else None
    except PermissionError as exc:
        raise PermissionError(
            f"cannot read {token_path}: it belongs to another principal's agent user (run as that user, or as "
            "root, which drops to it)"
        ) from exc
    return Target(address, token, tls)


def _decision_json(d: call_pb2.Decision) -> dict[str, Any]:
    return {
        "decision": {call_pb2.VERDICT_ALLOW: "allow", call_pb2.VERDICT_ASK: "ask"}.get(d.verdict, "deny"),
        "decision_id": d.decision_id,
        "principal": d.principal,
        "policy_revision": d.policy_revision,
        "reasons": [{"code": r.code, "message": r.message} for r in d.reasons],
        **({"approval_id": d.approval_id} if d.approval_id else {}),
    }


def _obligations_json(o: call_pb2.Obligations) -> dict[str, Any]:
    sandbox = wire.sandbox_from_proto(o.sandbox)
    return {
        "limits": wire.from_message(o.limits),
        "network": {
            "mode": "egress" if o.network.mode == call_pb2.NETWORK_MODE_EGRESS else "none",
            "egress_allowlist": list(o.network.egress_allowlist),
            "inspect": list(o.network.inspect_hosts),
            "http_rules": [asdict(r) for r in wire.http_rules_from_proto(o.network)],
            "secrets": [asdict(r) for r in wire.secrets_from_proto(o.network)],
        },
        "sandbox": {
            "mode": sandbox.mode,
            "idle_ttl_ms": sandbox.idle_ttl_ms,
            "max_lifetime_ms": sandbox.max_lifetime_ms,
        },
    }


def _refusal_json(result: ToolResult) -> dict[str, Any]:
    """A refusal's JSON: the Decision when the status carried one."""
    message = "; ".join(f"{r.code}: {r.message}" for r in result.reasons)
    out: dict[str, Any] = {"decision": "deny", "status": result.status, "message": message}
    if result.decision is not None:
        out.update(_decision_json(result.decision))
    return out


def _unavailable_json(exc: GatewayUnavailable) -> dict[str, Any]:
    return {"decision": "deny", "status": exc.status, "message": str(exc)}


def _exit_for(exc: GatewayUnavailable) -> int:
    refused = exc.status in ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
    return EXIT_DENIED if refused else EXIT_UNAVAILABLE


def _call_message(tool: str, arguments: str, item_type: str, call_id: str | None, session: str) -> call_pb2.ToolCall:
    return call_pb2.ToolCall(
        call_id=call_id if call_id is not None else f"call_{uuid.uuid4().hex[:24]}",
        item_type=wire.ITEM_TYPE_NUMBERS[item_type],
        tool=tool,
        arguments=arguments,
        session_id=session,
    )


def _emit(obj: dict[str, Any]) -> None:
    json.dump(obj, sys.stdout)
    sys.stdout.write("\n")


def call(
    target: Target, tool: str, arguments: str, *, item_type: str, call_id: str | None, session: str, timeout_s: float
) -> int:
    message = _call_message(tool, arguments, item_type, call_id, session)
    with target.client(timeout_s) as client:
        try:
            result = client.invoke_call(message)
        except GatewayUnavailable as exc:
            _emit({**_unavailable_json(exc), "call_id": message.call_id})
            return _exit_for(exc)
    if result.run is None or result.decision is None:
        _emit({**_refusal_json(result), "call_id": message.call_id})
        return EXIT_DENIED
    r = result.run
    out = _decision_json(result.decision)
    out.update(
        {
            "call_id": message.call_id,
            "outcome": result.outcome,
            "exit_code": r.exit_code,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "output_truncated": r.output_truncated,
            "duration_ms": r.duration_ms,
            "container_start_ms": r.container_start_ms,
            # Where it ran: its own container or the session's, whether the
            # container came warm from the pool, and how long getting it took.
            "sandbox": "session" if r.sandbox.mode == call_pb2.SANDBOX_MODE_SESSION else "ephemeral",
            "pool_hit": r.sandbox.pool_hit,
            "claim_ms": r.sandbox.claim_ms,
        }
    )
    if r.sandbox.sandbox_id:
        out["sandbox_id"] = r.sandbox.sandbox_id
        out["session_started"] = r.sandbox.session_started
        out["session_calls"] = r.sandbox.session_calls
    if result.artifacts:
        out["artifacts"] = [_artifact_json(a) for a in result.artifacts]
    if r.skipped_outputs:
        out["skipped_outputs"] = [{"name": x.name, "reason": x.reason} for x in r.skipped_outputs]
    if r.error:
        out["error"] = r.error
    _emit(out)
    return EXIT_OK if result.outcome == "ok" else EXIT_TOOL_FAILED


def _artifact_json(a: call_pb2.ArtifactRef) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "sha256": a.sha256, "size": a.size, "media_type": a.media_type}


def decide(
    target: Target, tool: str, arguments: str, *, item_type: str, call_id: str | None, session: str, timeout_s: float
) -> int:
    message = _call_message(tool, arguments, item_type, call_id, session)
    with target.client(timeout_s) as client:
        try:
            result = client.decide(message)
        except GatewayUnavailable as exc:
            _emit(_unavailable_json(exc))
            return _exit_for(exc)
    if result.decision is None or result.status != "OK":
        _emit(_refusal_json(result))
        return EXIT_DENIED
    out = _decision_json(result.decision)
    out["obligations"] = _obligations_json(result.decision.obligations)
    _emit(out)
    return EXIT_OK if result.allowed else EXIT_DENIED


def tools(target: Target, timeout_s: float, *, session: str = "") -> int:
    with target.client(timeout_s) as client:
        try:
            resp = client.list_tools(session_id=session)
        except GatewayUnavailable as exc:
            _emit(_unavailable_json(exc))
            return _exit_for(exc)
    _emit(
        {
            "principal": resp.principal,
            "policy_revision": resp.policy_revision,
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "parameters": json.loads(t.parameters_json_schema or "{}"),
                    **({"definition_id": t.definition_id, "scope": t.scope} if t.definition_id else {}),
                }
                for t in resp.tools
            ],
        }
    )
    return EXIT_OK


def _session_json(info: executor_pb2.SessionInfo) -> dict[str, Any]:
    now_ms = time.time() * 1000
    return {
        "sandbox_id": info.sandbox_id,
        "principal": info.principal,
        "session_id": info.session_id,
        "image": info.image,
        "runtime": info.runtime,
        "age_s": round((now_ms - info.started_unix_ms) / 1000),
        "idle_s": round((now_ms - info.last_used_unix_ms) / 1000),
        "calls": info.calls,
        "network": info.network,
        "idle_ttl_s": info.idle_ttl_ms // 1000,
        "max_lifetime_s": info.max_lifetime_ms // 1000,
    }


def sessions(target: Target, *, everyone: bool, timeout_s: float) -> int:
    """Lists live session sandboxes, one JSON object per line."""
    with target.client(timeout_s) as client:
        try:
            found = client.list_sessions(everyone=everyone)
        except GatewayUnavailable as exc:
            _emit(_unavailable_json(exc))
            return _exit_for(exc)
    for info in sorted(found, key=lambda i: (i.principal, i.session_id, i.started_unix_ms)):
        _emit(_session_json(info))
    return EXIT_OK


def end_session(target: Target, *, sandbox_id: str, session_id: str, timeout_s: float) -> int:
    """Ends one sandbox (by id) or every sandbox of one of the caller's sessions."""
    with target.client(timeout_s) as client:
        try:
            ended = client.end_session(session_id=session_id, sandbox_id=sandbox_id)
        except GatewayUnavailable as exc:
            _emit(_unavailable_json(exc))
            return _exit_for(exc)
    _emit({"ended": [_session_json(i) for i in ended]})
    return EXIT_OK
