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
from airlock.executor._model import Chunk, EgressRecord
from airlock.executor._runner import Runner
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
    return wire.to_message(call_pb2.EgressConnection, record)


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def Run(  # noqa: N802 - gRPC method name
        self, request: executor_pb2.RunRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        # A coroutine writing with context.write (not an async generator):
        # the runner emits from callbacks as output arrives.
        spec = wire.spec_from_proto(request.spec)

        async def emit(item: Chunk | str) -> None:
            if isinstance(item, str):
                await context.write(executor_pb2.RunResponse(started=executor_pb2.Started(container_id=item)))
                return
            stream = executor_pb2.STREAM_STDOUT if item.stream == "stdout" else executor_pb2.STREAM_STDERR
            await context.write(
                executor_pb2.RunResponse(output=executor_pb2.OutputChunk(stream=stream, data=item.data))
            )

        try:
            result = await self._runner.run(spec, emit)
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
                )
            )
        )

    async def Cancel(  # noqa: N802 - gRPC method name
        self, request: executor_pb2.CancelRequest, _context: grpc.aio.ServicerContext[Any, Any]
    ) -> executor_pb2.CancelResponse:
        return executor_pb2.CancelResponse(found=await self._runner.cancel(request.run_id))
