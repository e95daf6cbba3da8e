"""Runs one spec in a fresh container and reports output and outcome.

No grpc here. Blocking Docker calls go to worker threads; the output pump
forwards only the bounded head of the output while the run is going, so a
flood cannot grow our memory. The container is removed on every path,
including a cancelled caller (the finally block is shielded).

One deadline bounds a run from its container's create to its removal: the
run's timeout plus RUN_GRACE_S. A wedged Docker call (create, wait, remove)
ends the call with outcome "error" (deadline_exceeded) rather than hanging
it; the clean-up goes on in the background. The container's own deadline
wrapper and the reaper (airlock/executor/_reaper.py) end it even if this process dies.

Docker's error text never reaches the caller, whose output goes to the
model: RunResult.error is a reason code and a fixed message, and the
details go to this process's log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import RequestException

from airlock.executor._capture import OutputCapture
from airlock.executor._config import ExecutorConfig
from airlock.executor._docker import ContainerRuntime
from airlock.executor._errors import RunRefused
from airlock.executor._images import ImageAllowlist
from airlock.executor._metrics import ExecutorMetrics
from airlock.executor._model import Chunk, EffectiveLimits, Outcome, RunResult, RunSpec
from airlock.executor._options import (
    RUN_GRACE_S,
    EgressAttachment,
    ceilings,
    clamp,
    container_options,
    executor_instance,
    load_seccomp_profile,
    reap_at,
)
from airlock.executor.egress import Egress
from airlock.executor.egress.proxy import CallGrant

log = logging.getLogger("airlock.executor")

Emit = Callable[[Chunk | str], Awaitable[None]]
"""Receives the container id (str) once started, then output chunks."""

_SENTINEL = object()
#: 128 + SIGKILL: killed from outside the sandbox, not by us or the OOM
#: killer; or by the deadline wrapper (GNU timeout reports a SIGKILLed
#: command as 137 too), which the run's duration tells apart.
SIGKILL_EXIT = 137
#: RunResult.error for a started run that failed: code -> fixed message.
#: Docker's own text stays in the log: it names host paths and daemon
#: internals, and the caller's output goes to the model.
RUN_ERRORS = {
    "docker_error": "the container runtime failed; the details are in the executor's log",
    "deadline_exceeded": "the run did not end within its timeout plus the executor's grace; its container is removed",
}
#: A fixed egress address another executor on the same network took first:
#: the run gets a fresh address this many times before it fails.
ADDRESS_ATTEMPTS = 3


@dataclass
class _Run:
    """What the clean-up of one run needs, however far the run got."""

    spec: RunSpec
    limits: EffectiveLimits
    grant: CallGrant | None = None
    egress: EgressAttachment | None = None
    create_task: asyncio.Future[str] | None = None
    container_id: str = ""
    counted: bool = False
    t0: float = 0.0
    start_ms: int = 0


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
        self._images = ImageAllowlist(cfg.registry_file, cfg.allowed_images)
        self._images.load()
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
        if not self._images.allows(spec.image):
            raise RunRefused(
                "image_not_allowed",
                f"image {spec.image!r} is not named by the tool registry; this executor runs no other",
            )

    async def run(self, spec: RunSpec, emit: Emit) -> RunResult:
        try:
            self.refuse_if_unsafe(spec)
        except RunRefused as exc:
            self._metrics.refused.labels(exc.code).inc()
            if exc.code == "image_not_allowed":
                log.warning("run %s (tool %r) refused: image %r is not allowed", spec.run_id, spec.tool, spec.image)
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

    async def _run(self, spec: RunSpec, emit: Emit) -> RunResult:
        run = _Run(spec, clamp(spec, self._ceilings), t0=time.monotonic())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + run.limits.timeout_ms / 1000 + RUN_GRACE_S
        if spec.network_mode == "egress":
            assert self._egress is not None  # refuse_if_unsafe checked it
            try:
                run.grant, run.egress = self._egress.open_call(
                    spec.run_id, spec.tool, spec.egress_allowlist, spec.egress_allow_cidrs
                )
            except RunRefused as exc:  # no free address on the egress network
                self._metrics.refused.labels(exc.code).inc()
                raise
        outer = asyncio.timeout_at(deadline)
        try:
            async with outer:
                return await self._lifecycle(run, emit, deadline)
        except TimeoutError:
            if not outer.expired():
                raise
            log.error(  # noqa: TRY400 - a deadline, not an exception, is the news
                "run %s (tool %r) did not end within its deadline (timeout %d ms + %g s); removing its container",
                spec.run_id, spec.tool, run.limits.timeout_ms, RUN_GRACE_S,
            )  # fmt: skip
            return self._failed(run, "deadline_exceeded")
        except (DockerException, RequestException) as exc:
            # ImageNotFound became RunRefused inside; anything else Docker
            # says is logged here and never returned.
            log.warning("run %s (tool %r): the container runtime failed: %s", spec.run_id, spec.tool, exc)
            return self._failed(run, "docker_error")
        finally:
            # The clean-up is a task of its own: a cancelled caller (even one
            # cancelled twice, as a server shutting down does) stops waiting
            # for it, but it still finishes, and close() waits for it. The
            # caller waits for it only until the run's deadline.
            cleanup = asyncio.ensure_future(self._discard(run.create_task, run.container_id, run.grant))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(cleanup), max(deadline - loop.time(), 0.0))
            self._active.pop(spec.run_id, None)
            self._cancelled.discard(spec.run_id)
            if run.counted:
                self._metrics.running.dec()

    def _failed(self, run: _Run, code: str) -> RunResult:
        self._metrics.runs.labels("error", run.spec.runtime).inc()
        self._metrics.run_errors.labels(code).inc()
        return RunResult(
            "error",
            -1,
            False,
            0,
            0,
            round((time.monotonic() - run.t0) * 1000),
            run.start_ms,
            f"{code}: {RUN_ERRORS[code]}",
        )

    async def _create_and_attach(self, run: _Run) -> Iterator[tuple[bytes | None, bytes | None]]:
        """Creates the container, attaches to its output and starts it. A
        fixed egress address that another executor on the same network holds
        makes Docker refuse the start: the run gets a fresh address."""
        spec = run.spec
        for attempt in range(1, ADDRESS_ATTEMPTS + 1):
            options = container_options(
                spec, run.limits, self._cfg, self._seccomp_profile, run.egress, reap_deadline=reap_at(run.limits)
            )
            # The create runs in a thread that a cancelled caller cannot stop;
            # it is kept as a task so the clean-up can wait for its id and
            # remove the container it made.
            run.create_task = asyncio.ensure_future(asyncio.to_thread(self._runtime.create, options))
            try:
                run.container_id = await asyncio.shield(run.create_task)
            except ImageNotFound as exc:
                self._metrics.refused.labels("image_missing").inc()
                raise RunRefused("image_missing", f"image {spec.image!r} is not present; it is never pulled") from exc
            self._active[spec.run_id] = run.container_id
            if not run.counted:
                self._metrics.running.inc()
                run.counted = True
            stream = await asyncio.to_thread(self._runtime.attach, run.container_id)
            try:
                await asyncio.to_thread(self._runtime.start, run.container_id)
            except APIError as exc:
                if run.grant is None or attempt == ADDRESS_ATTEMPTS or "address already in use" not in str(exc).lower():
                    raise
                assert self._egress is not None
                assert run.egress is not None
                log.warning("run %s: egress address %s is taken; trying another", spec.run_id, run.egress.address)
                await asyncio.to_thread(self._runtime.remove, run.container_id)
                run.container_id, run.create_task = "", None
                try:
                    run.egress = self._egress.readdress(run.grant, run.egress)
                except RunRefused as refused:
                    self._metrics.refused.labels(refused.code).inc()
                    raise
                continue
            return stream
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    async def _lifecycle(self, run: _Run, emit: Emit, deadline: float) -> RunResult:  # noqa: C901 - one linear lifecycle reads best in one place
        spec, limits = run.spec, run.limits
        capture = OutputCapture(limits.output_bytes)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        timed_out = False
        forward_task: asyncio.Future[None] | None = None
        try:
            stream = await self._create_and_attach(run)
            started = time.monotonic()
            run.start_ms = round((started - run.t0) * 1000)
            self._metrics.start_seconds.labels(spec.runtime).observe(started - run.t0)
            await emit(run.container_id)

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
                await asyncio.to_thread(self._runtime.kill, run.container_id)
                await pump_task
            await forward_task
            exit_code, oom = await asyncio.to_thread(self._runtime.wait, run.container_id, deadline - loop.time())
            ended = time.monotonic()
            # The sandbox is gone: revoke its credential, close what it left open.
            used = await self._egress.close_call(run.grant) if run.grant is not None and self._egress else None
            for chunk in capture.finish():
                await emit(chunk)
            ran_ms = round((ended - started) * 1000)
            outcome = self._outcome(spec.run_id, exit_code, oom=oom, timed_out=timed_out, ran_ms=ran_ms, limits=limits)
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
                duration_ms=ran_ms,
                container_start_ms=run.start_ms,
                egress=used.records if used else (),
                egress_unrecorded=used.unrecorded if used else 0,
            )
        finally:
            if forward_task is not None and not forward_task.done():
                forward_task.cancel()

    async def _discard(
        self, create_task: asyncio.Future[str] | None, container_id: str, grant: CallGrant | None
    ) -> None:
        """Removes the run's container (waiting for its create if need be)
        and closes its egress; never raises."""
        if not container_id and create_task is not None:
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

    def _outcome(
        self, run_id: str, exit_code: int, *, oom: bool, timed_out: bool, ran_ms: int, limits: EffectiveLimits
    ) -> Outcome:
        if timed_out:
            return "timeout"
        if oom:
            return "oom_killed"
        if run_id in self._cancelled:
            return "killed"
        if exit_code == 0:
            return "ok"
        if exit_code == SIGKILL_EXIT:
            # SIGKILLed after the timeout had passed: the deadline wrapper
            # got there before our own kill did.
            return "timeout" if ran_ms >= limits.timeout_ms else "killed"
        return "nonzero_exit"
