"""The executor's gRPC transport. Only the gateway may call: on a Unix
socket, the peer gate (airlock/executor/_peer.py) admits only allowed_peer_uids
(SO_PEERCRED) before gRPC sees a byte, and every RPC must also carry the
shared token (root ignores file modes and could take an allowed uid, so the
token is what stops a same-host root client)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from airlock.common import wire
from airlock.executor._errors import RunRefused
from airlock.executor._metrics import METHODS, ExecutorMetrics
from airlock.executor._model import Chunk, EgressRecord, InputFile, OutputFileChunk
from airlock.executor._runner import Runner
from airlock.executor.sandboxes import EventsLost, SessionEvents, SessionTable
from airlock.v1 import call_pb2, executor_pb2, executor_pb2_grpc

_SERVICE = executor_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every contact, then refuses any RPC without the shared token."""

    def __init__(self, token: str, metrics: ExecutorMetrics) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = str(details.method).rsplit("/", 1)[-1]
        self._metrics.requests.labels(method if method in METHODS else "other").inc()
        presented = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                presented = value.removeprefix("Bearer ").encode()
        if hmac.compare_digest(hashlib.sha256(presented).digest(), self._digest):
            return await continuation(details)
        self._metrics.unauthenticated.inc()
        return _refuse_handler(grpc.StatusCode.UNAUTHENTICATED, "executor: missing or wrong token")


def _refuse_handler(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    # unary_stream so a streaming or unary client both get the status.
    return grpc.unary_stream_rpc_method_handler(refuse)


def egress_to_proto(record: EgressRecord) -> call_pb2.EgressConnection:
    scalars = (f.name for f in call_pb2.EgressConnection.DESCRIPTOR.fields if f.name != "requests")
    message = call_pb2.EgressConnection(**{name: getattr(record, name) for name in scalars})
    for r in record.requests:
        message.requests.add(
            method=r.method, path=r.path, status=r.status, bytes_out=r.bytes_out, bytes_in=r.bytes_in,
            rule=r.rule, secret_names=r.secret_names, reason=r.reason,
        )  # fmt: skip
    return message


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(
        self, runner: Runner, sessions: SessionTable | None = None, events: SessionEvents | None = None
    ) -> None:
        self._runner = runner
        self._sessions = sessions
        self._events = events

    async def Run(  # noqa: N802 - gRPC method name
        self, request: executor_pb2.RunRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        # A coroutine writing with context.write (not an async generator):
        # the runner emits from callbacks as output arrives.
        spec = wire.spec_from_proto(request.spec)
        inputs = tuple(InputFile(f.name, f.content) for f in request.inputs)

        async def emit(item: Chunk | OutputFileChunk | str) -> None:
            if isinstance(item, str):
                await context.write(executor_pb2.RunResponse(started=executor_pb2.Started(container_id=item)))
                return
            if isinstance(item, OutputFileChunk):
                await context.write(
                    executor_pb2.RunResponse(output_file=wire.to_message(executor_pb2.OutputFileChunk, item))
                )
                return
            stream = executor_pb2.STREAM_STDOUT if item.stream == "stdout" else executor_pb2.STREAM_STDERR
            await context.write(
                executor_pb2.RunResponse(output=executor_pb2.OutputChunk(stream=stream, data=item.data))
            )

        try:
            result = await self._runner.run(spec, emit, inputs)
        except RunRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{exc.code}: {exc}")
            return
        await context.write(
            executor_pb2.RunResponse(
                result=executor_pb2.RunResult(
                    outcome=wire.OUTCOME_NUMBERS[result.outcome],
                    exit_code=result.exit_code,
                    output_truncated=result.output_truncated,
                    stdout_bytes=result.stdout_bytes,
                    stderr_bytes=result.stderr_bytes,
                    duration_ms=result.duration_ms,
                    container_start_ms=result.container_start_ms,
                    error=result.error,
                    egress=[egress_to_proto(r) for r in result.egress],
                    egress_unrecorded=result.egress_unrecorded,
                    sandbox=wire.use_to_proto(result.sandbox),
                    skipped_outputs=[
                        executor_pb2.SkippedOutput(name=s.name, reason=s.reason) for s in result.skipped_outputs
                    ],
                )
            )
        )

    async def Cancel(  # noqa: N802 - gRPC method name
        self, request: executor_pb2.CancelRequest, _context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.CancelResponse:
        return executor_pb2.CancelResponse(found=await self._runner.cancel(request.run_id))

    async def ListSandboxes(  # noqa: N802 - gRPC method name
        self, request: executor_pb2.ListSandboxesRequest, _context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.ListSandboxesResponse:
        found = self._sessions.list(request.principal or None) if self._sessions is not None else []
        return executor_pb2.ListSandboxesResponse(sessions=[wire.session_to_proto(s) for s in found])

    async def EndSandboxes(  # noqa: N802 - gRPC method name
        self, request: executor_pb2.EndSandboxesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.EndSandboxesResponse:
        if self._sessions is None:
            return executor_pb2.EndSandboxesResponse()
        if request.sandbox_id:
            one = await self._sessions.end_by_id(request.sandbox_id, request.principal or None)
            ended = [one] if one is not None else []
        elif request.principal and request.session_id:
            ended = await self._sessions.end_session(request.principal, request.session_id)
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "give sandbox_id, or principal and session_id")
            return executor_pb2.EndSandboxesResponse()
        return executor_pb2.EndSandboxesResponse(ended=[wire.session_to_proto(s) for s in ended])

    async def WatchSandboxes(  # noqa: N802 - gRPC method name
        self, _request: executor_pb2.WatchSandboxesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        # A snapshot first, so a (re)connecting gateway's view is whole; then
        # every start and end as it happens.
        live = self._sessions.list() if self._sessions is not None else []
        snapshot = executor_pb2.WatchSandboxesResponse.Snapshot(sessions=[wire.session_to_proto(s) for s in live])
        await context.write(executor_pb2.WatchSandboxesResponse(snapshot=snapshot))
        if self._events is None:
            return
        async for item in self._events.drain():
            if isinstance(item, EventsLost):
                message = executor_pb2.WatchSandboxesResponse(
                    lost=executor_pb2.WatchSandboxesResponse.Lost(count=item.count)
                )
            elif item.kind == "started":
                message = executor_pb2.WatchSandboxesResponse(
                    started=executor_pb2.WatchSandboxesResponse.Started(session=wire.session_to_proto(item.session))
                )
            else:
                message = executor_pb2.WatchSandboxesResponse(
                    ended=executor_pb2.WatchSandboxesResponse.Ended(
                        session=wire.session_to_proto(item.session), cause=item.cause
                    )
                )
            await context.write(message)
