"""``airlock call``, ``airlock decide`` and ``airlock tools``: thin clients
of the gateway. They find a running ``airlock up`` through its stack.json."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import status_pb2

from airlock._tls import ClientTLS
from airlock.cli._stackfile import StackFile, read_stack
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

#: Exit statuses, documented in the README.
EXIT_OK = 0
EXIT_TOOL_FAILED = 1
EXIT_USAGE = 2
EXIT_DENIED = 3
EXIT_UNAVAILABLE = 4

ITEM_TYPES = {
    "function_call": call_pb2.ITEM_TYPE_FUNCTION_CALL,
    "custom_tool_call": call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL,
    "shell_call": call_pb2.ITEM_TYPE_SHELL_CALL,
    "local_shell_call": call_pb2.ITEM_TYPE_LOCAL_SHELL_CALL,
    "apply_patch_call": call_pb2.ITEM_TYPE_APPLY_PATCH_CALL,
}
_OUTCOMES = {v.number: v.name.removeprefix("OUTCOME_").lower() for v in executor_pb2.Outcome.DESCRIPTOR.values}


@dataclass(frozen=True)
class Target:
    address: str
    token: str | None
    tls: ClientTLS | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self) -> grpc.Channel:
        if self.tls is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.tls.credentials(), options=self.tls.channel_options())


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
    address = gateway or (stack.gateway if stack else None)
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
        "decision": "allow" if d.verdict == call_pb2.VERDICT_ALLOW else "deny",
        "decision_id": d.decision_id,
        "principal": d.principal,
        "policy_revision": d.policy_revision,
        "reasons": [{"code": r.code, "message": r.message} for r in d.reasons],
    }


def _obligations_json(o: call_pb2.Obligations) -> dict[str, Any]:
    lim = o.limits
    return {
        "limits": {f.name: getattr(lim, f.name) for f in lim.DESCRIPTOR.fields},
        "network": {
            "mode": "egress" if o.network.mode == call_pb2.NETWORK_MODE_EGRESS else "none",
            "egress_allowlist": list(o.network.egress_allowlist),
        },
    }


def _error_json(exc: grpc.aio.AioRpcError | grpc.RpcError) -> dict[str, Any]:
    """A refusal's JSON: the Decision from the status details when present."""
    out: dict[str, Any] = {"decision": "deny", "status": exc.code().name, "message": exc.details()}
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                decision = call_pb2.Decision()
                if detail.Unpack(decision):
                    out.update(_decision_json(decision))
    return out


def _call_message(tool: str, arguments: str, item_type: str, call_id: str | None, session: str) -> call_pb2.ToolCall:
    return call_pb2.ToolCall(
        call_id=call_id if call_id is not None else f"call_{uuid.uuid4().hex[:24]}",
        item_type=ITEM_TYPES[item_type],
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
    metadata = target.metadata
    message = _call_message(tool, arguments, item_type, call_id, session)
    with target.channel() as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            resp = stub.Invoke(gateway_pb2.InvokeRequest(call=message), metadata=metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            out = _error_json(exc)
            out["call_id"] = message.call_id
            _emit(out)
            refused = exc.code() in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            return EXIT_DENIED if refused else EXIT_UNAVAILABLE
    r = resp.result
    out = _decision_json(resp.decision)
    out.update(
        {
            "call_id": message.call_id,
            "outcome": _OUTCOMES.get(r.outcome, "error"),
            "exit_code": r.exit_code,
            "stdout": resp.stdout.decode("utf-8", errors="replace"),
            "stderr": resp.stderr.decode("utf-8", errors="replace"),
            "output_truncated": r.output_truncated,
            "duration_ms": r.duration_ms,
            "container_start_ms": r.container_start_ms,
        }
    )
    if r.error:
        out["error"] = r.error
    _emit(out)
    return EXIT_OK if r.outcome == executor_pb2.OUTCOME_OK else EXIT_TOOL_FAILED


def decide(
    target: Target, tool: str, arguments: str, *, item_type: str, call_id: str | None, session: str, timeout_s: float
) -> int:
    metadata = target.metadata
    message = _call_message(tool, arguments, item_type, call_id, session)
    with target.channel() as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            resp = stub.Decide(gateway_pb2.DecideRequest(call=message), metadata=metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            _emit(_error_json(exc))
            return EXIT_DENIED
    out = _decision_json(resp.decision)
    out["obligations"] = _obligations_json(resp.decision.obligations)
    _emit(out)
    return EXIT_OK if resp.decision.verdict == call_pb2.VERDICT_ALLOW else EXIT_DENIED


def tools(target: Target, timeout_s: float) -> int:
    metadata = target.metadata
    with target.channel() as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            resp = stub.ListTools(gateway_pb2.ListToolsRequest(), metadata=metadata, timeout=timeout_s)
        except grpc.RpcError as exc:
            _emit(_error_json(exc))
            return EXIT_DENIED
    _emit(
        {
            "principal": resp.principal,
            "policy_revision": resp.policy_revision,
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "parameters": json.loads(t.parameters_json_schema or "{}"),
                }
                for t in resp.tools
            ],
        }
    )
    return EXIT_OK
