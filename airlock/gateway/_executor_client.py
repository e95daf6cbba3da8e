"""The executor seam's real implementation: a gRPC client over the
executor's Unix socket, authenticated with the shared executor token."""

from __future__ import annotations

import asyncio

import grpc

from airlock.common import wire
from airlock.common._grpc_tls import channel_credentials, channel_options
from airlock.common._secrets import read_secret_text
from airlock.gateway._config import ExecutorLink
from airlock.gateway._errors import ExecutorError
from airlock.gateway._model import RunOutcome, RunSpec
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
            raise ExecutorError(f"executor: {exc.code().name}: {exc.details()}") from exc
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
        )

    async def close(self) -> None:
        await self._channel.close()
