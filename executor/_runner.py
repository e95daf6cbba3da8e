"""Runs one spec in a fresh container and reports output and outcome.

No grpc here. Blocking Docker calls go to worker threads; the output pump
forwards only the bounded head of the output while the run is going, so a
flood cannot grow our memory. The container is removed on every path,
including a cancelled caller (the finally block is shielded).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from docker.errors import APIError, ImageNotFound

from executor._capture import OutputCapture
from executor._config import ExecutorConfig
from executor._docker import ContainerRuntime
from executor._metrics import ExecutorMetrics
from executor._model import Chunk, Outcome, RunRefused, RunResult, RunSpec
from executor._options import ceilings, clamp, container_options, executor_instance, load_seccomp_profile
from executor.egress import Egress
from executor.egress.proxy import CallGrant

log = logging.getLogger("airlock.executor")

Emit = Callable[[Chunk | str], Awaitable[None]]
"""Receives the container id (str) once started, then output chunks."""

_SENTINEL = object()
#: 128 + SIGKILL: killed from outside the sandbox, not by us or the OOM killer.
SIGKILL_EXIT = 137


class Runner:
    def __init__(
        self, cfg: ExecutorConfig, runtime: ContainerRuntime, metrics: ExecutorMetrics, egress: Egress | None = None
    ) -> None:
        self._cfg = cfg
        self._egress = egress
        self._runtime = runtime
        self._metrics = metrics
        self._ceilings = ceilings(cfg)
        self._seccomp_profile = load_seccomp_profile(cfg)
        self._slots = asyncio.Semaphore(cfg.max_concurrent_runs)
        # Each running container holds one thread for its output stream for
        # as long as it runs. Those threads get a pool of their own: sharing
        # asyncio's default pool (cpu+4 threads) with the short Docker calls
        # deadlocks once the streams fill it, and nothing can kill a run.
        self._pumps = concurrent.futures.ThreadPoolExecutor(cfg.max_concurrent_runs, thread_name_prefix="pump")
        self._active: dict[str, str] = {}
        self._cleanups: set[asyncio.Future[None]] = set()
        self._cancelled: set[str] = set()

    def refuse_if_unsafe(self, spec: RunSpec) -> None:
        if spec.network_mode == "egress":
            # A grant of egress gets the filtered network or nothing, never
            # an unfiltered one.
            if self._egress is None or self._egress.unavailable:
                why = self._egress.unavailable if self._egress else "this executor has no egress proxy"
                raise RunRefused("egress_unavailable", f"egress was granted but cannot be filtered ({why}); refusing")
            if spec.runtime != "runc":
                raise RunRefused(
                    "egress_unavailable", "egress is offered under runc only: gVisor is registered with --network=none"
                )
        if spec.runtime not in self._cfg.runtimes:
            raise RunRefused("runtime_unavailable", f"runtime {spec.runtime!r} is not enabled on this executor")
        if not spec.run_id or not spec.image or not spec.argv:
            raise RunRefused("spec_invalid", "run_id, image and argv are required")

    async def run(self, spec: RunSpec, emit: Emit) -> RunResult:
        try:
            self.refuse_if_unsafe(spec)
        except RunRefused as exc:
            self._metrics.refused.labels(exc.code).inc()
            raise
        async with self._slots:
            return await self._run(spec, emit)

    async def cancel(self, run_id: str) -> bool:
        container_id = self._active.get(run_id)
        if container_id is None:
            return False
        self._cancelled.add(run_id)
        await asyncio.to_thread(self._runtime.kill, container_id)
        return True

    def remove_leftovers(self) -> int:
        """Removes containers a crashed run of this executor left behind (by
        label); other executors' containers on the same engine are theirs."""
        leftovers = self._runtime.list_managed(executor_instance(self._cfg))
        for container_id in leftovers:
            self._runtime.remove(container_id)
        return len(leftovers)

    async def _run(self, spec: RunSpec, emit: Emit) -> RunResult:  # noqa: C901, PLR0915 - one linear lifecycle reads best in one place
        limits = clamp(spec, self._ceilings)
        grant = None
        egress_options = None
        if spec.network_mode == "egress":
            assert self._egress is not None  # refuse_if_unsafe checked it
            grant, egress_options = self._egress.open_call(
                spec.run_id, spec.tool, spec.egress_allowlist, spec.egress_allow_cidrs
            )
        try:
            options = container_options(spec, limits, self._cfg, self._seccomp_profile, egress_options)
        except BaseException:
            if grant is not None and self._egress is not None:
                await self._egress.close_call(grant)  # the credential must not outlive the run
            raise
        capture = OutputCapture(limits.output_bytes)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        container_id = ""
        t0 = time.monotonic()
        start_ms = 0
        timed_out = False
        forward_task: asyncio.Future[None] | None = None
        counted = False
        # The create runs in a thread that a cancelled caller cannot stop; it
        # is kept as a task so the finally block can wait for its id and
        # remove the container it made.
        create_task = asyncio.ensure_future(asyncio.to_thread(self._runtime.create, options))
        try:
            try:
                container_id = await asyncio.shield(create_task)
            except ImageNotFound as exc:
                self._metrics.refused.labels("image_missing").inc()
                raise RunRefused("image_missing", f"image {spec.image!r} is not present; it is never pulled") from exc
            self._active[spec.run_id] = container_id
            self._metrics.running.inc()
            counted = True
            stream = await asyncio.to_thread(self._runtime.attach, container_id)
            await asyncio.to_thread(self._runtime.start, container_id)
            started = time.monotonic()
            start_ms = round((started - t0) * 1000)
            self._metrics.start_seconds.labels(spec.runtime).observe(started - t0)
            await emit(container_id)

            def pump(frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
                try:
                    for out, err in frames:
                        for name, data in (("stdout", out), ("stderr", err)):
                            if data:
                                head = capture.add(name, data)  # type: ignore[arg-type]
                                if head is not None and head.data:
                                    loop.call_soon_threadsafe(queue.put_nowait, head)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, _SENTINEL)

            pump_task = loop.run_in_executor(self._pumps, pump, stream)

            async def forward() -> None:
                while (item := await queue.get()) is not _SENTINEL:
                    assert isinstance(item, Chunk)
                    await emit(item)

            forward_task = asyncio.ensure_future(forward())
            try:
                await asyncio.wait_for(asyncio.shield(pump_task), limits.timeout_ms / 1000)
            except TimeoutError:
                timed_out = True
                await asyncio.to_thread(self._runtime.kill, container_id)
                await pump_task
            await forward_task
            exit_code, oom = await asyncio.to_thread(self._runtime.wait, container_id)
            ended = time.monotonic()
            # The sandbox is gone: revoke its credential, close what it left open.
            used = await self._egress.close_call(grant) if grant is not None and self._egress else None
            for chunk in capture.finish():
                await emit(chunk)
            outcome = self._outcome(spec.run_id, exit_code, oom=oom, timed_out=timed_out)
            if capture.truncated:
                self._metrics.truncations.inc()
            self._metrics.run_seconds.labels(spec.runtime).observe(ended - started)
            self._metrics.runs.labels(outcome, spec.runtime).inc()
            return RunResult(
                outcome=outcome,
                exit_code=exit_code,
                output_truncated=capture.truncated,
                stdout_bytes=capture.totals["stdout"],
                stderr_bytes=capture.totals["stderr"],
                duration_ms=round((ended - started) * 1000),
                container_start_ms=start_ms,
                egress=used.records if used else (),
                egress_unrecorded=used.unrecorded if used else 0,
            )
        except APIError as exc:
            log.warning("run %s failed: %s", spec.run_id, exc)
            self._metrics.runs.labels("error", spec.runtime).inc()
            return RunResult(
                "error", -1, capture.truncated, 0, 0, round((time.monotonic() - t0) * 1000), start_ms, str(exc)
            )
        finally:
            if forward_task is not None and not forward_task.done():
                forward_task.cancel()
            # The clean-up is a task of its own: a cancelled caller (even one
            # cancelled twice, as a server shutting down does) stops waiting
            # for it, but it still finishes, and close() waits for it.
            cleanup = asyncio.ensure_future(self._discard(create_task, container_id, grant))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(cleanup)
            self._active.pop(spec.run_id, None)
            self._cancelled.discard(spec.run_id)
            if counted:
                self._metrics.running.dec()

    async def _discard(self, create_task: asyncio.Future[str], container_id: str, grant: CallGrant | None) -> None:
        """Removes the run's container (waiting for its create if need be)
        and closes its egress; never raises."""
        if not container_id:
            with contextlib.suppress(Exception):
                container_id = await create_task
        if container_id:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._runtime.remove, container_id)
        if grant is not None and self._egress is not None and not grant.closed:
            with contextlib.suppress(Exception):
                await self._egress.close_call(grant)

    async def close(self) -> int:
        """At shutdown, after the server stopped: lets pending clean-ups
        finish, then removes any container of this executor still there
        (a run the server's grace period cut short). Returns how many."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        return await asyncio.to_thread(self.remove_leftovers)

    def _outcome(self, run_id: str, exit_code: int, *, oom: bool, timed_out: bool) -> Outcome:
        if timed_out:
            return "timeout"
        if oom:
            return "oom_killed"
        if run_id in self._cancelled:
            return "killed"
        if exit_code == 0:
            return "ok"
        if exit_code == SIGKILL_EXIT:
            return "killed"
        return "nonzero_exit"
