"""The one client of the Airlock gateway, shared by the agent loop and the
CLI: ListTools, Decide, Invoke and Observe over one gRPC channel.

A refusal (PERMISSION_DENIED, INVALID_ARGUMENT, UNAUTHENTICATED,
RESOURCE_EXHAUSTED, and FAILED_PRECONDITION for a call awaiting approval)
is a result, not an exception: a denied ``ToolResult`` carrying the
gateway's Decision, because an agent must tell the model and go on. Only
a gateway that cannot be asked raises ``GatewayUnavailable``. Needs grpc
and the stubs only (``airlock[agent]`` installs nothing more)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import grpc
from grpc_status import rpc_status

from airlock.common import wire
from airlock.common._grpc_tls import channel_credentials, channel_options
from airlock.common._tls import ClientTLS
from airlock.common.stackfile import read_stack
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

#: Client-executed Responses API item types (hosted ones are only observed).
ITEM_TYPES: tuple[str, ...] = tuple(n for n in wire.ITEM_TYPE_NUMBERS if n not in wire.HOSTED_ITEM_TYPES)
#: Statuses that mean "the gateway refused this call", not "the gateway failed".
REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        # A call held for a human's approval (reason approval_pending).
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


class GatewayUnavailable(Exception):  # noqa: N818 - reads as what happened
    """The gateway could not be asked (unreachable, timed out, internal error).

    A refusal is not this: refusals are results (a denied ToolResult).
    ``status`` is the gRPC status name (ListTools and Observe raise this for
    a refusal too, since neither has a result to carry it)."""

    code = "gateway_unavailable"

    def __init__(self, message: str, status: str = "UNAVAILABLE") -> None:
        super().__init__(message)
        self.status = status


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
    decision: call_pb2.Decision | None = None
    """The gateway's Decision as it came (None for a refusal without one)."""
    run: executor_pb2.RunResult | None = None
    """The run's result as it came (None when nothing ran)."""
    artifacts: tuple[call_pb2.ArtifactRef, ...] = ()
    """The run's /outputs files, stored as artifacts."""


class ToolGateway(Protocol):
    """The seam the loop needs; ``Gateway`` is the real one."""

    def list_tools(self, session_id: str = "") -> gateway_pb2.ListToolsResponse:
        """The tools this principal may call (with the session's dynamic tools)."""
        ...

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

    def end_session(self, *, session_id: str = "", sandbox_id: str = "") -> list[executor_pb2.SessionInfo]:
        """Ends the session's sandboxes (the loop calls it when a run ends)."""
        ...


def decision_from_error(exc: grpc.RpcError) -> call_pb2.Decision | None:
    """The Decision a refusal carries in its google.rpc.Status details."""
    try:
        status = rpc_status.from_call(exc)
    except ValueError:  # a status whose code disagrees with the call's
        return None
    return wire.decision_from_status(status)


def denied_from_error(exc: grpc.RpcError) -> ToolResult:
    """A refusal status as a denied result, with the Decision when present."""
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    decision = decision_from_error(exc)
    if decision is not None:
        reasons = tuple(Reason(r.code, r.message) for r in decision.reasons)
        return ToolResult(
            allowed=False,
            decision_id=decision.decision_id,
            reasons=reasons or (Reason(code.name.lower(), details),),
            status=code.name,
            decision=decision,
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
        outcome=wire.outcome_name(r.outcome),
        output_truncated=r.output_truncated,
        error=r.error,
        decision=resp.decision,
        run=r,
        artifacts=tuple(resp.artifacts),
    )


