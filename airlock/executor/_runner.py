"""Runs one spec and reports output and outcome, in one of three places:

- a one-shot container made for the call and removed after it (the cold
  path, and every call granted egress without a session);
- a warm container claimed from the pool (an ephemeral call without
  network), which the call's ``docker exec`` runs in and which is removed
  after it;
- its session's container (a decision with sandbox mode "session"), which
  outlives the call: every process the call started is killed when it ends
  (airlock/executor/sandboxes/containers.py explains the sweep).

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
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import RequestException

from airlock.executor._artifacts import (
    CLEAR_INPUTS_ARGV,
    CLEAR_OUTPUTS_ARGV,
    Collected,
    Skips,
    Transfer,
    TransferError,
    check_inputs,
    collect,
    copy_in,
    run_quiet,
)
from airlock.executor._capture import OutputCapture
from airlock.executor._config import ExecutorConfig
from airlock.executor._docker import ContainerRuntime, ExecRuntime
from airlock.executor._errors import RunRefused
from airlock.executor._images import ImageAllowlist
from airlock.executor._metrics import ExecutorMetrics
from airlock.executor._model import (
    NO_FILES,
    Chunk,
    EffectiveLimits,
    InputFile,
    Outcome,
    OutputFileChunk,
    RunFiles,
    RunResult,
    RunSpec,
    SandboxUse,
    SkippedOutput,
    check_egress_http,
)
from airlock.executor._options import (
    KEEPER_PIDS,
    RUN_GRACE_S,
    WORKDIR,
    EgressAttachment,
    ceilings,
    clamp,
    container_options,
    deadline_entrypoint,
    executor_instance,
    load_seccomp_profile,
    reap_at,
)
from airlock.executor.egress import Egress, EgressUse, HttpPlan
from airlock.executor.egress.proxy import CallGrant
from airlock.executor.sandboxes.containers import DESKTOP_DISPLAY, ContainerClass, Sandbox, exec_argv
from airlock.executor.sandboxes.pool import WarmPool
from airlock.executor.sandboxes.sessions import SessionKey, SessionTable

log = logging.getLogger("airlock.executor")

Emit = Callable[[Chunk | OutputFileChunk | str], Awaitable[None]]
"""Receives the container id (str) once started, then output chunks, then
the collected /outputs files' chunks."""

_SENTINEL = object()
#: 128 + SIGKILL: killed from outside the sandbox, not by us or the OOM
#: killer; or by the deadline wrapper (GNU timeout reports a SIGKILLed
#: command as 137 too), which the run's duration tells apart.
SIGKILL_EXIT = 137
#: What ``docker exec`` reports when gVisor itself could not run or wait for
#: the exec's process: the sandbox, not the call, failed. A program can exit
#: 128 too; runsc's own message on stderr, or a sandbox that no longer runs a
#: probe, tells them apart. (A program that prints the message and exits 128
#: only ends its own session, which it could anyway.)
RUNSC_EXEC_FAILED = 128
RUNSC_WAIT_FAILED = re.compile(rb'waiting on PID \d+ in sandbox "[0-9a-f]+"')
#: RunResult.error for a started run that failed: code -> fixed message.
#: Docker's own text stays in the log: it names host paths and daemon
#: internals, and the caller's output goes to the model.
RUN_ERRORS = {
    "docker_error": "the container runtime failed; the details are in the executor's log",
    "deadline_exceeded": "the run did not end within its timeout plus the executor's grace; its container is removed",
    "sandbox_lost": "the sandbox container ended during the call; a session's next call starts a new one",
    "inputs_failed": "the input files could not be copied into the sandbox; the program did not run",
}
#: A sweep (kill -9 -1 in the container) that takes longer than this failed.
SWEEP_TIMEOUT_S = 10.0
#: After a timeout's kill, how long the output may take to end before the
#: executor stops reading it (a stopped process can hold it open).
DRAIN_AFTER_KILL_S = 2.0
#: After a session call, how long the pids cgroup may take to show only the
#: keeper (killed processes take a moment to be reaped) before a sweep.
SETTLE_POLLS = 10
SETTLE_POLL_S = 0.005
#: A desktop's check after a call is an exec each time (no cgroup count
#: tells its keeper's processes from the call's): fewer, longer polls.
DESKTOP_SETTLE_POLLS = 5
#: A desktop's width and height, each (the keeper takes 3 or 4 digits).
DESKTOP_SIZE = (200, 4096)
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


class CallFactory(Protocol):
    """Makes a long-lived container for one call that needs /inputs or
    /outputs when no pool or session container serves it."""

    def start(
        self,
        cls: ContainerClass,
        kind: str,
        *,
        egress_address: str = "",
        lifetime_ms: int | None = None,
        image_id: str = "",
    ) -> Sandbox: ...
    def remove(self, container_id: str) -> None: ...


class Sweeper(Protocol):
    def sweep(self, sandbox: Sandbox, timeout_s: float) -> int: ...
    def pids(self, sandbox: Sandbox) -> int | None: ...
    def processes(self, sandbox: Sandbox) -> int | None: ...
    def user_processes(self, sandbox: Sandbox) -> int: ...


