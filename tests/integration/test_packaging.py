"""Airlock installs like a package (issue 11): a wheel built from the
checkout, installed into a fresh virtualenv in a temporary folder, runs
`airlock check` and an `airlock up` smoke call from outside the checkout
(the policies, registry and seccomp profile are package data); and
`airlock[agent]` alone installs only what the agent loop needs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, new_home

pytestmark = pytest.mark.integration
#: Python for the fresh virtualenvs: one the service users can run.
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def _run(argv: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env or dict(os.environ)
    )
    assert proc.returncode == 0, f"{argv}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)], cwd=out)
    (built,) = out.glob("airlock-*.whl")
    return built


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    """A folder outside the checkout that the service users can traverse."""
    folder = new_home("pkg")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _venv(folder: Path) -> Path:
    _run([PYTHON, "-m", "venv", str(folder)], cwd=folder.parent)
    return folder / "bin"


def test_the_wheel_carries_the_data_and_nothing_from_tests(wheel: Path) -> None:
    names = _run([sys.executable, "-m", "zipfile", "-l", str(wheel)], cwd=wheel.parent)
    for needed in (
        "airlock/policies/airlock/decision.rego",
        "airlock/policies/airlock/grants/data.yaml",
        "airlock/deploy/tool_registry.yaml",
        "airlock/deploy/seccomp/airlock.json",
        "airlock/gateway/_core.py",
        "airlock/v1/call_pb2.py",
        "airlock/py.typed",
    ):
        assert needed in names, needed
    assert "tests/" not in names
    assert "generate.py" not in names


def test_the_wheel_runs_check_and_a_stack_from_outside_the_checkout(wheel: Path, outside: Path) -> None:
    bin_dir = _venv(outside / "venv")
    # The locked dependencies (hashes checked), then the wheel itself.
    _run([str(bin_dir / "pip"), "install", "-q", "--require-hashes", "-r", str(REPO / "requirements.lock")], outside)
    _run([str(bin_dir / "pip"), "install", "-q", "--no-deps", str(wheel)], outside)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    airlock = str(bin_dir / "airlock")
    where = _run(
        [str(bin_dir / "python"), "-c", "import airlock.cli._paths as p; print(p.DEFAULT_POLICIES)"], outside, env=env
    )
    assert str(REPO) not in where, "the defaults come from the installed package, not the checkout"
    assert "site-packages/airlock/policies" in where
    checked = _run([airlock, "check"], outside, env=env)
    assert checked.startswith("ok: registry"), checked

    home = outside / "home"
    home.mkdir(mode=0o755)
    env["AIRLOCK_HOME"] = str(home)
    up = subprocess.Popen(
        [airlock, "up", "--gateway-listen", "127.0.0.1:0", "--opa-port", "0",
         "--gateway-metrics", "127.0.0.1:0", "--executor-metrics", "127.0.0.1:0"],
        cwd=outside, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (home / "stack.json").exists():
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            assert time.monotonic() < deadline, "airlock up did not start"
            time.sleep(0.2)
        called = subprocess.run(
            [airlock, "call", "python", '{"code": "print(6*7)"}'],
            cwd=outside, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert called.returncode == 0, called.stdout + called.stderr
        assert json.loads(called.stdout)["stdout"] == "42\n"
    finally:
        up.send_signal(signal.SIGTERM)
        printed, _ = up.communicate(timeout=60)
    assert up.returncode == 0, printed.decode()
    # The daemons ran from the installed package.
    stack_log = printed.decode()
    assert "stack is running" in stack_log


def test_the_agent_extra_installs_only_what_the_agent_needs(wheel: Path, outside: Path) -> None:
    bin_dir = _venv(outside / "agent-venv")
    _run([str(bin_dir / "pip"), "install", "-q", f"{wheel}[agent]"], outside)
    listed = _run([str(bin_dir / "pip"), "list", "--format=json"], outside)
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"openai", "grpcio", "protobuf"} <= installed
    assert installed.isdisjoint({"docker", "aiohttp", "jsonschema", "prometheus-client", "google-re2"}), installed
    imported = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "from airlock import agent; print(agent.GatewayClient.__name__, agent.run.__name__)",
        ],
        outside,
    )
    assert imported.strip() == "GatewayClient run"
