"""The reaper: a small process of its own that removes this executor's
sandboxes once their deadline has passed, whatever the executor is doing.

Each sandbox already ends on time by itself (the deadline wrapper, PID 1 of
the container; see airlock/executor/_options.py). The reaper covers what the wrapper
cannot: under gVisor the sandboxed code can stop its PID 1 with SIGSTOP, and
under runc a same-uid process can rewrite PID 1's memory through
/proc/1/mem. Neither can stop a process outside the sandbox.

The executor starts it (``python -m airlock.executor reap``) in a session of its own,
so a SIGKILL of the executor, or of the executor's process group, leaves it
running. Every POLL_S it lists the executor's containers (by instance label)
and force-removes each one whose REAP_AT_LABEL time has passed; once the
executor is gone it also removes stopped ones, and it exits when none is
left (or when told to with SIGTERM, as the executor does after a clean
shutdown). No grpc here.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Protocol

from airlock.executor._docker import Managed

log = logging.getLogger("airlock.executor.reaper")

POLL_S = 1.0
#: With the executor gone, how long the reaper keeps retrying an
#: unreachable Docker engine before it gives up.
ORPHAN_DOCKER_PATIENCE_S = 300.0


class ReaperRuntime(Protocol):
    def managed(self, instance: str) -> list[Managed]: ...
    def remove(self, container_id: str) -> None: ...


def sweep(
    runtime: ReaperRuntime, instance: str, *, now: float, executor_alive: bool, generation: str = ""
) -> tuple[int, int]:
    """One pass: removes what is due. Returns (removed, left)."""
    removed = 0
    found = runtime.managed(instance)
    for c in found:
        overdue = c.reap_at is not None and now >= c.reap_at
        # A stopped container is the executor's to collect while it lives.
        # Once it is gone, so are its pool and session containers (nobody
        # will ever run a call in them), but only those of this executor's
        # start: a restarted executor on the same socket has the same
        # instance and makes containers of its own.
        mine_and_idle = bool(generation) and c.generation == generation and c.kind in ("pool", "session", "call")
        orphaned = not executor_alive and (not c.running or mine_and_idle)
        if overdue or orphaned:
            if overdue and c.running:
                log.warning("sandbox %s is past its deadline; removing it", c.container_id[:12])
            runtime.remove(c.container_id)
            removed += 1
    return removed, len(found) - removed


def reap(
    runtime: ReaperRuntime,
    instance: str,
    parent: int,
    stop: threading.Event,
    *,
    poll_s: float = POLL_S,
    generation: str = "",
) -> None:
    """Sweeps every poll_s until ``stop`` is set, or until the executor
    (``parent``) is gone and none of its containers is left."""
    unreachable_since: float | None = None
    while not stop.is_set():
        alive = os.getppid() == parent
        try:
            _, left = sweep(runtime, instance, now=time.time(), executor_alive=alive, generation=generation)
            unreachable_since = None
        except Exception as exc:  # noqa: BLE001 - Docker errors of any kind: retry next poll
            log.warning("reaper: cannot list or remove containers: %s", exc)
            left = -1
            unreachable_since = unreachable_since or time.monotonic()
            if not alive and time.monotonic() - unreachable_since > ORPHAN_DOCKER_PATIENCE_S:
                log.error(  # noqa: TRY400 - the warnings above carry the causes
                    "reaper: the executor is gone and Docker has been unreachable for 5 minutes; exiting"
                )
                return
        if not alive and left == 0:
            return
        stop.wait(poll_s)


def spawn(docker_url: str, instance: str, generation: str = "") -> subprocess.Popen[bytes]:
    """Starts the reaper for this executor, in its own session."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable, "-m", "airlock.executor", "reap",
            "--docker-url", docker_url, "--instance", instance, "--parent", str(os.getpid()),
            "--generation", generation,
        ],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def main(argv: list[str]) -> int:
    from airlock.executor._docker import DockerRuntime  # noqa: PLC0415 - the daemon's import stays lean

    parser = argparse.ArgumentParser(prog="python -m airlock.executor reap")
    parser.add_argument("--docker-url", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--parent", required=True, type=int)
    parser.add_argument("--generation", default="")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C in the terminal of `airlock up` is for the stack, which stops
    # the executor, which stops the reaper.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime = DockerRuntime(args.docker_url, 1)
    try:
        reap(runtime, args.instance, args.parent, stop, generation=args.generation)
    finally:
        runtime.close()
    return 0
