"""Start ``airlock up`` in the background and wait for its stack.json: the
one way the tests, the benchmarks and the e2e checks run a stack (free
ports unless told otherwise)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from airlock.common.stackfile import StackFile, read_stack

FREE_PORTS = (
    "--gateway-listen", "127.0.0.1:0",
    "--opa-port", "0",
    "--gateway-metrics", "127.0.0.1:0",
    "--executor-metrics", "127.0.0.1:0",
)  # fmt: skip


class LaunchError(RuntimeError):
    """`airlock up` exited or did not come up in time; the message has its output."""


@dataclass
class RunningStack:
    home: Path
    info: StackFile
    proc: subprocess.Popen[bytes]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
        return stop(self.proc, sig, timeout)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
    """Stops `airlock up` like Ctrl-C (SIGINT) or SIGTERM would; returns its
    exit status and everything it printed."""
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out.decode() if out else ""


def launch(home: Path, *extra: str, ports: tuple[str, ...] = FREE_PORTS, timeout: float = 90) -> RunningStack:
    """Runs `python -m airlock.cli up` with AIRLOCK_HOME=home and waits for stack.json."""
    env = {**os.environ, "AIRLOCK_HOME": str(home)}
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "airlock.cli", "up", *ports, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    stack_file = home / "stack.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.communicate()[0].decode() if proc.stdout else ""  # and closes the pipe
            raise LaunchError(f"airlock up exited with {proc.returncode}:\n{out}")
        if stack_file.exists():
            return RunningStack(home, read_stack(stack_file), proc)
        time.sleep(0.1)
    proc.kill()
    out = proc.communicate()[0].decode() if proc.stdout else ""
    raise LaunchError(f"airlock up did not start within {timeout:.0f} s:\n{out}")
