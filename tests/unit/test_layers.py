"""The import contracts (pyproject.toml [tool.importlinter]) hold, and they
are not decoration: a deliberately wrong import in a copy of the package
makes `lint-imports` fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(root: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT, "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_contracts_hold() -> None:
    proc = _lint(REPO, REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("gateway/_core.py", "import airlock.executor._runner", "Layers"),
        ("common/_config.py", "import airlock.gateway", "Layers"),
        ("gateway/_input.py", "import grpc", "Decision logic never imports grpc"),
        ("agent/_loop.py", "import docker", "The agent package needs only"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    copy = tmp_path / "src"
    shutil.copytree(REPO / "airlock", copy / "airlock", ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "airlock" / module
    target.write_text(target.read_text() + f"\n{line}  # deliberately wrong\n")
    proc = _lint(copy, tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert f"{contract}" in proc.stdout
    assert "BROKEN" in proc.stdout
