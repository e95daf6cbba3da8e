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
import logging
import os
import stat
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from airlock.common import ConfigError, wire
from airlock.gateway._approvals import Approval
from airlock.gateway._auth import Authenticator
from airlock.gateway._core import Gateway
from airlock.gateway._errors import ExecutorError, GatewayError, PolicyError
from airlock.gateway._events import obligations_to_proto, tool_definition_refusal
from airlock.gateway._model import Call, CallInput, Decision, Limits, Observation, Principal, RunOutcome
from airlock.gateway._sessions import SessionService
from airlock.gateway.artifacts import Answer, ArtifactDecision, ArtifactError, ArtifactOp, ArtifactOps
from airlock.gateway.artifacts._events import ref_to_proto
from airlock.gateway.artifacts._model import MAX_LISTED, check_header
from airlock.gateway.tooldefs import DEFINE_TOOL, DefinitionError, DefinitionRecord, ToolDefinitions, rfc3339
from airlock.gateway.tooldefs import DESCRIPTION as DEFINE_DESCRIPTION
from airlock.gateway.tooldefs import PARAMETERS as DEFINE_PARAMETERS
from airlock.v1 import (
    approvals_pb2,
    approvals_pb2_grpc,
    artifacts_pb2,
    artifacts_pb2_grpc,
    call_pb2,
    executor_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)

log = logging.getLogger("airlock.gateway")

_SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
_ARTIFACT_SERVICE = artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name
_APPROVAL_SERVICE = approvals_pb2.DESCRIPTOR.services_by_name["ApprovalService"].full_name
_AUTHN: contextvars.ContextVar[tuple[Principal | None, str]] = contextvars.ContextVar("airlock_authn")

