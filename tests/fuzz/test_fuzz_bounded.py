"""Runs each atheris target for a bounded time, as CI does on every run
(AIRLOCK_FUZZ_SECONDS, default 20 per target). Longer runs on demand:
``scripts/fuzz --seconds 600``. A finding fails the test with atheris's
report and leaves the crashing input in the test's temporary folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("AIRLOCK_FUZZ_SECONDS", "20"))


@pytest.mark.parametrize("target", ["arguments", "proxy_head"])
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / target, corpus)
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / f"fuzz_{target}.py"),
            str(corpus),
            f"-max_total_time={SECONDS}",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = [line for line in proc.stderr.splitlines() if line.startswith("Done ")]
    print(target, runs[-1] if runs else proc.stderr[-300:])
