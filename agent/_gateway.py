"""The agent's client of the Airlock gateway: ListTools and Invoke over one
gRPC channel. A refusal (PERMISSION_DENIED, INVALID_ARGUMENT,
UNAUTHENTICATED) is returned as a denied ``ToolResult`` carrying the
gateway's Decision, because the loop must tell the model and go on; only an
unreachable or failing gateway raises (``GatewayError``). This module must stay
importable without the gateway's or executor's server dependencies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import grpc
from google.rpc import status_pb2

from agent._errors import GatewayError
from airlock._tls import ClientTLS
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

#: Responses API item type -> wire enum.
ITEM_TYPES: dict[str, call_pb2.ItemType] = {
    "function_call": call_pb2.ITEM_TYPE_FUNCTION_CALL,
    "custom_tool_call": call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL,
    "shell_call": call_pb2.ITEM_TYPE_SHELL_CALL,
    "local_shell_call": call_pb2.ITEM_TYPE_LOCAL_SHELL_CALL,
    "apply_patch_call": call_pb2.ITEM_TYPE_APPLY_PATCH_CALL,
}
_OUTCOMES = {v.number: v.name.removeprefix("OUTCOME_").lower() for v in executor_pb2.Outcome.DESCRIPTOR.values}
#: Statuses that mean "the gateway refused this call", not "the gateway failed".
REFUSAL_CODES = frozenset(
    {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED}
)
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class ToolResult:
    """What the gateway said and, when allowed, what the run produced."""

    allowed: bool
    decision_id: str
    """Empty only when a refusal carried no Decision."""
    reasons: tuple[Reason, ...]
    """Never empty."""
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    outcome: str = "not_run"
    """ok, nonzero_exit, timeout, oom_killed, killed, error; not_run when denied."""
    output_truncated: bool = False
    error: str = ""
    """The executor's message when outcome is error."""
    status: str = "OK"
    """The gRPC status name of the Invoke."""


class ToolGateway(Protocol):
    """The seam the loop needs; ``Gateway`` is the real one."""

    def list_tools(self) -> gateway_pb2.ListToolsResponse: ...

    def invoke(
        self,
        call_id: str,
        item_type: str,
        tool: str,
        arguments_raw: str,
        session_id: str,
        *,
        requested_timeout_ms: int = 0,
    ) -> ToolResult: ...

    def observe(self, item_type: str, item_id: str, *, tool: str, status: str, item_json: str, session_id: str) -> str:
        """Records a hosted item in the gateway's audit log; returns the event id."""
        ...


