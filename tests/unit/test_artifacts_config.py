"""gateway.yaml's ``artifacts:`` section: typed, defaults named, unknown
keys and inconsistent settings refused with the file and key named, paths
resolved against the config file, and the S3 credentials file held to the
gateway's secret-file rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from airlock.common import ConfigError
from airlock.common._secrets import SecretFileError
from airlock.gateway._config import (
    DEFAULT_ARTIFACT_MAX_BYTES,
    DEFAULT_ARTIFACT_RETENTION_SECONDS,
    load_gateway_config,
)
from airlock.gateway.artifacts import LocalStore, open_store
from airlock.gateway.artifacts._runtime import _credentials

DATA = Path(__file__).resolve().parents[1] / "data" / "configs"
BASE = """version: 1
registry: r.yaml
executor: {socket: /run/x.sock, token_file: /dev/null}
audit: {path: audit.jsonl}
agents: [{id: a, token_sha256: "0000000000000000000000000000000000000000000000000000000000000000"}]
"""


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + extra)
    return path


def test_no_section_means_no_store(tmp_path: Path) -> None:
    assert load_gateway_config(write(tmp_path, "")).artifacts is None


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_gateway_config(write(tmp_path, "artifacts: {}\n")).artifacts
    assert cfg is not None
    assert cfg.backend == "local"
    assert cfg.path == str(tmp_path / "artifacts")
    assert cfg.quota.max_artifact_bytes == DEFAULT_ARTIFACT_MAX_BYTES
    assert cfg.retention_seconds == DEFAULT_ARTIFACT_RETENTION_SECONDS
    store = open_store(cfg)
    assert isinstance(store, LocalStore)
    assert (tmp_path / "artifacts").stat().st_mode & 0o777 == 0o700


def test_s3_section_resolves_its_credentials_file(tmp_path: Path) -> None:
    cfg = load_gateway_config(
        write(
            tmp_path,
            "artifacts:\n  backend: s3\n  s3: {endpoint_url: 'https://s3.example.com', bucket: b, "
            "credentials_file: creds.yaml}\n  retention_seconds: null\n",
        )
    ).artifacts
    assert cfg is not None
    assert cfg.s3 is not None
    assert cfg.s3.credentials_file == str(tmp_path / "creds.yaml")
    assert cfg.retention_seconds is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("artifacts: {quota: {max_bytes: 0}}\n", "artifacts.quota.max_bytes must be >= 1"),
        ("artifacts: {retention_seconds: 0}\n", "artifacts.retention_seconds must be >= 1"),
        ("artifacts: {backend: gcs}\n", "artifacts.backend: expected 'local' or 's3'"),
        ("artifacts: {sweep: 1}\n", "artifacts.sweep: unknown key"),
        (
            "artifacts: {s3: {endpoint_url: 'https://x', bucket: b, credentials_file: c}}\n",
            "artifacts.s3 is required for backend s3 and only for it",
        ),
    ],
)
def test_bad_sections_are_refused(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_gateway_config(write(tmp_path, extra))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gateway_artifacts_unknown_key.yaml", "artifacts.quota.max_byte: unknown key; expected one of:"),
        ("gateway_artifacts_s3_missing.yaml", "artifacts.s3 is required for backend s3"),
        ("gateway_artifacts_s3_plain_http.yaml", "plain http only on a loopback address"),
    ],
)
def test_check_names_the_file_and_key(name: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airlock.gateway", "check", "--config", str(DATA / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert name in proc.stderr
    assert message in proc.stderr


def test_the_credentials_file_is_a_secret_file(tmp_path: Path) -> None:
    creds = tmp_path / "creds.yaml"
    creds.write_text("access_key_id: k\nsecret_access_key: s\n")
    creds.chmod(0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        _credentials(str(creds))
    creds.chmod(0o600)
    assert _credentials(str(creds)) == {"access_key_id": "k", "secret_access_key": "s"}
    creds.write_text("access_key_id: k\nsecret_access_key: s\nsession_token: t\n")
    with pytest.raises(ConfigError, match="unknown key"):
        _credentials(str(creds))
