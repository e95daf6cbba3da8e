"""The gateway's gRPC transport: translate messages, nothing else.

Interceptor order: authentication is the only interceptor and wraps every
GatewayService method, so no handler can run without an authentication
result; refusing is left to the core so that a bad token is audited and
counted like every other refusal. It authenticates inside the wrapped
handler because only the handler's context carries the TLS peer identity.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from airlock.common import wire
from airlock.gateway._auth import Authenticator
from airlock.gateway._core import Gateway
from airlock.gateway._errors import PolicyError
from airlock.gateway._events import obligations_to_proto
from airlock.gateway._model import Call, CallInput, Decision, Limits, Observation, Principal, RunOutcome
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
_AUTHN: contextvars.ContextVar[tuple[Principal | None, str]] = contextvars.ContextVar("airlock_authn")

_STATUS = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "internal": grpc.StatusCode.INTERNAL,
}


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(f"/{_SERVICE}/") or handler.unary_unary is None:
            return handler
        metadata = tuple(details.invocation_metadata or ())
        inner = handler.unary_unary
        auth = self._auth

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = _AUTHN.set(auth.authenticate(metadata, context.auth_context()))
            try:
                return await inner(request, context)
            finally:
                _AUTHN.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def decision_to_proto(d: Decision) -> call_pb2.Decision:
    return call_pb2.Decision(
        decision_id=d.decision_id,
        verdict=call_pb2.VERDICT_ALLOW if d.allowed else call_pb2.VERDICT_DENY,
        reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in d.reasons],
        obligations=obligations_to_proto(d.obligations),
        policy_revision=d.policy_revision,
        principal=d.principal,
        shadow_reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in d.shadow],
    )


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], decision: Decision) -> None:
    """Ends the RPC with the refusal's status; the Decision rides along as a
    google.rpc.Status detail (grpc-status) so clients get codes and
    decision_id typed."""
    code = _STATUS[decision.refusal]
    codes = ", ".join(f"{r.code}: {r.message}" for r in decision.reasons)
    message = f"{decision.verdict} ({codes}) decision_id={decision.decision_id}"
    status = wire.decision_status(code.value[0], message, decision_to_proto(decision))
    await context.abort_with_status(rpc_status.to_status(status))


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    @staticmethod
    def _input(call: call_pb2.ToolCall, rpc: str) -> CallInput:
        principal, err = _AUTHN.get((None, "not authenticated"))
        return CallInput(
            call=Call(
                call_id=call.call_id,
                item_type=wire.item_type_name(call.item_type),  # type: ignore[arg-type]
                tool=call.tool,
                arguments=call.arguments,
                session_id=call.session_id,
                requested_limits=Limits(**wire.from_message(call.requested_limits))
                if call.HasField("requested_limits")
                else None,
            ),
            principal=principal,
            rpc=rpc,  # type: ignore[arg-type]
            authn_error=err,
        )

    async def Decide(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.DecideRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.DecideResponse:
        decision = await self._gw.decide(self._input(request.call, "Decide"))
        # A policy deny is an answer here, not an error; bad input is not.
        if decision.refusal not in ("none", "permission_denied"):
            await _refuse(context, decision)
        return gateway_pb2.DecideResponse(decision=decision_to_proto(decision))

    async def Invoke(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.InvokeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.InvokeResponse:
        result = await self._gw.invoke(self._input(request.call, "Invoke"))
        if not result.decision.allowed:
            await _refuse(context, result.decision)
        run = result.run
        assert run is not None
        return gateway_pb2.InvokeResponse(
            decision=decision_to_proto(result.decision),
            result=_run_to_proto(run),
            stdout=run.stdout,
            stderr=run.stderr,
        )

    async def ListTools(  # noqa: N802 - gRPC method name
        self, _request: gateway_pb2.ListToolsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.ListToolsResponse:
        principal, err = _AUTHN.get((None, "not authenticated"))
        if principal is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, err)
        assert principal is not None
        try:
            names, revision = await self._gw.granted_tools(principal)
        except PolicyError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{exc.code}: {exc}")
            raise  # unreachable: abort raises
        registry = self._gw.registry
        tools = []
        for name in names:
            data = registry.tool_data(name)
            tools.append(
                gateway_pb2.ToolInfo(
                    name=name,
                    description=data["description"],
                    parameters_json_schema=_json(data["parameters"]),
                    item_type=wire.ITEM_TYPE_NUMBERS[data["item_type"]],
                )
            )
        return gateway_pb2.ListToolsResponse(principal=principal.id, tools=tools, policy_revision=revision)

    async def Observe(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ObserveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.ObserveResponse:
        principal, err = _AUTHN.get((None, "not authenticated"))
        observed = await self._gw.observe(
            Observation(
                item_type=request.item_type,
                item_id=request.item_id,
                tool=request.tool,
                status=request.status,
                item_json=request.item_json,
                session_id=request.session_id,
                principal=principal,
                authn_error=err,
            )
        )
        if observed.refusal != "none":
            reason = observed.reason
            await context.abort(
                _STATUS[observed.refusal], f"{reason.code}: {reason.message} event_id={observed.event_id}"
            )
        return gateway_pb2.ObserveResponse(event_id=observed.event_id)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _run_to_proto(run: RunOutcome) -> executor_pb2.RunResult:
    return executor_pb2.RunResult(
        outcome=wire.OUTCOME_NUMBERS[run.outcome],
        exit_code=run.exit_code,
        output_truncated=run.output_truncated,
        stdout_bytes=len(run.stdout),
        stderr_bytes=len(run.stderr),
        duration_ms=run.duration_ms,
        container_start_ms=run.container_start_ms,
        error=run.error,
    )


def add_standard_services(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """gRPC health checking and server reflection, as any gRPC client expects."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    return health_servicer


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