class GatewayClient:
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
            self._channel = grpc.secure_channel(address, channel_credentials(tls), options=channel_options(tls))
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    @classmethod
    def from_stack(
        cls, home: Path, *, principal: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> GatewayClient:
        """The gateway of a running ``airlock up`` (``<home>/stack.json``),
        with the token of ``principal`` (default: the stack's default
        principal). The token file is readable only by that principal's
        agent user when the stack runs its parts as separate users."""
        stack_file = home / "stack.json"
        try:
            stack = read_stack(stack_file)
        except FileNotFoundError:
            raise FileNotFoundError(f"no running stack found ({stack_file} missing); start `airlock up`") from None
        target = stack.target(principal)
        token = stack.token_file(principal).read_text(encoding="utf-8").strip()
        return cls(target, token, timeout_s=timeout_s)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def list_tools(self, session_id: str = "") -> gateway_pb2.ListToolsResponse:
        try:
            resp: gateway_pb2.ListToolsResponse = self._stub.ListTools(
                gateway_pb2.ListToolsRequest(session_id=session_id), metadata=self._metadata, timeout=self._timeout_s
            )
        except grpc.RpcError as exc:
            why = f"ListTools failed: {exc.code().name}: {exc.details()}"
            raise GatewayUnavailable(why, exc.code().name) from exc
        return resp

    def decide(self, call: call_pb2.ToolCall) -> ToolResult:
        """The decision alone: nothing runs. A policy deny is an answer here
        (the Decision comes back as a denied result); bad input is a refusal."""
        resp = self._refusable(
            "Decide", call, lambda: self._stub.Decide(gateway_pb2.DecideRequest(call=call), **self._opts)
        )
        if isinstance(resp, ToolResult):
            return resp
        d = resp.decision
        return ToolResult(
            allowed=d.verdict == call_pb2.VERDICT_ALLOW,
            decision_id=d.decision_id,
            reasons=tuple(Reason(r.code, r.message) for r in d.reasons),
            decision=d,
        )

    def invoke_call(self, call: call_pb2.ToolCall) -> ToolResult:
        """Invoke with a ToolCall as the wire carries it."""
        resp = self._refusable(
            "Invoke", call, lambda: self._stub.Invoke(gateway_pb2.InvokeRequest(call=call), **self._opts)
        )
        return resp if isinstance(resp, ToolResult) else result_from_response(resp)

    @property
    def _opts(self) -> dict[str, Any]:
        return {"metadata": self._metadata, "timeout": self._timeout_s}

    @staticmethod
    def _refusable(rpc: str, call: call_pb2.ToolCall, send: Callable[[], Any]) -> Any:
        """The response, a denied result for a refusal, or GatewayUnavailable."""
        try:
            return send()
        except grpc.RpcError as exc:
            if exc.code() in REFUSAL_CODES:
                return denied_from_error(exc)
            why = f"{rpc} {call.call_id} failed: {exc.code().name}: {exc.details()}"
            raise GatewayUnavailable(why, exc.code().name) from exc

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
                item_type=wire.ITEM_TYPE_NUMBERS[item_type],
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
        return self.invoke_call(call)

    def list_sessions(self, *, everyone: bool = False) -> list[executor_pb2.SessionInfo]:
        """Live session sandboxes: this principal's, or (operators) everyone's."""
        try:
            resp: gateway_pb2.ListSessionsResponse = self._stub.ListSessions(
                gateway_pb2.ListSessionsRequest(all=everyone), **self._opts
            )
        except grpc.RpcError as exc:
            why = f"ListSessions failed: {exc.code().name}: {exc.details()}"
            raise GatewayUnavailable(why, exc.code().name) from exc
        return list(resp.sessions)

    def end_session(self, *, session_id: str = "", sandbox_id: str = "") -> list[executor_pb2.SessionInfo]:
        """Ends one of this principal's sessions (every sandbox of it), or one
        sandbox by id; returns what ended (nothing for an unknown id)."""
        try:
            resp: gateway_pb2.EndSessionResponse = self._stub.EndSession(
                gateway_pb2.EndSessionRequest(session_id=session_id, sandbox_id=sandbox_id), **self._opts
            )
        except grpc.RpcError as exc:
            why = f"EndSession failed: {exc.code().name}: {exc.details()}"
            raise GatewayUnavailable(why, exc.code().name) from exc
        return list(resp.ended)

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
            raise GatewayUnavailable(
                f"Observe {item_type} {item_id} failed: {exc.code().name}: {exc.details()}"
            ) from exc
        return resp.event_id
