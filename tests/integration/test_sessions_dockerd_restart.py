"""A Docker engine restarted under a live session (issue 12): the session
is reported ended (cause error), the next call starts a new sandbox, and
nothing hangs.

This restarts the machine's dockerd, which ends every container on it, so
it is marked ``disruptive``: scripts/test runs it after everything else,
in a pytest run of its own. The engine is started again the way
scripts/bootstrap starts it (its own session, the same command line)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_sessions import Executor, Watch, _start, run, sandboxes, sid

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]


def _dockerd_pid() -> int:
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 1, f"expected one dockerd, found {out}"
    return int(out[0])


def _docker_up(timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def _restart_dockerd() -> None:
    pid = _dockerd_pid()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.2)
    with open("/var/log/airlock-dockerd.log", "ab") as log:  # noqa: PTH123 - an append-only log handle
        subprocess.run(["setsid", "-f", *[a.decode() for a in argv]], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                       check=True)  # fmt: skip
    assert _docker_up(60), "dockerd did not come back"


@pytest.fixture
def ex(tmp_path: Path) -> Executor:
    return _start(tmp_path / "restart", None)


def test_a_session_survives_nothing_of_a_dockerd_restart_and_nothing_hangs(ex: Executor) -> None:
    watch = Watch(ex)
    try:
        s = sid()
        first = run(ex, "open('/work/f', 'w').write('x'); print('wrote')", session=s)
        assert first.out == "wrote\n"
        _restart_dockerd()
        started = time.monotonic()
        second = run(ex, "import os; print(os.path.exists('/work/f'))", session=s)
        assert time.monotonic() - started < 60
        assert second.out == "False\n", second.err
        assert second.sandbox.session_started
        assert second.sandbox.sandbox_id != first.sandbox.sandbox_id
        assert watch.ended(first.sandbox.sandbox_id) == "error"
        assert [i.sandbox_id for i in sandboxes(ex, "p1")] == [second.sandbox.sandbox_id]
    finally:
        watch.close()
        ex.proc.terminate()
        ex.proc.wait(30)
