"""The executor seam's real implementation: a gRPC client over the
executor's Unix socket, authenticated with the shared executor token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from airlock.common import wire
from airlock.common._grpc_tls import channel_credentials, channel_options
from airlock.common._secrets import read_secret_text
from airlock.gateway._config import ExecutorLink
from airlock.gateway._errors import ExecutorError
from airlock.gateway._model import RunOutcome, RunSpec, SessionInfo
from airlock.gateway._sessions import Ended, Lost, SandboxUpdate, Snapshot, Started
from airlock.v1 import executor_pb2, executor_pb2_grpc


class GrpcExecutor:
    def __init__(self, link: ExecutorLink, max_message_bytes: int) -> None:
        self._token = read_secret_text(link.token_file, "executor token file")
        self._grace_s = link.grace_ms / 1000
        self._start_s = link.start_timeout_ms / 1000
        options: list[tuple[str, str | int]] = [("grpc.max_receive_message_length", max_message_bytes)]
        if link.tls is not None:
            options.extend(channel_options(link.tls))
            self._channel = grpc.aio.secure_channel(link.target, channel_credentials(link.tls), options=options)
        else:
            # A Unix socket: the kernel, the folder's mode and the token guard it.
            self._channel = grpc.aio.insecure_channel(link.target, options=options)
        self._stub = executor_pb2_grpc.ExecutorServiceStub(self._channel)

    async def run(self, plan: RunSpec) -> RunOutcome:
        spec = wire.spec_to_proto(plan)
        stdout = bytearray()
        stderr = bytearray()
        result: executor_pb2.RunResult | None = None
        run_s = plan.limits.timeout_ms / 1000 + self._grace_s
        call = self._stub.Run(
            executor_pb2.RunRequest(spec=spec),
            metadata=(("authorization", f"Bearer {self._token}"),),
            timeout=self._start_s + run_s,
        )
        # Two deadlines: waiting for a free executor slot and a started
        # container is bounded separately from the run itself, so a busy
        # executor does not eat into a call's own timeout.
        phase = "start"
        try:
            events = aiter(call)
            async with asyncio.timeout(self._start_s):
                first = await anext(events)
            if first.WhichOneof("event") == "result":
                result = first.result
            phase = "run"
            async with asyncio.timeout(run_s):
                async for event in events:
                    which = event.WhichOneof("event")
                    if which == "output":
                        target = stdout if event.output.stream == executor_pb2.STREAM_STDOUT else stderr
                        target.extend(event.output.data)
                    elif which == "result":
                        result = event.result
        except TimeoutError as exc:
            limit = self._start_s if phase == "start" else run_s
            raise ExecutorError(f"executor: the run's {phase} took longer than {limit:.0f} s") from exc
        except StopAsyncIteration as exc:
            raise ExecutorError("executor stream ended before the run started") from exc
        except grpc.aio.AioRpcError as exc:
            raise _run_error(exc) from exc
        finally:
            # If our caller is cancelled, cancelling the stream makes the
            # executor kill and remove the container.
            call.cancel()
        if result is None:
            raise ExecutorError("executor stream ended without a result")
        return RunOutcome(
            outcome=wire.outcome_name(result.outcome),  # type: ignore[arg-type]
            exit_code=result.exit_code,
            stdout=bytes(stdout),
            stderr=bytes(stderr),
            output_truncated=result.output_truncated,
            duration_ms=result.duration_ms,
            container_start_ms=result.container_start_ms,
            error=result.error,
            egress=tuple(result.egress),
            egress_unrecorded=result.egress_unrecorded,
            sandbox=wire.use_from_proto(result.sandbox),
        )

    # -- session sandboxes (airlock/gateway/_sessions.py SandboxSource) --------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),)

    async def watch_sandboxes(self) -> AsyncIterator[SandboxUpdate]:
        """The executor's session events until the stream breaks (no
        deadline: it lasts as long as both processes do)."""
        call = self._stub.WatchSandboxes(executor_pb2.WatchSandboxesRequest(), metadata=self._metadata())
        try:
            async for message in _converted(call):
                which = message.WhichOneof("event")
                if which == "snapshot":
                    yield Snapshot(tuple(wire.session_from_proto(s) for s in message.snapshot.sessions))
                elif which == "started":
                    yield Started(wire.session_from_proto(message.started.session))
                elif which == "ended":
                    yield Ended(wire.session_from_proto(message.ended.session), message.ended.cause)
                elif which == "lost":
                    yield Lost(message.lost.count)
        finally:
            call.cancel()

    async def list_sandboxes(self, principal: str) -> list[SessionInfo]:
        try:
            found = await self._stub.ListSandboxes(
                executor_pb2.ListSandboxesRequest(principal=principal), metadata=self._metadata(), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            raise ExecutorError(f"executor: {exc.code().name}: {exc.details()}") from exc
        return [wire.session_from_proto(s) for s in found.sessions]

    async def end_sandboxes(self, *, sandbox_id: str, principal: str, session_id: str) -> list[SessionInfo]:
        request = executor_pb2.EndSandboxesRequest(sandbox_id=sandbox_id, principal=principal, session_id=session_id)
        try:
            ended = await self._stub.EndSandboxes(request, metadata=self._metadata(), timeout=60)
        except grpc.aio.AioRpcError as exc:
            raise ExecutorError(f"executor: {exc.code().name}: {exc.details()}") from exc
        return [wire.session_from_proto(s) for s in ended.ended]

    async def close(self) -> None:
        await self._channel.close()


async def _converted(call: Any) -> AsyncIterator[Any]:
    """The stream's messages; a broken stream is an ExecutorError."""
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as exc:
        raise ExecutorError(f"executor: {exc.code().name}: {exc.details()}") from exc


#: Refusals the executor reports with FAILED_PRECONDITION ("code: message"):
#: the run's error then carries the executor's own code.
EXECUTOR_REFUSALS = frozenset(
    {"egress_unavailable", "runtime_unavailable", "image_missing", "image_not_allowed", "spec_invalid", "session_limit"}
)


def _run_error(exc: grpc.aio.AioRpcError) -> ExecutorError:
    details = exc.details() or ""
    code, _, message = details.partition(": ")
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and code in EXECUTOR_REFUSALS:
        return ExecutorError(f"executor refused the run: {message}", code=code)
    return ExecutorError(f"executor: {exc.code().name}: {details}")