def denied_from_error(exc: grpc.RpcError) -> ToolResult:
    """A refusal status as a denied result, with the Decision from the
    ``grpc-status-details-bin`` trailer (a google.rpc.Status) when present."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for detail in status_pb2.Status.FromString(value).details:
            decision = call_pb2.Decision()
            if detail.Unpack(decision):
                reasons = tuple(Reason(r.code, r.message) for r in decision.reasons)
                return ToolResult(
                    allowed=False,
                    decision_id=decision.decision_id,
                    reasons=reasons or (Reason(code.name.lower(), details),),
                    status=code.name,
                )
    return ToolResult(allowed=False, decision_id="", reasons=(Reason(code.name.lower(), details),), status=code.name)


def result_from_response(resp: gateway_pb2.InvokeResponse) -> ToolResult:
    r = resp.result
    return ToolResult(
        allowed=resp.decision.verdict == call_pb2.VERDICT_ALLOW,
        decision_id=resp.decision.decision_id,
        reasons=tuple(Reason(x.code, x.message) for x in resp.decision.reasons),
        stdout=resp.stdout.decode("utf-8", errors="replace"),
        stderr=resp.stderr.decode("utf-8", errors="replace"),
        exit_code=r.exit_code,
        outcome=_OUTCOMES.get(r.outcome, "error"),
        output_truncated=r.output_truncated,
        error=r.error,
    )


class Gateway:
    """A gateway client. Thread-safe: the loop invokes from several threads
    over the one channel."""

    def __init__(
        self, address: str, token: str | None, *, tls: ClientTLS | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.address = address
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout_s = timeout_s
        if tls is None:
            self._channel = grpc.insecure_channel(address)
        else:
            self._channel = grpc.secure_channel(address, tls.credentials(), options=tls.channel_options())
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    @classmethod
    def from_stack(cls, home: Path, *, principal: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Gateway:
        """The gateway of a running ``airlock up`` (``<home>/stack.json``),
        with the token of ``principal`` (default: the stack's default
        principal). The token file is readable only by that principal's
        agent user when the stack runs its parts as separate users."""
        stack_file = home / "stack.json"
        try:
            stack: dict[str, Any] = json.loads(stack_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no running stack found ({stack_file} missing); start `airlock up`") from None
        principals: dict[str, Any] = stack.get("principals") or {}
        if principals:
            name = principal or str(stack.get("principal", ""))
            if name not in principals:
                raise KeyError(f"no principal {name!r} in this stack; known: {', '.join(sorted(principals))}")
            token_file = Path(principals[name]["token_file"])
        else:  # stack.json before per-principal credentials
            token_file = Path(stack["token_file"])
        token = token_file.read_text(encoding="utf-8").strip()
        return cls(str(stack["gateway"]), token, timeout_s=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def list_tools(self) -> gateway_pb2.ListToolsResponse:
        try:
            resp: gateway_pb2.ListToolsResponse = self._stub.ListTools(
                gateway_pb2.ListToolsRequest(), metadata=self._metadata, timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            raise GatewayError(f"ListTools failed: {exc.code().name}: {exc.details()}") from exc
        return resp

    def invoke(
        self,
        call_id: str,
        item_type: str,
        tool: str,
        arguments_raw: str,
        session_id: str,
        *,
        requested_timeout_ms: int = 0,
    ) -> ToolResult:
        """``requested_timeout_ms`` (e.g. a shell_call's timeout_ms) is only a
        request: the policy clamps it to the profile's and the tool's caps.

        A call that cannot even be put on the wire (model text with a lone
        surrogate, which UTF-8 cannot carry) is refused here as
        ``arguments_malformed``, with no decision id: the gateway never saw
        it, and replacing the character would send a different text than the
        model wrote."""
        try:
            call = call_pb2.ToolCall(
                call_id=call_id,
                item_type=ITEM_TYPES[item_type],
                tool=tool,
                arguments=arguments_raw,
                session_id=session_id,
            )
        except ValueError as exc:  # UnicodeEncodeError
            return ToolResult(
                allowed=False,
                decision_id="",
                reasons=(Reason("arguments_malformed", f"the call cannot be sent to the gateway: {exc}"),),
                status="INVALID_ARGUMENT",
            )
        if requested_timeout_ms > 0:
            call.requested_limits.timeout_ms = requested_timeout_ms
        try:
            resp: gateway_pb2.InvokeResponse = self._stub.Invoke(
                gateway_pb2.InvokeRequest(call=call), metadata=self._metadata, timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            if exc.code() in REFUSAL_CODES:
                return denied_from_error(exc)
            raise GatewayError(f"Invoke {call_id} failed: {exc.code().name}: {exc.details()}") from exc
        return result_from_response(resp)

    def observe(self, item_type: str, item_id: str, *, tool: str, status: str, item_json: str, session_id: str) -> str:
        request = gateway_pb2.ObserveRequest(
            item_type=item_type,
            item_id=item_id,
            tool=tool,
            status=status,
            item_json=item_json,
            session_id=session_id,
        )
        try:
            resp: gateway_pb2.ObserveResponse = self._stub.Observe(
                request, metadata=self._metadata, timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            # An unrecorded hosted item is a gap in the audit trail: the run stops.
            raise GatewayError(f"Observe {item_type} {item_id} failed: {exc.code().name}: {exc.details()}") from exc
        return resp.event_id
