"""gateway.yaml's ``budget:`` section: the store (memory or redis), the
``redis:`` block typed and checked, unknown keys refused with the file and
key named, the password file resolved against the config file and held to
the secret-file rules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from airlock.common import ConfigError
from airlock.common._secrets import SecretFileError
from airlock.gateway._budget import CallCounters
from airlock.gateway._budget_redis import RedisCounters
from airlock.gateway._config import (
    DEFAULT_BUDGET_REDIS_KEY_PREFIX,
    DEFAULT_BUDGET_REDIS_TIMEOUT_MS,
    DEFAULT_BUDGET_REDIS_USERNAME,
    load_gateway_config,
)
from airlock.gateway._main import _budget_store
from airlock.gateway._metrics import GatewayMetrics

DATA = Path(__file__).resolve().parents[1] / "data" / "configs"
BASE = """version: 1
registry: r.yaml
executor: {socket: /run/x.sock, token_file: /dev/null}
audit: {path: audit.jsonl}
agents: [{id: a, token_sha256: "0000000000000000000000000000000000000000000000000000000000000000"}]
"""
REDIS = "budget: {store: redis, redis: {url: 'unix:///run/redis/redis.sock', password_file: secrets/redis.password}}\n"


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + extra)
    return path


def test_the_default_is_the_in_memory_store(tmp_path: Path) -> None:
    budget = load_gateway_config(write(tmp_path, "")).budget
    assert (budget.store, budget.redis, budget.window_seconds) == ("memory", None, 3600)


def test_a_redis_store_with_defaults_and_the_password_file_resolved(tmp_path: Path) -> None:
    redis = load_gateway_config(write(tmp_path, REDIS)).budget.redis
    assert redis is not None
    assert redis.url == "unix:///run/redis/redis.sock"
    assert redis.password_file == str(tmp_path / "secrets" / "redis.password")
    assert redis.username == DEFAULT_BUDGET_REDIS_USERNAME == "airlock-gateway"
    assert redis.timeout_ms == DEFAULT_BUDGET_REDIS_TIMEOUT_MS == 50
    assert redis.key_prefix == DEFAULT_BUDGET_REDIS_KEY_PREFIX == "airlock:budget"


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("budget: {store: redis}\n", "budget", "budget.redis is required for store redis and only for it"),
        (
            "budget: {redis: {url: 'unix:///r.sock', password_file: p}}\n",
            "budget",
            "budget.redis is required for store redis and only for it",
        ),
        ("budget: {store: etcd}\n", "budget.store", "expected 'memory' or 'redis', got 'etcd'"),
        ("budget: {store: redis, redis: {url: 'unix:///r.sock'}}\n", "budget.redis.password_file", "required key"),
        (
            "budget: {store: redis, redis: {url: 'unix:///r.sock', password_file: p, timeout: 5}}\n",
            "budget.redis.timeout",
            "unknown key; expected one of:",
        ),
        (
            "budget: {store: redis, redis: {url: 'unix:///r.sock', password_file: p, timeout_ms: 0}}\n",
            "budget.redis",
            "budget.redis.timeout_ms must be > 0, got 0",
        ),
        (
            "budget: {store: redis, redis: {url: 'unix:///r.sock', password_file: p, timeout_ms: 50ms}}\n",
            "budget.redis.timeout_ms",
            "expected an integer",
        ),
        (
            "budget: {store: redis, redis: {url: 'redis://10.1.2.3:6379', password_file: p}}\n",
            "budget.redis",
            "plain redis:// is accepted only on a loopback address",
        ),
        (
            "budget: {store: redis, redis: {url: 'http://127.0.0.1:6379', password_file: p}}\n",
            "budget.redis",
            "budget.redis.url must be unix://, rediss:// or loopback redis://",
        ),
        (
            "budget: {store: redis, redis: {url: 'unix://r.sock', password_file: p}}\n",
            "budget.redis",
            "a unix socket URL needs an absolute path",
        ),
        (
            "budget: {store: redis, redis: {url: 'rediss://u:pw@redis.example:6380', password_file: p}}\n",
            "budget.redis",
            "must not carry credentials",
        ),
        (
            "budget: {store: redis, redis: {url: 'unix:///r.sock', password_file: p, tls: {ca_file: ca.pem}}}\n",
            "budget.redis",
            "budget.redis.tls applies to a rediss:// url only",
        ),
        (
            "budget: {store: redis, redis: {url: 'unix:///r.sock', password_file: p, key_prefix: 'a{b}'}}\n",
            "budget.redis",
            "key_prefix 'a{b}': 1 to 64 of letters, digits and . _ - : expected",
        ),
        (
            "budget: {store: redis, redis: {url: 'unix:///r.sock', password_file: p, username: ''}}\n",
            "budget.redis",
            "budget.redis.username must not be empty",
        ),
    ],
)
def test_bad_budget_sections_are_refused(tmp_path: Path, extra: str, key: str, message: str) -> None:
    path = write(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    assert (info.value.source, info.value.key) == (str(path), key)
    assert message in info.value.problem


def test_a_remote_redis_over_tls_is_accepted(tmp_path: Path) -> None:
    extra = (
        "budget: {store: redis, redis: {url: 'rediss://redis.example:6380', password_file: p, "
        "tls: {ca_file: ca.pem}}}\n"
    )
    redis = load_gateway_config(write(tmp_path, extra)).budget.redis
    assert redis is not None
    assert redis.tls is not None
    assert redis.tls.ca_file == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gateway_budget_unknown_key.yaml", "budget.redis.timeout: unknown key; expected one of:"),
        ("gateway_budget_redis_remote_plain.yaml", "plain redis:// is accepted only on a loopback address"),
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


def test_the_password_file_is_a_secret_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    password = tmp_path / "secrets" / "redis.password"
    password.write_text("s3cret\n")
    password.chmod(0o644)
    cfg = load_gateway_config(write(tmp_path, REDIS))
    metrics = GatewayMetrics(CollectorRegistry(), ())
    with pytest.raises(SecretFileError, match="chmod 600"):
        _budget_store(cfg, metrics)
    password.chmod(0o600)
    assert isinstance(_budget_store(cfg, metrics), RedisCounters)
    memory = load_gateway_config(write(tmp_path, ""))
    assert isinstance(_budget_store(memory, metrics), CallCounters)
