"""The offline `check` commands on the deliberately broken files in
tests/data/configs: each fails with status 2 and a message that names the
file, the key and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "configs"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "file", "needle"),
    [
        (
            ["airlock.gateway", "check", "--config"],
            "gateway_unknown_key.yaml",
            "opa.timout_ms: unknown key; expected one of:",
        ),
        (["airlock.gateway", "check", "--config"], "gateway_no_version.yaml", "version: expected 1, got None"),
        (["airlock.gateway", "check", "--registry"], "registry_bad_memory.yaml", "expected a size like 256Mi"),
        (
            ["airlock.gateway", "check", "--registry"],
            "registry_placeholder_not_required.yaml",
            "tools.python: argv placeholder {code} must be a required parameter",
        ),
        (
            ["airlock.gateway", "check", "--registry"],
            "registry_egress_http_bad_header.yaml",
            "tools.github_api.egress_http.api.github.com.secrets[0]: header: 'Host' is a hop-by-hop or framing header",
        ),
        (
            ["airlock.executor", "check", "--config"],
            "executor_tcp_without_tls.yaml",
            "listen needs tls with client_ca_file",
        ),
    ],
)
def test_check_names_file_key_and_expectation(argv: list[str], file: str, needle: str) -> None:
    path = DATA / file
    proc = subprocess.run(
        [sys.executable, "-m", *argv, str(path)], capture_output=True, text=True, cwd=REPO, timeout=60, check=False
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(path) in proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_check_accepts_the_shipped_registry() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airlock.gateway", "check", "--registry", str(REPO / "deploy" / "tool_registry.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_airlock_check_reports_a_bad_registry(capsys: pytest.CaptureFixture[str]) -> None:
    """`airlock check` (registry and policies together) fails on the same
    error, naming file and key."""
    from airlock.cli._main import main  # noqa: PLC0415 - the CLI only for this test

    path = DATA / "registry_egress_http_bad_header.yaml"
    assert main(["check", "--registry", str(path), "--policies", str(REPO / "policies")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: tools.github_api.egress_http.api.github.com.secrets[0]: header:" in err
