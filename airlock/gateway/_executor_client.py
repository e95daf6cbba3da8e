"""The executor seam's real implementation: a gRPC client over the
executor's Unix socket, authenticated with the shared executor token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any

import grpc

from airlock.common import wire
from airlock.common._grpc_tls import channel_credentials, channel_options
from airlock.common._secrets import read_secret_text
from airlock.common.wire import ArtifactLimits, InputFile
from airlock.gateway._config import ExecutorLink
from airlock.gateway._errors import ExecutorError
from airlock.gateway._model import OutputFile, RunOutcome, RunSpec, SessionInfo
from airlock.gateway._sessions import Ended, Lost, SandboxUpdate, Snapshot, Started
from airlock.v1 import executor_pb2, executor_pb2_grpc

log = logging.getLogger("airlock.gateway.executor")

#: The largest Run request sent: the executor's default input ceiling
#: (artifacts.max_input_bytes, 64 MiB) plus room for the spec.
MAX_RUN_REQUEST_BYTES = 68 * 1024 * 1024
#: Extra time a run with /inputs or /outputs may take: the executor bounds
#: the copy-in and the collection by its transfer timeout each (30 s by
#: default), so the gateway waits that long twice before giving up on it.
FILES_GRACE_S = 60.0
#: An output file is spooled in memory up to this, then to a temporary file.
_SPOOL_IN_MEMORY = 1024 * 1024


class GrpcExecutor:
    def __init__(self, link: ExecutorLink, max_message_bytes: int) -> None:
        self._token = read_secret_text(link.token_file, "executor token file")
        self._grace_s = link.grace_ms / 1000
        self._start_s = link.start_timeout_ms / 1000
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            # A run's request carries its /inputs files.
            ("grpc.max_send_message_length", max(max_message_bytes, MAX_RUN_REQUEST_BYTES)),
        ]
        if link.tls is not None:
            options.extend(channel_options(link.tls))
            self._channel = grpc.aio.secure_channel(link.target, channel_credentials(link.tls), options=options)
        else:
            # A Unix socket: the kernel, the folder's mode and the token guard it.
            self._channel = grpc.aio.insecure_channel(link.target, options=options)
        self._stub = executor_pb2_grpc.ExecutorServiceStub(self._channel)

    async def run(self, plan: RunSpec, inputs: Sequence[InputFile] = ()) -> RunOutcome:
        outputs = _Outputs(plan.artifacts)
        stdout = bytearray()
        stderr = bytearray()
        try:
            result = await self._stream(plan, inputs, stdout, stderr, outputs)
        except BaseException:
            outputs.discard()
            raise
        files, skipped = outputs.finish()
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
            outputs=files,
            skipped_outputs=(*(wire.SkippedOutput(s.name, s.reason) for s in result.skipped_outputs), *skipped),
        )

    async def _stream(
        self, plan: RunSpec, inputs: Sequence[InputFile], stdout: bytearray, stderr: bytearray, outputs: _Outputs
    ) -> executor_pb2.RunResult:
        result: executor_pb2.RunResult | None = None
        # Copying in and collecting have bounds of their own at the executor.
        files = bool(inputs) or plan.artifacts.max_outputs > 0
        run_s = plan.limits.timeout_ms / 1000 + self._grace_s + (FILES_GRACE_S if files else 0.0)
        request = executor_pb2.RunRequest(
            spec=wire.spec_to_proto(plan),
            inputs=[executor_pb2.InputFile(name=f.name, content=f.content) for f in inputs],
        )
        call = self._stub.Run(request, metadata=self._metadata(), timeout=self._start_s + run_s)
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
                    elif which == "output_file":
                        outputs.add(event.output_file)
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
        return result

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


class _Outputs:
    """The run's /outputs files as the executor streams them: each spooled
    to an unnamed temporary file (memory up to a bound), checked against
    the call's obligations again -- the executor is trusted to enforce
    them, but a file over them is not stored on its word."""

    def __init__(self, limits: ArtifactLimits) -> None:
        self._limits = limits
        self._done: list[OutputFile] = []
        self._current: tuple[str, IO[bytes], int] | None = None
        self._skipped: list[wire.SkippedOutput] = []
        self._total = 0
        self._refused: set[str] = set()

    def add(self, chunk: executor_pb2.OutputFileChunk) -> None:
        name = chunk.name
        if name in self._refused:
            return
        if self._current is not None and self._current[0] != name:
            # A new file before the last one's end: the last one is cut.
            self._drop("collection_failed")
        if self._current is None:
            if len(self._done) >= self._limits.max_outputs or any(f.name == name for f in self._done):
                self._refuse(name, "count_limit" if len(self._done) >= self._limits.max_outputs else "bad_name")
                return
            try:
                spooled = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
            except OSError:
                log.warning("output %r: cannot spool it", name, exc_info=True)
                self._refuse(name, "collection_failed")
                return
            self._current = (name, spooled, 0)
        name, file, size = self._current
        size += len(chunk.data)
        # _total counts what is written: a chunk refused here never was.
        if size > self._limits.max_output_file_bytes or self._total + len(chunk.data) > self._limits.max_output_bytes:
            self._drop("too_large" if size > self._limits.max_output_file_bytes else "total_limit")
            self._refused.add(name)
            return
        try:
            file.write(chunk.data)
        except OSError:
            # A full disk (the spool rolls over to one): this file is skipped,
            # the run and the other files go on.
            log.warning("output %r: cannot spool it", name, exc_info=True)
            self._drop("collection_failed")
            self._refused.add(name)
            return
        self._total += len(chunk.data)
        self._current = (name, file, size)
        if chunk.eof:
            if chunk.size != size:
                self._drop("collection_failed")
                return
            file.seek(0)
            self._done.append(OutputFile(name, size, file))
            self._current = None

    def _refuse(self, name: str, reason: str) -> None:
        self._refused.add(name)
        self._skipped.append(wire.SkippedOutput(name, reason))

    def _drop(self, reason: str) -> None:
        assert self._current is not None
        name, file, size = self._current
        with contextlib.suppress(OSError):
            file.close()
        self._total -= size
        self._current = None
        self._skipped.append(wire.SkippedOutput(name, reason))

    def finish(self) -> tuple[tuple[OutputFile, ...], tuple[wire.SkippedOutput, ...]]:
        if self._current is not None:
            self._drop("collection_failed")
        return tuple(self._done), tuple(self._skipped)

    def discard(self) -> None:
        if self._current is not None:
            self._current[1].close()
            self._current = None
        for f in self._done:
            f.file.close()
        self._done = []


async def _converted(call: Any) -> AsyncIterator[Any]:
    """The stream's messages; a broken stream is an ExecutorError."""
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as exc:
        raise ExecutorError(f"executor: {exc.code().name}: {exc.details()}") from exc


#: Refusals the executor reports with FAILED_PRECONDITION ("code: message"):
#: the run's error then carries the executor's own code.
EXECUTOR_REFUSALS = frozenset(wire.EXECUTOR_REFUSALS)


def _run_error(exc: grpc.aio.AioRpcError) -> ExecutorError:
    details = exc.details() or ""
    code, _, message = details.partition(": ")
    if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and code in EXECUTOR_REFUSALS:
        return ExecutorError(f"executor refused the run: {message}", code=code)
    return ExecutorError(f"executor: {exc.code().name}: {details}")
