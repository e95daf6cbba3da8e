"""The README's front door, run as a user would: the two set-up commands are
what the README says, `bin/airlock up` on its default ports serves the
README's example call, and Ctrl-C stops all three daemons."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _quick_start_commands() -> list[str]:
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", README, re.DOTALL)
    assert block, "README has no quick-start sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_quick_start_is_two_commands_that_exist() -> None:
    up, test = _quick_start_commands()
    assert up == "bin/airlock up"
    assert test == "scripts/test"
    for cmd in (up, test):
        path = REPO / cmd.split()[0]
        assert path.is_file(), cmd
        assert os.access(path, os.X_OK), cmd


def _example_call() -> list[str]:
    match = re.search(r"^\$ (bin/airlock call python '(\{.*?\})')$", README, re.MULTILINE)
    assert match, "README has no example call"
    return ["bin/airlock", "call", "python", match.group(2)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


DEFAULT_PORTS = (50051, 9464, 9465, 8181)


def _ports_in_use() -> list[int]:
    busy = []
    for port in DEFAULT_PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(port)
    return busy


def _managed_containers() -> set[str]:
    client = docker.from_env()
    try:
        return {c.id for c in client.containers.list(all=True, filters={"label": "airlock.managed=true"})}
    finally:
        client.close()


def test_airlock_up_serves_the_readme_example_and_stops_on_ctrl_c() -> None:
    busy = _ports_in_use()
    if busy:
        pytest.fail(
            f"127.0.0.1 ports {busy} are in use: this test runs `bin/airlock up` on the README's default ports. "
            "Stop the stack you started (Ctrl-C in its terminal), then run scripts/test again."
        )
    # Containers some other stack left behind are not this stack's to clean up;
    # only the ones that appear while this stack runs must be gone after Ctrl-C.
    before = _managed_containers()
    # The README's default home as root is /var/lib/airlock; a fresh one here
    # keeps a developer's own stack state untouched.
    Path("/tmp/airlock-tests").mkdir(mode=0o711, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix="readme-", dir="/tmp/airlock-tests"))
    tmp_path.chmod(0o755)
    env = {**os.environ, "AIRLOCK_HOME": str(tmp_path)}
    up = subprocess.Popen(["bin/airlock", "up"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "stack.json").exists():
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            assert time.monotonic() < deadline, "airlock up did not start"
            time.sleep(0.1)
        stack = json.loads((tmp_path / "stack.json").read_text())
        assert stack["gateway"] == "127.0.0.1:50051"
        assert stack["metrics"]["gateway"] == "http://127.0.0.1:9464/metrics"
        call = subprocess.run(
            _example_call(), cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert call.returncode == 0, call.stdout + call.stderr
        out = json.loads(call.stdout)
        assert (out["decision"], out["stdout"], out["exit_code"]) == ("allow", "4\n", 0)
    finally:
        # What Ctrl-C in the terminal does.
        up.send_signal(signal.SIGINT)
        printed, _ = up.communicate(timeout=60)
    text = printed.decode()
    assert up.returncode == 0, text
    for needle in (
        "gateway    127.0.0.1:50051",
        "opa      http://127.0.0.1:8181/metrics",
        "users      separate users" if os.geteuid() == 0 else "users      ONE user",
        "http://127.0.0.1:9465/metrics",
        "audit log",
    ):
        assert needle in text
    assert "airlock up: stopped" in text
    for name, pid in stack["pids"].items():
        assert not _alive(pid), f"{name} still running"
    assert _managed_containers() - before == set()
