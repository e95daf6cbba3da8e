"""executor._reaper: what one sweep removes, and when the reaper stops, with
a fake runtime. tests/integration/test_executor_deadline.py SIGKILLs a real
executor and watches the reaper on real Docker."""

from __future__ import annotations

import os
import threading

import pytest

from airlock.executor._docker import Managed
from airlock.executor._reaper import reap, sweep

NOW = 1_000_000.0


class FakeRuntime:
    def __init__(self, *containers: Managed, fail: int = 0) -> None:
        self.containers = list(containers)
        self.removed: list[str] = []
        self.fail = fail  # this many managed() calls raise first

    def managed(self, instance: str) -> list[Managed]:
        assert instance == "inst"
        if self.fail:
            self.fail -= 1
            raise ConnectionError("docker is restarting")
        return list(self.containers)

    def remove(self, container_id: str) -> None:
        self.removed.append(container_id)
        self.containers = [c for c in self.containers if c.container_id != container_id]


RUNNING_DUE = Managed("due", running=True, reap_at=NOW - 1)
RUNNING_LATER = Managed("later", running=True, reap_at=NOW + 60)
STOPPED_LATER = Managed("stopped", running=False, reap_at=NOW + 60)
NO_LABEL = Managed("old", running=True, reap_at=None)


@pytest.mark.parametrize(
    ("alive", "removed", "left"),
    [
        # While the executor lives, only what is past its deadline is the reaper's.
        pytest.param(True, ["due"], 3, id="executor-alive"),
        # Once it is gone, stopped containers are collected too; running ones
        # wait for their deadline (their own wrapper normally ends them first).
        pytest.param(False, ["due", "stopped"], 2, id="executor-gone"),
    ],
)
def test_sweep(alive: bool, removed: list[str], left: int) -> None:
    runtime = FakeRuntime(RUNNING_DUE, RUNNING_LATER, STOPPED_LATER, NO_LABEL)
    assert sweep(runtime, "inst", now=NOW, executor_alive=alive) == (len(removed), left)
    assert runtime.removed == removed


def test_once_the_executor_is_gone_its_own_starts_pool_and_session_containers_go_at_once() -> None:
    """A pool or session container serves no one once its executor is gone;
    another start of the same executor (same instance, new generation) keeps
    its own, as do one-shot runs (their deadline wrapper ends them)."""
    mine = [
        Managed(f"{k}-mine", running=True, reap_at=NOW + 3600, kind=k, generation="g1") for k in ("pool", "session")
    ]
    theirs = Managed("pool-next-start", running=True, reap_at=NOW + 3600, kind="pool", generation="g2")
    run = Managed("one-shot", running=True, reap_at=NOW + 60)
    runtime = FakeRuntime(*mine, theirs, run)
    assert sweep(runtime, "inst", now=NOW, executor_alive=True, generation="g1") == (0, 4)
    assert sweep(runtime, "inst", now=NOW, executor_alive=False, generation="g1") == (2, 2)
    assert runtime.removed == ["pool-mine", "session-mine"]


def test_the_reaper_runs_while_its_executor_lives_and_exits_when_nothing_is_left() -> None:
    runtime = FakeRuntime(Managed("x", running=False, reap_at=None))
    stop = threading.Event()
    # Our own pid is not this reaper's parent: "the executor is gone" at once.
    reap(runtime, "inst", parent=os.getpid(), stop=stop, poll_s=0.01)
    assert runtime.removed == ["x"]


def test_the_reaper_keeps_going_while_its_executor_lives() -> None:
    runtime = FakeRuntime()
    stop = threading.Event()
    t = threading.Thread(target=reap, args=(runtime, "inst", os.getppid(), stop), kwargs={"poll_s": 0.01})
    t.start()
    t.join(0.3)
    assert t.is_alive()  # nothing to reap, but the executor (our parent) lives
    stop.set()
    t.join(5)
    assert not t.is_alive()


def test_docker_errors_are_retried() -> None:
    runtime = FakeRuntime(RUNNING_DUE, fail=2)
    reap(runtime, "inst", parent=os.getpid(), stop=threading.Event(), poll_s=0.01)
    assert runtime.removed == ["due"]