_STATUS = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "internal": grpc.StatusCode.INTERNAL,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
}


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """``only``: on an agent's own socket, that agent's credential is the
    only one accepted (the socket's file mode already lets no other local
    user connect; this keeps a leaked token from being used there)."""

    def __init__(self, authenticator: Authenticator, only: str | None = None) -> None:
        self._auth = authenticator
        self._only = only

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is not None and method.startswith(f"/{_ARTIFACT_SERVICE}/"):
            return self._artifact_handler(handler, tuple(details.invocation_metadata or ()))
        # ApprovalService is unary and authenticated exactly like GatewayService.
        ours = method.startswith((f"/{_SERVICE}/", f"/{_APPROVAL_SERVICE}/"))
        if handler is None or not ours or handler.unary_unary is None:
            return handler
        metadata = tuple(details.invocation_metadata or ())
        inner = handler.unary_unary
        auth = self._auth
        only = self._only

        async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            principal, why = auth.authenticate(metadata, context.auth_context())
            if only is not None and principal is not None and principal.id != only:
                principal, why = None, f"this socket serves agent {only!r} only"
            token = _AUTHN.set((principal, why))
            try:
                return await inner(request, context)
            finally:
                _AUTHN.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _authenticated(self, metadata: tuple[Any, ...], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        principal, why = self._auth.authenticate(metadata, context.auth_context())
        if self._only is not None and principal is not None and principal.id != self._only:
            principal, why = None, f"this socket serves agent {self._only!r} only"
        return _AUTHN.set((principal, why))

    def _artifact_handler(self, handler: grpc.RpcMethodHandler, metadata: tuple[Any, ...]) -> grpc.RpcMethodHandler:
        """ArtifactService: the same authentication for its unary, client-
        streamed (put) and server-streamed (get) methods."""
        serdes = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                token = self._authenticated(metadata, context)
                try:
                    return await unary(request, context)
                finally:
                    _AUTHN.reset(token)

            return grpc.unary_unary_rpc_method_handler(unary_behavior, **serdes)
        if handler.stream_unary is not None:
            upload = handler.stream_unary

            async def upload_behavior(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                token = self._authenticated(metadata, context)
                try:
                    return await upload(requests, context)
                finally:
                    _AUTHN.reset(token)

            return grpc.stream_unary_rpc_method_handler(upload_behavior, **serdes)
        if handler.unary_stream is not None:
            download = handler.unary_stream

            async def download_behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                token = self._authenticated(metadata, context)
                try:
                    async for message in download(request, context):
                        yield message
                finally:
                    _AUTHN.reset(token)

            return grpc.unary_stream_rpc_method_handler(download_behavior, **serdes)
        return handler


def decision_to_proto(d: Decision) -> call_pb2.Decision:
    verdict = call_pb2.VERDICT_ALLOW if d.allowed else call_pb2.VERDICT_ASK if d.ask else call_pb2.VERDICT_DENY
    return call_pb2.Decision(
        decision_id=d.decision_id,
        verdict=verdict,
        reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in d.reasons],
        obligations=obligations_to_proto(d.obligations),
        policy_revision=d.policy_revision,
        principal=d.principal,
        shadow_reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in d.shadow],
        shadow_ask_reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in d.shadow_asks],
        approval_id=d.approval.id if isinstance(d.approval, Approval) else "",
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
    def __init__(self, gateway: Gateway, sessions: SessionService | None = None) -> None:
        self._gw = gateway
        self._sessions = sessions

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
            artifacts=[wire.to_message(call_pb2.ArtifactRef, a) for a in run.artifacts],
        )

    async def ListTools(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListToolsRequest, context: grpc.aio.ServicerContext[Any, Any]
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
            if name == DEFINE_TOOL:
                tools.append(
                    gateway_pb2.ToolInfo(
                        name=DEFINE_TOOL,
                        description=DEFINE_DESCRIPTION,
                        parameters_json_schema=_json(DEFINE_PARAMETERS),
                        item_type=wire.ITEM_TYPE_NUMBERS["function_call"],
                    )
                )
                continue
            data = registry.tool_data(name)
            info = gateway_pb2.ToolInfo(
                name=name,
                description=data["description"],
                parameters_json_schema=_json(data["parameters"]),
                item_type=wire.ITEM_TYPE_NUMBERS[data["item_type"]],
            )
            if "display" in data:
                info.display.CopyFrom(
                    call_pb2.Display(width=data["display"]["width"], height=data["display"]["height"])
                )
                info.environment = data["display"]["environment"]
            tools.append(info)
        tools.extend(await self._dynamic_tools(context, principal, request.session_id[:MAX_ID_CHARS], set(names)))
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

    async def ListSessions(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListSessionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.ListSessionsResponse:
        principal = await self._principal(context)
        try:
            with self._gw.admitted(principal):
                found = await self._service(context).listed(principal, everyone=request.all)
        except GatewayError as exc:
            await context.abort(_ERROR_STATUS.get(exc.code, grpc.StatusCode.UNAVAILABLE), f"{exc.code}: {exc}")
            raise  # unreachable: abort raises
        return gateway_pb2.ListSessionsResponse(sessions=[wire.session_to_proto(s) for s in found])

    async def EndSession(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.EndSessionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.EndSessionResponse:
        principal = await self._principal(context)
        if (
            bool(request.session_id) == bool(request.sandbox_id)
            or max(len(request.session_id), len(request.sandbox_id)) > MAX_ID_CHARS
        ):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"give exactly one of session_id and sandbox_id, at most {MAX_ID_CHARS} characters",
            )
        try:
            with self._gw.admitted(principal):
                ended = await self._service(context).end(
                    principal, session_id=request.session_id, sandbox_id=request.sandbox_id
                )
        except GatewayError as exc:
            await context.abort(_ERROR_STATUS.get(exc.code, grpc.StatusCode.UNAVAILABLE), f"{exc.code}: {exc}")
            raise  # unreachable: abort raises
        return gateway_pb2.EndSessionResponse(ended=[wire.session_to_proto(s) for s in ended])

    async def _dynamic_tools(
        self, context: grpc.aio.ServicerContext[Any, Any], principal: Principal, session: str, granted: set[str]
    ) -> list[gateway_pb2.ToolInfo]:
        """The dynamic tools in scope whose base the principal is granted
        (a call to any other would be denied)."""
        defs = self._gw.tool_definitions
        if defs is None:
            return []
        try:
            found = await defs.visible(principal, session)
        except DefinitionError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc.code}: {exc}")
            raise  # unreachable: abort raises
        return [
            gateway_pb2.ToolInfo(
                name=r.record.name,
                description=r.definition.description,
                parameters_json_schema=_json(r.definition.parameters),
                item_type=wire.ITEM_TYPE_NUMBERS["function_call"],
                definition_id=r.record.id,
                scope=r.record.scope,
            )
            for r in found
            if r.record.base in granted
        ]

    async def ListToolDefinitions(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListToolDefinitionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.ListToolDefinitionsResponse:
        principal = await self._principal(context)
        defs = await self._definitions(context)
        session = request.session_id[:MAX_ID_CHARS]
        found = await self._definition_op(
            context,
            principal,
            lambda: defs.listed(principal, everyone=request.all, session=session),
            rpc="ListToolDefinitions",
        )
        return gateway_pb2.ListToolDefinitionsResponse(definitions=[_definition_info(r, principal) for r in found])

    async def GetToolDefinition(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetToolDefinitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.GetToolDefinitionResponse:
        principal = await self._principal(context)
        defs = await self._definitions(context)
        found = await self._definition_op(
            context,
            principal,
            lambda: defs.shown(principal, request.id[:64]),
            rpc="GetToolDefinition",
            definition_id=request.id[:64],
        )
        info = _definition_info(found.record, principal)
        info.source = found.definition.source
        info.parameters_json_schema = _json(found.definition.parameters)
        return gateway_pb2.GetToolDefinitionResponse(definition=info)

    async def PromoteToolDefinition(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.PromoteToolDefinitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.PromoteToolDefinitionResponse:
        principal = await self._principal(context)
        defs = await self._definitions(context)
        done = await self._definition_op(
            context,
            principal,
            lambda: defs.promote(principal, request.id[:64], request.to[:80], self._gw.record),
            rpc="PromoteToolDefinition",
            definition_id=request.id[:64],
        )
        return gateway_pb2.PromoteToolDefinitionResponse(definition=_definition_info(done, principal))

    async def RetireToolDefinition(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RetireToolDefinitionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> gateway_pb2.RetireToolDefinitionResponse:
        principal = await self._principal(context)
        defs = await self._definitions(context)
        done = await self._definition_op(
            context,
            principal,
            lambda: defs.retire(principal, request.id[:64], self._gw.record),
            rpc="RetireToolDefinition",
            definition_id=request.id[:64],
        )
        return gateway_pb2.RetireToolDefinitionResponse(definition=_definition_info(done, principal))

    async def _definitions(self, context: grpc.aio.ServicerContext[Any, Any]) -> ToolDefinitions:
        defs = self._gw.tool_definitions
        if defs is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "tool_definitions_unavailable: this gateway has no artifact store"
            )
        assert defs is not None
        return defs

    async def _definition_op(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        principal: Principal,
        op: Callable[[], Awaitable[_T]],
        *,
        rpc: str,
        definition_id: str = "",
    ) -> _T:
        """One tool-definition operation under the principal's rate and
        in-flight cap; its refusal as a status with the reason code, and
        (but for the rate and in-flight refusals a flood repeats at will,
        which are counted) an audit event."""
        try:
            with self._gw.admitted(principal):
                return await op()
        except GatewayError as exc:
            if exc.code not in ("rate_limited", "too_many_in_flight"):
                event = tool_definition_refusal(
                    str(uuid.uuid4()), principal.id, rpc=rpc, definition_id=definition_id, code=exc.code, why=str(exc)
                )
                try:
                    await self._gw.record(event)
                except GatewayError:
                    log.exception("the refusal of %s was not recorded", rpc)
            await context.abort(_DEFINITION_STATUS.get(exc.code, grpc.StatusCode.UNAVAILABLE), f"{exc.code}: {exc}")
            raise  # unreachable: abort raises

    @staticmethod
    async def _principal(context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        principal, err = _AUTHN.get((None, "not authenticated"))
        if principal is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, err)
        assert principal is not None
        return principal

    def _service(self, _context: grpc.aio.ServicerContext[Any, Any]) -> SessionService:
        if self._sessions is None:
            raise ExecutorError("this gateway has no executor", code="executor_unavailable")
        return self._sessions


#: Session operations' errors -> gRPC status.
_ERROR_STATUS = {
    "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_many_in_flight": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "executor_unavailable": grpc.StatusCode.UNAVAILABLE,
}
#: The longest session or sandbox id EndSession takes (as ToolCall.session_id).
MAX_ID_CHARS = 256
#: Tool-definition operations' errors -> gRPC status.
_DEFINITION_STATUS = {
    **_ERROR_STATUS,
    "definition_not_found": grpc.StatusCode.NOT_FOUND,
    "scope_invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "definition_retired": grpc.StatusCode.FAILED_PRECONDITION,
}
_T = TypeVar("_T")


def _definition_info(r: DefinitionRecord, viewer: Principal) -> gateway_pb2.ToolDefinitionInfo:
    """A definition as ``viewer`` may see it: where it was defined (session,
    call, decision, artifact) only for its owner and operators, not for the
    other principals of a profile it was promoted to."""
    if r.owner != viewer.id and "operator" not in viewer.roles:
        r = replace(r, session_id="", call_id="", decision_id="", artifact_id="")
    return gateway_pb2.ToolDefinitionInfo(
        id=r.id,
        name=r.name,
        description=r.description,
        base=r.base,
        scope=r.scope,
        owner=r.owner,
        sha256=r.sha256,
        network=r.network,
        created_at=rfc3339(r.created_at),
        session_id=r.session_id,
        call_id=r.call_id,
        policy_revision=r.policy_revision,
        retired=r.retired,
        calls=r.calls,
        sessions=r.sessions,
        decision_id=r.decision_id,
        artifact_id=r.artifact_id,
    )


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
        sandbox=wire.use_to_proto(run.sandbox),
        skipped_outputs=[wire.to_message(executor_pb2.SkippedOutput, s) for s in run.skipped_outputs],
    )


#: An artifact refusal's status -> gRPC code.
_ARTIFACT_STATUS = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "internal": grpc.StatusCode.INTERNAL,
}


def artifact_decision_to_proto(d: ArtifactDecision) -> call_pb2.Decision:
    return call_pb2.Decision(
        decision_id=d.decision_id,
        verdict=call_pb2.VERDICT_ALLOW if d.allowed else call_pb2.VERDICT_DENY,
        reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in d.reasons],
        policy_revision=d.policy_revision,
        principal=d.principal,
    )


class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    """ArtifactService: translation only (airlock/gateway/artifacts/_ops.py
    decides). A refusal ends the RPC like Invoke's: a status code and the
    deny Decision as a google.rpc.Status detail."""

    def __init__(self, ops: ArtifactOps | None) -> None:
        self._ops = ops

    @staticmethod
    def _op(operation: Any, rpc: str, **fields: Any) -> ArtifactOp:
        principal, err = _AUTHN.get((None, "not authenticated"))
        return ArtifactOp(operation, principal, rpc=rpc, authn_error=err, **fields)

    async def _answer(self, context: grpc.aio.ServicerContext[Any, Any], answer: Answer) -> None:
        decision = answer.decision
        if decision.allowed:
            return
        code = _ARTIFACT_STATUS[decision.status]
        codes = ", ".join(f"{r.code}: {r.message}" for r in decision.reasons)
        message = f"deny ({codes}) decision_id={decision.decision_id}"
        status = wire.decision_status(code.value[0], message, artifact_decision_to_proto(decision))
        await context.abort_with_status(rpc_status.to_status(status))

    async def _unavailable(self, context: grpc.aio.ServicerContext[Any, Any]) -> ArtifactOps:
        if self._ops is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "artifact_store_unavailable: this gateway has no artifact store"
            )
        assert self._ops is not None
        return self._ops

    async def PutArtifact(  # noqa: N802 - gRPC method name
        self, request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.PutArtifactResponse:
        ops = await self._unavailable(context)
        first: artifacts_pb2.PutArtifactRequest | None = None
        async for message in request_iterator:
            first = message
            break
        if first is None or first.WhichOneof("part") != "header":
            op = self._op("put", "PutArtifact")
            answer = await ops.refuse(op, "artifact_header_missing", "the first message of a put is its header")
            await self._answer(context, answer)
            raise AssertionError("unreachable: a refusal aborts")
        header = first.header

        async def chunks() -> Any:
            async for message in request_iterator:
                if message.WhichOneof("part") == "chunk":
                    yield message.chunk
                elif message.WhichOneof("part") == "header":
                    raise ValueError("a second header")

        op = self._op(
            "put",
            "PutArtifact",
            name=header.name,
            session=header.session_id,
            media_type=header.media_type,
            size=header.size if header.HasField("size") else None,
            sha256=header.sha256 if header.HasField("sha256") else None,
        )
        try:
            # Before the policy and the audit see them: a 3 MB media type
            # must not become a policy input or an audit line.
            check_header(session=op.session, media_type=op.media_type, size=op.size)
        except ArtifactError as exc:
            refused = await ops.refuse(op, exc.code, str(exc))
            await self._answer(context, refused)
            raise AssertionError("unreachable: a refusal aborts") from exc
        answer = await ops.put(op, chunks())
        await self._answer(context, answer)
        assert answer.record is not None
        return artifacts_pb2.PutArtifactResponse(
            artifact=ref_to_proto(answer.record),
            decision=artifact_decision_to_proto(answer.decision),
            session_id=answer.record.session,
        )

    async def GetArtifact(  # noqa: N802 - gRPC method name
        self, request: artifacts_pb2.GetArtifactRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        ops = await self._unavailable(context)
        answer = await ops.read(self._op("get", "GetArtifact", artifact_id=request.id))
        await self._answer(context, answer)
        assert answer.record is not None
        assert answer.chunks is not None
        yield artifacts_pb2.GetArtifactResponse(
            artifact=ref_to_proto(answer.record), decision=artifact_decision_to_proto(answer.decision)
        )
        while (chunk := await ops.next_chunk(answer.chunks)) is not None:
            yield artifacts_pb2.GetArtifactResponse(chunk=chunk)

    async def StatArtifact(  # noqa: N802 - gRPC method name
        self, request: artifacts_pb2.StatArtifactRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.StatArtifactResponse:
        ops = await self._unavailable(context)
        answer = await ops.stat(self._op("stat", "StatArtifact", artifact_id=request.id))
        await self._answer(context, answer)
        assert answer.record is not None
        return artifacts_pb2.StatArtifactResponse(
            artifact=ref_to_proto(answer.record),
            decision=artifact_decision_to_proto(answer.decision),
            session_id=answer.record.session,
            created_at=answer.record.created_at,
        )

    async def ListArtifacts(  # noqa: N802 - gRPC method name
        self, request: artifacts_pb2.ListArtifactsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.ListArtifactsResponse:
        ops = await self._unavailable(context)
        op = self._op(
            "list",
            "ListArtifacts",
            list_session=request.session_id or None,
            shared_only=request.shared_only,
            prefix=request.prefix,
        )
        answer = await ops.list(op)
        await self._answer(context, answer)
        # The newest MAX_LISTED (records come oldest first): a principal with
        # many artifacts must not push the answer over the message cap.
        records = answer.records[-MAX_LISTED:]
        return artifacts_pb2.ListArtifactsResponse(
            artifacts=[
                artifacts_pb2.ListedArtifact(artifact=ref_to_proto(r), session_id=r.session, created_at=r.created_at)
                for r in records
            ],
            decision=artifact_decision_to_proto(answer.decision),
            truncated=len(answer.records) > len(records),
        )

    async def DeleteArtifact(  # noqa: N802 - gRPC method name
        self, request: artifacts_pb2.DeleteArtifactRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> artifacts_pb2.DeleteArtifactResponse:
        ops = await self._unavailable(context)
        answer = await ops.delete(self._op("delete", "DeleteArtifact", artifact_id=request.id))
        await self._answer(context, answer)
        assert answer.record is not None
        return artifacts_pb2.DeleteArtifactResponse(
            artifact=ref_to_proto(answer.record), decision=artifact_decision_to_proto(answer.decision)
        )


#: Approval operations' errors -> gRPC status.
_APPROVAL_STATUS = {
    **_ERROR_STATUS,
    "approval_not_found": grpc.StatusCode.NOT_FOUND,
    "approval_not_pending": grpc.StatusCode.FAILED_PRECONDITION,
    "note_too_long": grpc.StatusCode.INVALID_ARGUMENT,
}


def approval_to_proto(a: Approval, *, full: bool = False) -> approvals_pb2.Approval:
    """The approval; ``full`` (GetApproval): with its call's raw arguments."""
    b = a.binding
    return approvals_pb2.Approval(
        id=a.id,
        state=a.state,
        principal=b.principal,
        session_id=b.session_id,
        tool=b.tool,
        item_type=wire.ITEM_TYPE_NUMBERS.get(b.item_type, call_pb2.ITEM_TYPE_UNSPECIFIED),
        arguments_sha256=b.arguments_sha256,
        policy_revision=b.policy_revision,
        call_id=a.call_id,
        decision_id=a.decision_id,
        reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in a.reasons],
        created_at=rfc3339(a.created_at),
        expires_at=rfc3339(a.expires_at),
        decided_at=rfc3339(a.decided_at) if a.decided_at else "",
        approver=a.approver,
        note=a.note,
        arguments=a.arguments if full else "",
        requested_limits_sha256=b.requested_limits_sha256,
        requested_limits_json=a.requested_limits,
        shadow_reasons=[call_pb2.Reason(code=r.code, message=r.message) for r in a.shadow],
    )


class ApprovalServicer(approvals_pb2_grpc.ApprovalServiceServicer):
    """ApprovalService: translation only (airlock/gateway/_approvals.py
    decides who may do what, and audits it)."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    async def _op(self, context: grpc.aio.ServicerContext[Any, Any], op: Callable[[Principal], Awaitable[_T]]) -> _T:
        principal = await GatewayServicer._principal(context)  # noqa: SLF001 - the one authentication lookup
        try:
            with self._gw.admitted(principal):
                return await op(principal)
        except GatewayError as exc:
            await context.abort(_APPROVAL_STATUS.get(exc.code, grpc.StatusCode.UNAVAILABLE), f"{exc.code}: {exc}")
            raise  # unreachable: abort raises

    async def ListApprovals(  # noqa: N802 - gRPC method name
        self, request: approvals_pb2.ListApprovalsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> approvals_pb2.ListApprovalsResponse:
        found = await self._op(context, lambda p: self._gw.approvals.listed(p, everything=request.all))
        return approvals_pb2.ListApprovalsResponse(approvals=[approval_to_proto(a) for a in found])

    async def GetApproval(  # noqa: N802 - gRPC method name
        self, request: approvals_pb2.GetApprovalRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> approvals_pb2.GetApprovalResponse:
        a = await self._op(context, lambda p: self._gw.approvals.shown(p, request.id[:64]))
        return approvals_pb2.GetApprovalResponse(approval=approval_to_proto(a, full=True))

    async def ApproveCall(  # noqa: N802 - gRPC method name
        self, request: approvals_pb2.ApproveCallRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> approvals_pb2.ApproveCallResponse:
        a = await self._op(
            context, lambda p: self._gw.approvals.decide(p, request.id[:64], grant=True, note=request.note)
        )
        return approvals_pb2.ApproveCallResponse(approval=approval_to_proto(a))

    async def DenyCall(  # noqa: N802 - gRPC method name
        self, request: approvals_pb2.DenyCallRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> approvals_pb2.DenyCallResponse:
        a = await self._op(
            context, lambda p: self._gw.approvals.decide(p, request.id[:64], grant=False, note=request.note)
        )
        return approvals_pb2.DenyCallResponse(approval=approval_to_proto(a))


def add_standard_services(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """gRPC health checking and server reflection, as any gRPC client expects."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            _SERVICE,
            _ARTIFACT_SERVICE,
            _APPROVAL_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return health_servicer


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


#: The longest a Unix socket path may be (sun_path less its NUL).
MAX_SOCKET_PATH = 107


def prepare_agent_socket(path: Path) -> None:
    """An agent socket's folder must be ours, not a symlink, and writable by
    no one else (so no one else can put a socket there); ``airlock up``
    makes it 2750 with the agent's group. Missing, it is made 0700 (a
    single-user stack). A stale socket from an earlier run is removed."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ConfigError(str(path), "agents[].socket", f"a Unix socket path must be at most {MAX_SOCKET_PATH} bytes")
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ConfigError(str(folder), "agents[].socket", "the socket's folder must be a real folder")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigError(
            str(folder),
            "agents[].socket",
            "the socket's folder must be the gateway's own and writable by no one else "
            f"(it is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})",
        )
    if path.is_socket():
        path.unlink()
    elif path.exists() or path.is_symlink():
        raise ConfigError(str(path), "agents[].socket", "something other than a socket is in the way")