@dataclass(frozen=True)
class Sandboxes:
    """The long-lived containers, when this executor keeps them (the
    process wiring makes them; unit tests of the one-shot path leave them
    out)."""

    runtime: ExecRuntime
    sweeper: Sweeper
    pool: WarmPool | None
    sessions: SessionTable | None
    idle_ttl_ms: int
    max_lifetime_ms: int
    max_idle_ttl_ms: int
    max_max_lifetime_ms: int
    factory: CallFactory | None = None


class Runner:
    def __init__(
        self,
        cfg: ExecutorConfig,
        runtime: ContainerRuntime,
        metrics: ExecutorMetrics,
        egress: Egress | None = None,
        sandboxes: Sandboxes | None = None,
        *,
        images: ImageAllowlist | None = None,
    ) -> None:
        self._sandboxes = sandboxes
        self._cfg = cfg
        self._egress = egress
        self._runtime = runtime
        self._metrics = metrics
        self._ceilings = ceilings(cfg)
        self._transfer = Transfer.of(cfg)
        self._seccomp_profile = load_seccomp_profile(cfg)
        if images is None:
            images = ImageAllowlist(cfg.registry_file, cfg.allowed_images)
            images.load()
        self._images = images
        self._slots = asyncio.Semaphore(cfg.max_concurrent_runs)
        # Each running container holds one thread for its output stream for
        # as long as it runs. Those threads get a pool of their own: sharing
        # asyncio's default pool (cpu+4 threads) with the short Docker calls
        # deadlocks once the streams fill it, and nothing can kill a run.
        self._pumps = concurrent.futures.ThreadPoolExecutor(cfg.max_concurrent_runs, thread_name_prefix="pump")
        #: run id -> its container, and its sandbox when it runs in a long-lived one.
        self._active: dict[str, tuple[str, Sandbox | None, bool]] = {}
        self._cleanups: set[asyncio.Future[Any]] = set()
        self._exec_cleanups: dict[str, asyncio.Future[bool]] = {}
        self._cancelled: set[str] = set()

    def refuse_if_unsafe(self, spec: RunSpec) -> None:
        # Inspection, HTTP rules and secrets well-formed, and enforceable
        # here (the proxy has its CA): a run is never looser than its decision.
        check_egress_http(spec, enforced=self._egress is not None and self._egress.inspects)
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
        if spec.sandbox.desktop:
            self._refuse_desktop(spec)
        if not self._images.allows(spec.image):
            raise RunRefused(
                "image_not_allowed",
                f"image {spec.image!r} is not named by the tool registry; this executor runs no other",
            )

    def _refuse_desktop(self, spec: RunSpec) -> None:
        """A desktop lives in its session's container (its keeper runs the
        display and the browser the calls act on): never an ephemeral one."""
        plan = spec.sandbox
        boxes = self._sandboxes
        if plan.mode != "session" or not spec.session_id:
            raise RunRefused(
                "desktop_needs_session",
                "a desktop sandbox runs only in a session (sandbox mode session and a session id)",
            )
        if boxes is None or boxes.sessions is None:
            raise RunRefused("desktop_needs_session", "this executor keeps no session sandboxes, which a desktop needs")
        if spec.runtime != "runc":
            # Debian 12's runsc refuses chromium's posix_spawn of its crash
            # handler (EPERM), and the browser aborts: no desktop comes up.
            raise RunRefused(
                "runtime_unavailable", "a desktop sandbox runs under runc only (chromium fails under gVisor)"
            )
        low, high = DESKTOP_SIZE
        if not (low <= plan.desktop_width <= high and low <= plan.desktop_height <= high):
            raise RunRefused("spec_invalid", f"a desktop's width and height must be in {low}..{high}")

    @property
    def images(self) -> ImageAllowlist:
        return self._images

    async def _refuse_unpinned(self, spec: RunSpec) -> None:
        """The image must be the one the policy decided with: its id on this
        engine equal to the pinned digest (docs/images.md). A retag after the
        decision, or after `airlock images build`, is refused. What runs
        after this check is the digest itself, whatever the tag names by
        then: a call's own container is created from it, and a pool or
        session container is used only if it was created from it
        (Sandbox.image_id; another is replaced by one made from the digest)."""
        if not spec.image_digest:
            return
        try:
            found = await asyncio.to_thread(self._runtime.image_id, spec.image)
        except ImageNotFound as exc:
            raise RunRefused("image_missing", f"image {spec.image!r} is not present; it is never pulled") from exc
        if found != spec.image_digest:
            log.warning("run %s refused: image %s is %s, pinned %s", spec.run_id, spec.image, found, spec.image_digest)
            raise RunRefused(
                "image_mismatch",
                f"image {spec.image!r} is {found} on this engine, not {spec.image_digest} that the policy decided with",
            )

    def refuse_files(self, spec: RunSpec, files: RunFiles) -> RunFiles:
        """The call's files with its limits clamped to this executor's
        ceilings; refuses inputs that break them (one code per reason)."""
        if not files.active:
            return files
        if self._sandboxes is None or self._sandboxes.factory is None:
            raise RunRefused("spec_invalid", "this executor keeps no sandbox containers: no /inputs or /outputs")
        limits = self._transfer.clamp(files.limits)
        # An input larger than the sandbox's file size limit could not be written.
        check_inputs(files, limits, clamp(spec, self._ceilings).tmpfs_bytes)
        return replace(files, limits=limits)

    async def run(self, spec: RunSpec, emit: Emit, inputs: tuple[InputFile, ...] = ()) -> RunResult:
        """Runs one spec; ``inputs`` go to /inputs, and the spec's artifact
        limits say what comes back from /outputs (docs/executor-artifacts.md)."""
        try:
            self.refuse_if_unsafe(spec)
            files = self.refuse_files(spec, RunFiles(spec.artifacts, inputs))
            await self._refuse_unpinned(spec)
        except RunRefused as exc:
            self._metrics.refused.labels(exc.code).inc()
            if exc.code == "image_not_allowed":
                log.warning("run %s (tool %r) refused: image %r is not allowed", spec.run_id, spec.tool, spec.image)
            raise
        boxes = self._sandboxes
        if boxes is not None and boxes.sessions is not None and spec.sandbox.mode == "session" and spec.session_id:
            try:
                return await self._run_in_session(boxes, boxes.sessions, spec, emit, files)
            except ImageNotFound as exc:
                # The session's container could not be made: a refusal with
                # its own code, as for a call's own container.
                self._metrics.refused.labels("image_missing").inc()
                raise RunRefused("image_missing", f"image {spec.image!r} is not on this executor's engine") from exc
        async with self._slots:
            # gVisor calls start cold: Debian 12's runsc (0.0~20221219) now
            # and then ends a whole sandbox when processes of an exec'd call
            # are killed (docs/sessions.md, "Limits"); a fresh container per
            # call is what it runs reliably.
            if boxes is not None and boxes.pool is not None and spec.network_mode == "none" and spec.runtime == "runc":
                return await self._run_pooled(boxes, boxes.pool, spec, emit, files)
            if files.active:
                # Files need a container that outlives the program.
                assert boxes is not None  # refuse_files checked it
                return await self._run_on_demand(boxes, spec, emit, files)
            return await self._run(spec, emit)

    async def cancel(self, run_id: str) -> bool:
        active = self._active.get(run_id)
        if active is None:
            return False
        container_id, sandbox, keep = active
        self._cancelled.add(run_id)
        if sandbox is not None:
            await self._stop_call(sandbox, keep=keep)
        else:
            await asyncio.to_thread(self._runtime.kill, container_id)
        return True

    @staticmethod
    def _quiet_refills(boxes: Sandboxes) -> contextlib.AbstractContextManager[None]:
        return boxes.pool.running() if boxes.pool is not None else contextlib.nullcontext()

    async def _stop_call(self, sandbox: Sandbox, *, keep: bool) -> None:
        """Ends a call in a long-lived container now. A pool container is
        removed (it would be anyway). A session's container stays, and only
        the call's processes go; but a sweep runs as the sandbox uid, which
        the call's own code can stop (SIGSTOP) or outrun, so a sweep that
        does not finish in time removes the container: the session is lost
        (its call says so), never left with something of the call in it."""
        assert self._sandboxes is not None
        if keep:
            with contextlib.suppress(Exception):
                if await asyncio.to_thread(self._sandboxes.sweeper.sweep, sandbox, SWEEP_TIMEOUT_S) == 0:
                    return
            log.warning("the sweep in sandbox %s did not finish; removing its container", sandbox.sandbox_id)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._runtime.remove, sandbox.container_id)

    # -- warm pool and sessions ----------------------------------------------

    async def _run_pooled(
        self, boxes: Sandboxes, pool: WarmPool, spec: RunSpec, emit: Emit, files: RunFiles
    ) -> RunResult:
        """An ephemeral call: a claimed warm container, removed after the
        call; on a miss, the one-shot cold path (or, for a call with files,
        a container made for it)."""
        limits = clamp(spec, self._ceilings)
        claim = await pool.claim(ContainerClass.of(spec.image, spec.runtime, limits), spec.image_digest)
        if claim.sandbox is None:
            if files.active:
                result = await self._run_on_demand(boxes, spec, emit, files)
            else:
                result = await self._run(spec, emit)
            return replace(result, sandbox=replace(result.sandbox, claim_ms=claim.claim_ms))
        with pool.running():
            result, _ = await self._exec(spec, limits, claim.sandbox, emit, keep=False, files=files)
        use = SandboxUse("ephemeral", claim.sandbox.container_id, pool_hit=True, claim_ms=claim.claim_ms)
        return replace(result, sandbox=use)

    async def _run_on_demand(self, boxes: Sandboxes, spec: RunSpec, emit: Emit, files: RunFiles) -> RunResult:
        """An ephemeral call with files and no pool container for it (a miss,
        gVisor, egress, or no pool): a keeper container made for this call,
        with a lifetime that just covers it, removed after it."""
        assert boxes.factory is not None
        factory = boxes.factory
        limits = clamp(spec, self._ceilings)
        run = _Run(spec, limits, t0=time.monotonic())
        address = ""
        if spec.network_mode == "egress":
            assert self._egress is not None  # refuse_if_unsafe checked it
            try:
                address = self._egress.reserve()
            except RunRefused as exc:
                self._metrics.refused.labels(exc.code).inc()
                raise
        transfers_s = 2 * self._transfer.timeout_s
        lifetime_ms = limits.timeout_ms + round((RUN_GRACE_S + transfers_s) * 1000)
        cls = ContainerClass.of(spec.image, spec.runtime, limits)
        starting = asyncio.ensure_future(
            asyncio.to_thread(
                factory.start,
                cls,
                "call",
                egress_address=address,
                lifetime_ms=lifetime_ms,
                image_id=spec.image_digest,
            )
        )
        try:
            sandbox = await asyncio.shield(starting)
        except asyncio.CancelledError:
            self._spawn_cleanup(self._discard_call(factory, starting, address))
            raise
        except ImageNotFound as exc:
            self._release(address)
            self._metrics.refused.labels("image_missing").inc()
            raise RunRefused("image_missing", f"image {spec.image!r} is not present; it is never pulled") from exc
        except (DockerException, RequestException, RuntimeError) as exc:
            self._release(address)
            log.warning("run %s (tool %r): cannot start its sandbox: %s", spec.run_id, spec.tool, exc)
            return self._failed(run, "docker_error")
        try:
            result, _ = await self._exec(spec, limits, sandbox, emit, keep=False, files=files)
        finally:
            # The container holds its address until it is gone.
            cleanup = self._spawn_cleanup(self._discard_call(factory, starting, address))
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(cleanup), RUN_GRACE_S)
        return replace(result, sandbox=SandboxUse("ephemeral", sandbox.container_id))

    def _spawn_cleanup(self, work: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    def _release(self, address: str) -> None:
        if address and self._egress is not None:
            self._egress.release(address)

    async def _discard_call(self, factory: CallFactory, starting: asyncio.Future[Sandbox], address: str) -> None:
        """Removes a call's own container once its start ended, then frees its address."""
        try:
            sandbox = await starting
        except Exception:  # noqa: BLE001 - the start removed what it made
            self._release(address)
            return
        with contextlib.suppress(Exception):
            await asyncio.to_thread(factory.remove, sandbox.container_id)
        self._release(address)

    async def _run_in_session(
        self, boxes: Sandboxes, sessions: SessionTable, spec: RunSpec, emit: Emit, files: RunFiles
    ) -> RunResult:
        """A session call: the session's container (started or claimed for
        the first call), one call at a time; the container stays."""
        limits = clamp(spec, self._ceilings)
        network: tuple[str, ...] = ()
        if spec.network_mode == "egress":
            network = ("egress", *spec.egress_allowlist, "|", *spec.egress_allow_cidrs)
        plan = spec.sandbox
        desktop = f"{plan.desktop_width}x{plan.desktop_height}" if plan.desktop else ""
        cls = ContainerClass.of(spec.image, spec.runtime, limits, desktop)
        key = SessionKey(spec.principal, spec.session_id, cls, network)
        idle_ms = min(spec.sandbox.idle_ttl_ms or boxes.idle_ttl_ms, boxes.max_idle_ttl_ms)
        life_ms = min(spec.sandbox.max_lifetime_ms or boxes.max_lifetime_ms, boxes.max_max_lifetime_ms)
        while True:
            try:
                acquired = await sessions.acquire(key, idle_ms / 1000, life_ms / 1000, spec.image_digest)
            except RunRefused as exc:
                self._metrics.refused.labels(exc.code).inc()
                raise
            session = acquired.session
            result: RunResult | None = None
            swept = True
            try:
                async with session.lock:
                    # Ended while this call waited (EndSession, an error):
                    # start over with a new sandbox.
                    if not session.ended:
                        try:
                            async with self._slots:
                                # Ended again while this call waited for a
                                # slot: its address may be another
                                # sandbox's by now (a desktop's egress is
                                # found by address). No await from here to
                                # the grant's opening.
                                if not session.ended:
                                    with self._quiet_refills(boxes):
                                        result, swept = await self._exec(
                                            spec, limits, session.sandbox, emit, keep=True, files=files
                                        )
                        except asyncio.CancelledError:
                            # Abandoned mid-call (the gateway gave up): whether
                            # its processes are gone is unknown, so the
                            # session ends before anyone else holds its lock.
                            ending = asyncio.ensure_future(sessions.end(session, "error"))
                            self._cleanups.add(ending)
                            ending.add_done_callback(self._cleanups.discard)
                            with contextlib.suppress(asyncio.CancelledError):
                                await asyncio.shield(ending)
                            raise
            finally:
                sessions.release(session, ran=result is not None)
            if result is not None:
                break
        if not swept or result.error.startswith("sandbox_lost"):
            # Something of the call may still run, or the container is gone:
            # the session ends, and its next call starts a new sandbox.
            await sessions.end(session, "error")
        use = SandboxUse(
            "session",
            session.sandbox.container_id,
            session.sandbox_id,
            pool_hit=acquired.pool_hit,
            claim_ms=acquired.claim_ms,
            session_started=acquired.started,
            session_calls=session.calls,
        )
        return replace(result, sandbox=use)

    async def _exec(
        self,
        spec: RunSpec,
        limits: EffectiveLimits,
        sandbox: Sandbox,
        emit: Emit,
        *,
        keep: bool,
        files: RunFiles = NO_FILES,
    ) -> tuple[RunResult, bool]:
        """One call as a ``docker exec`` in a long-lived container. With
        ``keep`` (a session's) the call's processes are swept afterwards,
        and the second value says whether the sweep worked; otherwise the
        container is removed."""
        cleanup: asyncio.Future[bool] | None = None
        try:
            result = await self._exec_bounded(spec, limits, sandbox, emit, keep=keep, files=files)
        finally:
            cleanup = self._exec_cleanups.pop(spec.run_id, None)
        swept = True
        if cleanup is not None and cleanup.done() and not cleanup.cancelled() and cleanup.exception() is None:
            swept = cleanup.result()
        elif cleanup is not None:
            swept = False
        return result, swept

    async def _exec_bounded(
        self,
        spec: RunSpec,
        limits: EffectiveLimits,
        sandbox: Sandbox,
        emit: Emit,
        *,
        keep: bool,
        files: RunFiles,
    ) -> RunResult:
        assert self._sandboxes is not None
        run = _Run(spec, limits, t0=time.monotonic(), container_id=sandbox.container_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.timeout_ms / 1000 + RUN_GRACE_S
        if files.active:
            # Copying in and collecting have bounds of their own.
            deadline += 2 * self._transfer.timeout_s
        env = self._exec_env(run, sandbox)
        # A call whose /outputs is collected is stopped by a sweep, never by
        # removing its container (which would lose them).
        self._active[spec.run_id] = (sandbox.container_id, sandbox, keep or files.limits.max_outputs > 0)
        outer = asyncio.timeout_at(deadline)
        try:
            async with outer:
                return await self._exec_lifecycle(run, sandbox, env, emit, deadline, keep=keep, files=files)
        except TimeoutError:
            if not outer.expired():
                raise
            log.error(  # noqa: TRY400 - a deadline, not an exception, is the news
                "run %s (tool %r) did not end within its deadline in sandbox %s",
                spec.run_id, spec.tool, sandbox.sandbox_id,
            )  # fmt: skip
            return self._failed(run, "deadline_exceeded")
        except (DockerException, RequestException) as exc:
            alive = await self._alive(sandbox.container_id)
            log.warning("run %s (tool %r) in sandbox %s failed: %s", spec.run_id, spec.tool, sandbox.sandbox_id, exc)
            return self._failed(run, "docker_error" if alive else "sandbox_lost")
        finally:
            cleanup = asyncio.ensure_future(self._after_exec(sandbox, run.grant, keep=keep, clear=files.active))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            if keep:
                # A session's next call must not start while this one's
                # processes may still run: the caller waits for the check
                # (and the sweep, when one is needed). A pool container's
                # removal is not the caller's to wait for.
                self._exec_cleanups[spec.run_id] = cleanup
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(cleanup), SWEEP_TIMEOUT_S + RUN_GRACE_S)
            self._active.pop(spec.run_id, None)
            self._cancelled.discard(spec.run_id)
            if run.counted:
                self._metrics.running.dec()

    def _exec_env(self, run: _Run, sandbox: Sandbox) -> dict[str, str]:
        """An exec's environment: the registry's, then the display (a
        desktop's) and the egress grant's proxy, trust and placeholders,
        which a registry env cannot override."""
        spec = run.spec
        env = dict(spec.env)
        if sandbox.cls.desktop:
            env["DISPLAY"] = DESKTOP_DISPLAY
        if spec.network_mode == "egress":
            assert self._egress is not None  # refuse_if_unsafe checked it
            try:
                run.grant, attachment = self._egress.open_call(
                    spec.run_id,
                    spec.tool,
                    spec.egress_allowlist,
                    spec.egress_allow_cidrs,
                    address=sandbox.egress_address,
                    http=http_plan(spec),
                )
            except RunRefused as exc:  # a secret no store holds, a desktop's running call
                self._metrics.refused.labels(exc.code).inc()
                raise
            if not sandbox.cls.desktop:
                env.update(attachment.env)
            # (A desktop's browser has no credential: the proxy finds this
            # call's grant by the sandbox's address while the call runs.)
        return env

    async def _exec_lifecycle(
        self,
        run: _Run,
        sandbox: Sandbox,
        env: dict[str, str],
        emit: Emit,
        deadline: float,
        *,
        keep: bool,
        files: RunFiles,
    ) -> RunResult:
        assert self._sandboxes is not None
        rt = self._sandboxes.runtime
        spec, limits = run.spec, run.limits
        loop = asyncio.get_running_loop()
        capture = OutputCapture(limits.output_bytes)
        cid = sandbox.container_id
        collects = files.limits.max_outputs > 0
        if files.active and not await self._prepare(run, sandbox, files, keep=keep):
            return self._failed(run, "inputs_failed")
        oom_before = await asyncio.to_thread(rt.oom_kills, cid)
        argv = exec_argv(deadline_entrypoint(limits), spec.argv)
        exec_id = await asyncio.to_thread(rt.exec_create, cid, argv, self._cfg.user, env, WORKDIR)
        stream = await asyncio.to_thread(rt.exec_start, exec_id)
        started = time.monotonic()
        run.start_ms = round((started - run.t0) * 1000)
        self._metrics.start_seconds.labels(spec.runtime).observe(started - run.t0)
        self._metrics.running.inc()
        run.counted = True
        await emit(cid)

        async def kill() -> None:
            await self._stop_call(sandbox, keep=keep or collects)

        timed_out = await self._pump(stream, capture, emit, limits.timeout_ms / 1000, kill)
        exit_code = await asyncio.to_thread(rt.exec_exit_code, exec_id, max(deadline - loop.time(), 0.1))
        stopped = timed_out or spec.run_id in self._cancelled
        if stopped and exit_code is None and not await self._alive(cid):
            # Killed with its container (a pool container, or a session's
            # whose sweep did not finish): what a SIGKILL reports.
            exit_code = SIGKILL_EXIT
        ended = time.monotonic()
        oom_after = await asyncio.to_thread(rt.oom_kills, cid)
        used = await self._egress.close_call(run.grant) if run.grant is not None and self._egress else None
        for chunk in capture.finish():
            await emit(chunk)
        if exit_code is None:
            return self._failed(run, "deadline_exceeded" if await self._alive(cid) else "sandbox_lost")
        if not stopped and exit_code == SIGKILL_EXIT and not await self._alive(cid):
            return self._failed(run, "sandbox_lost")
        if (
            exit_code == RUNSC_EXEC_FAILED
            and sandbox.cls.runtime == "runsc"
            and await self._runsc_failed(sandbox, capture)
        ):
            # What the call's processes do now is unknown: a session ends
            # on this error, and a pool or per-call container goes anyway.
            return self._failed(run, "sandbox_lost")
        oom = oom_before is not None and oom_after is not None and oom_after > oom_before
        result = self._finished(
            run, capture, exit_code, oom=oom, timed_out=timed_out, started=started, ended=ended, used=used
        )
        if collects:
            result = replace(result, skipped_outputs=await self._collect(run, sandbox, files, emit))
        return result

    async def _prepare(self, run: _Run, sandbox: Sandbox, files: RunFiles, *, keep: bool) -> bool:
        """Before the program: a session's /outputs emptied of what earlier
        calls left, and the inputs copied in. False when that failed."""
        assert self._sandboxes is not None
        rt, cid, timeout_s = self._sandboxes.runtime, sandbox.container_id, self._transfer.timeout_s
        try:
            if keep and files.limits.max_outputs > 0:
                await asyncio.to_thread(run_quiet, rt, cid, CLEAR_OUTPUTS_ARGV, self._cfg.user, timeout_s)
            if files.inputs:
                await asyncio.to_thread(copy_in, rt, cid, self._cfg.keeper_user, files.inputs, timeout_s)
        except (TransferError, OSError) as exc:
            log.warning("run %s (tool %r) in sandbox %s: %s", run.spec.run_id, run.spec.tool, sandbox.sandbox_id, exc)
            return False
        self._metrics.input_files.inc(len(files.inputs))
        self._metrics.input_bytes.inc(sum(len(f.content) for f in files.inputs))
        return True

    async def _collect(self, run: _Run, sandbox: Sandbox, files: RunFiles, emit: Emit) -> tuple[SkippedOutput, ...]:
        """After the program: once nothing of the call runs (so nothing can
        change /outputs under the collection), its files, sent through emit
        before the result."""
        assert self._sandboxes is not None
        spec = run.spec
        try:
            quiet = await self._settle(sandbox)
        except Exception:  # noqa: BLE001 - not known to be quiet: nothing is collected
            quiet = False
        if not quiet:
            skips = Skips()
            skips.rest("collection_failed")
            collected = Collected(skipped=skips.result(), counts=skips.counts, problem="the call's processes remain")
        else:
            loop = asyncio.get_running_loop()
            timeout_s = self._transfer.timeout_s

            async def send(chunk: OutputFileChunk) -> None:
                await emit(chunk)

            def deliver(chunk: OutputFileChunk) -> None:
                try:
                    asyncio.run_coroutine_threadsafe(send(chunk), loop).result(timeout_s)
                except Exception as exc:  # noqa: BLE001 - whatever stopped the caller stops the collection
                    raise TransferError(f"the caller did not take an output file: {exc!r}") from None

            collected = await asyncio.to_thread(
                functools.partial(
                    collect,
                    self._sandboxes.runtime,
                    sandbox.container_id,
                    user=self._cfg.user,
                    limits=files.limits,
                    deliver=deliver,
                    timeout_s=timeout_s,
                )
            )
        self._metrics.output_files.inc(collected.files)
        self._metrics.output_bytes.inc(collected.size)
        for reason, count in collected.counts.items():
            self._metrics.skipped_outputs.labels(reason).inc(count)
        if collected.problem:
            log.warning("run %s (tool %r): collecting /outputs stopped: %s", spec.run_id, spec.tool, collected.problem)
        return collected.skipped

    async def _alive(self, container_id: str) -> bool:
        assert self._sandboxes is not None
        try:
            found = await asyncio.to_thread(self._sandboxes.runtime.inspect, container_id)
        except (DockerException, RequestException):
            return False
        return bool(found and (found.get("State") or {}).get("Running"))

    async def _runsc_failed(self, sandbox: Sandbox, capture: OutputCapture) -> bool:
        if sandbox.cls.runtime != "runsc":
            return False
        return bool(RUNSC_WAIT_FAILED.search(capture.stderr_tail)) or not await self._answers(sandbox)

    async def _answers(self, sandbox: Sandbox) -> bool:
        """Whether a gVisor sandbox still runs an exec (a count from inside
        as the keeper's uid, which the call cannot fake)."""
        assert self._sandboxes is not None
        try:
            return await asyncio.to_thread(self._sandboxes.sweeper.processes, sandbox) is not None
        except Exception:  # noqa: BLE001 - any failure means it does not
            return False

    async def _clear(self, sandbox: Sandbox) -> None:
        """Empties a session's /outputs (as the sandbox uid, which owns all of
        it) and /inputs (as the keeper); raises TransferError."""
        assert self._sandboxes is not None
        rt, cid, timeout_s = self._sandboxes.runtime, sandbox.container_id, self._transfer.timeout_s
        await asyncio.to_thread(run_quiet, rt, cid, CLEAR_OUTPUTS_ARGV, self._cfg.user, timeout_s)
        await asyncio.to_thread(run_quiet, rt, cid, CLEAR_INPUTS_ARGV, self._cfg.keeper_user, timeout_s)

    async def _settle(self, sandbox: Sandbox) -> bool:
        """After a session call: nothing of it runs any more. The exec's own
        prelude swept when the program ended, so normally only the keeper is
        left, which the pids cgroup shows at once (runc); otherwise (gVisor,
        a timeout, a wrapper the program killed) a sweep of its own."""
        assert self._sandboxes is not None
        sweeper = self._sandboxes.sweeper
        if await self._only_keeper(sandbox):
            return True
        if await asyncio.to_thread(sweeper.sweep, sandbox, SWEEP_TIMEOUT_S) != 0:
            return False
        # The sweep ran as the sandbox uid, which the call's code could
        # have tampered with (/proc/PID/mem of a same-uid process): only a
        # count it cannot touch says the sandbox is clean.
        return await self._only_keeper(sandbox, strict=True)

    async def _only_keeper(self, sandbox: Sandbox, *, strict: bool = False) -> bool:
        """Whether only the keeper's processes are left: the pids cgroup
        (runc; killed processes take a moment to be reaped), or with
        ``strict`` under gVisor a count from inside as the keeper's uid."""
        assert self._sandboxes is not None
        sweeper = self._sandboxes.sweeper
        if sandbox.cls.desktop:
            return await self._no_call_left(sandbox)
        for _ in range(SETTLE_POLLS):
            count = await asyncio.to_thread(sweeper.pids, sandbox)
            if count is None:
                break
            if count <= KEEPER_PIDS:
                return True
            await asyncio.sleep(SETTLE_POLL_S)
        else:
            return False
        if not strict:
            return False
        for _ in range(SETTLE_POLLS):
            count = await asyncio.to_thread(sweeper.processes, sandbox)
            if count is not None and count <= KEEPER_PIDS:
                return True
            await asyncio.sleep(SETTLE_POLL_S * 10)
        return False

    async def _no_call_left(self, sandbox: Sandbox) -> bool:
        """A desktop's check: no process of the sandbox uid is left (the
        keeper's display and browser, of the keeper uid, stay). Counted from
        inside as the keeper uid, under runc and gVisor alike; killed
        processes take a moment to be reaped. Raises when it cannot count."""
        assert self._sandboxes is not None
        for _ in range(DESKTOP_SETTLE_POLLS):
            if await asyncio.to_thread(self._sandboxes.sweeper.user_processes, sandbox) == 0:
                return True
            await asyncio.sleep(SETTLE_POLL_S * 4)
        return False

    async def _after_exec(self, sandbox: Sandbox, grant: CallGrant | None, *, keep: bool, clear: bool = False) -> bool:
        """Ends every process of the call (a sweep, or removing the
        container) and revokes its egress; never raises. With ``clear``, a
        session's /inputs and /outputs are emptied, so the next call sees
        only its own. False when a session's sweep or clearing failed."""
        assert self._sandboxes is not None
        ok = True
        # Egress ends with the call, before the sweep (seconds, at worst):
        # a desktop's browser, which outlives every call, must not keep it.
        if grant is not None and self._egress is not None and not grant.closed:
            with contextlib.suppress(Exception):
                await self._egress.close_call(grant)
        if keep:
            try:
                ok = await self._settle(sandbox)
                if ok and clear:
                    await self._clear(sandbox)
            except Exception:  # noqa: BLE001 - the session is ended by the caller
                ok = False
            if not ok:
                log.warning("the sweep after a call in sandbox %s failed", sandbox.sandbox_id)
        else:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._runtime.remove, sandbox.container_id)
        return ok

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
                    spec.run_id, spec.tool, spec.egress_allowlist, spec.egress_allow_cidrs, http=http_plan(spec)
                )
            except RunRefused as exc:  # no free address, a secret no store holds
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
            sandbox=SandboxUse("ephemeral", run.container_id),
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
            self._active[spec.run_id] = (run.container_id, None, False)
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

    async def _lifecycle(self, run: _Run, emit: Emit, deadline: float) -> RunResult:
        spec, limits = run.spec, run.limits
        capture = OutputCapture(limits.output_bytes)
        loop = asyncio.get_running_loop()
        stream = await self._create_and_attach(run)
        started = time.monotonic()
        run.start_ms = round((started - run.t0) * 1000)
        self._metrics.start_seconds.labels(spec.runtime).observe(started - run.t0)
        await emit(run.container_id)

        async def kill() -> None:
            await asyncio.to_thread(self._runtime.kill, run.container_id)

        timed_out = await self._pump(stream, capture, emit, limits.timeout_ms / 1000, kill)
        exit_code, oom = await asyncio.to_thread(self._runtime.wait, run.container_id, deadline - loop.time())
        ended = time.monotonic()
        # The sandbox is gone: revoke its credential, close what it left open.
        used = await self._egress.close_call(run.grant) if run.grant is not None and self._egress else None
        for chunk in capture.finish():
            await emit(chunk)
        return self._finished(
            run, capture, exit_code, oom=oom, timed_out=timed_out, started=started, ended=ended, used=used
        )

    async def _pump(
        self,
        stream: Iterator[tuple[bytes | None, bytes | None]],
        capture: OutputCapture,
        emit: Emit,
        timeout_s: float,
        kill: Callable[[], Awaitable[None]],
    ) -> bool:
        """Forwards the output's head as it comes until the stream ends;
        at the timeout, kill() and drain. Returns whether it timed out."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

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

        async def forward() -> None:
            while (item := await queue.get()) is not _SENTINEL:
                assert isinstance(item, Chunk)
                await emit(item)

        pump_task = loop.run_in_executor(self._pumps, pump, stream)
        forward_task = asyncio.ensure_future(forward())
        timed_out = False
        try:
            try:
                await asyncio.wait_for(asyncio.shield(pump_task), timeout_s)
            except TimeoutError:
                timed_out = True
                await kill()
                await _drain(pump_task, stream)
            await forward_task
        finally:
            _stop_pumping(pump_task, forward_task, stream)
        return timed_out

    def _finished(
        self,
        run: _Run,
        capture: OutputCapture,
        exit_code: int,
        *,
        oom: bool,
        timed_out: bool,
        started: float,
        ended: float,
        used: EgressUse | None,
    ) -> RunResult:
        spec, limits = run.spec, run.limits
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
            sandbox=SandboxUse("ephemeral", run.container_id),
        )

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


def _close_stream(stream: object) -> None:
    """Wakes a pump's blocked read (docker-py reads an exec's output without
    a timeout): whatever still holds the output open is not waited for."""
    close = getattr(stream, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


def _stop_pumping(pump_task: asyncio.Future[None], forward_task: asyncio.Future[None], stream: object) -> None:
    if not pump_task.done():
        _close_stream(stream)
    if not forward_task.done():
        forward_task.cancel()


async def _drain(pump_task: asyncio.Future[None], stream: object) -> None:
    """After a timeout's kill: the rest of the output, for a moment at most."""
    try:
        await asyncio.wait_for(asyncio.shield(pump_task), DRAIN_AFTER_KILL_S)
    except TimeoutError:
        _close_stream(stream)
        with contextlib.suppress(Exception):
            await pump_task


def http_plan(spec: RunSpec) -> HttpPlan:
    """The run's inspection obligations, as the egress proxy takes them."""
    return HttpPlan(spec.egress_inspect, spec.egress_http_rules, spec.egress_secrets)
