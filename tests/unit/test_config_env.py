"""Configuration from the environment (12-factor): ``AIRLOCK_GATEWAY_*`` and
``AIRLOCK_EXECUTOR_*`` variables override single keys of the daemons'
files, or make up the whole config, and are checked like the file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.common import ConfigError
from airlock.common._config import config_path
from airlock.executor._config import load_executor_config
from airlock.gateway import load_gateway_config

SHA = hashlib.sha256(b"some-long-agent-token").hexdigest()


def _gateway_doc() -> dict[str, Any]:
    return {
        "version": 1,
        "registry": "tool_registry.yaml",
        "executor": {"socket": "run/executor.sock", "token_file": "executor.token"},
        "audit": {"path": "audit/audit.jsonl"},
        "agents": [{"id": "alice", "token_sha256": SHA}],
    }


def _write(tmp_path: Path, doc: dict[str, Any], name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_a_variable_overrides_one_nested_key_and_keeps_the_rest(tmp_path: Path) -> None:
    path = _write(tmp_path, _gateway_doc())
    env = {
        "AIRLOCK_GATEWAY_OPA__URL": "unix:///run/airlock/opa/opa.sock",
        "AIRLOCK_GATEWAY_OPA__TIMEOUT_MS": "750",
        "AIRLOCK_GATEWAY_METRICS_LISTEN": "0.0.0.0:9464",
        "UNRELATED": "x",
    }
    cfg = load_gateway_config(path, env)
    assert cfg.opa.url == "unix:///run/airlock/opa/opa.sock"
    assert cfg.opa.timeout_ms == 750  # read as YAML: a number
    assert cfg.metrics_listen == "0.0.0.0:9464"
    assert cfg.agents[0].id == "alice"
    assert cfg.registry == str(tmp_path.resolve() / "tool_registry.yaml")


def test_the_whole_config_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "AIRLOCK_GATEWAY_REGISTRY": "/etc/airlock/tool_registry.yaml",
        "AIRLOCK_GATEWAY_EXECUTOR": "{socket: /run/airlock/executor.sock, token_file: /secrets/executor.token}",
        "AIRLOCK_GATEWAY_AUDIT__PATH": "/var/lib/airlock/audit/audit.jsonl",
        "AIRLOCK_GATEWAY_AGENTS": f"[{{id: agent, token_sha256: {SHA}}}]",
    }
    cfg = load_gateway_config(config_path(None, env, "AIRLOCK_GATEWAY_"), env)
    assert cfg.executor.socket == "/run/airlock/executor.sock"
    assert cfg.agents[0].id == "agent"


def test_the_config_file_can_be_named_by_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, _gateway_doc())
    env = {"AIRLOCK_GATEWAY_CONFIG": str(path)}
    assert config_path(None, env, "AIRLOCK_GATEWAY_") == path
    assert config_path(Path("/x.yaml"), env, "AIRLOCK_GATEWAY_") == Path("/x.yaml")
    assert load_gateway_config(config_path(None, env, "AIRLOCK_GATEWAY_"), env).agents[0].id == "alice"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AIRLOCK_GATEWAY_OPA__URLL", "x", "environment variable AIRLOCK_GATEWAY_OPA__URLL: opa.urll: unknown key"),
        ("AIRLOCK_GATEWAY_NOPE", "1", "environment variable AIRLOCK_GATEWAY_NOPE: nope: unknown key"),
        ("AIRLOCK_GATEWAY_OPA____URL", "x", "empty key"),
        ("AIRLOCK_GATEWAY_LISTEN__PORT", "1", "listen has no keys below it"),
        ("AIRLOCK_GATEWAY_OPA__TIMEOUT_MS", "[1, 2", "not valid YAML"),
    ],
)
def test_a_bad_variable_is_refused_naming_the_variable(tmp_path: Path, name: str, value: str, message: str) -> None:
    path = _write(tmp_path, _gateway_doc())
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_gateway_config(path, {name: value})


def test_a_value_of_the_wrong_type_names_the_file_and_the_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, _gateway_doc())
    with pytest.raises(ConfigError) as err:
        load_gateway_config(path, {"AIRLOCK_GATEWAY_OPA__TIMEOUT_MS": "soon"})
    assert "AIRLOCK_GATEWAY_OPA__TIMEOUT_MS" in str(err.value)
    assert "opa.timeout_ms" in str(err.value)


def test_the_schemas_own_checks_still_apply_to_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, _gateway_doc())
    with pytest.raises(ConfigError, match="not a loopback address and tls is not set"):
        load_gateway_config(path, {"AIRLOCK_GATEWAY_LISTEN": "0.0.0.0:50051"})


def test_without_an_environment_nothing_is_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_GATEWAY_NOPE", "1")  # the process env is read only when passed
    assert load_gateway_config(_write(tmp_path, _gateway_doc())).agents[0].id == "alice"


def test_executor_variables_override_executor_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, {"version": 1, "token_file": "t", "socket": "s.sock"}, "executor.yaml")
    env = {
        "AIRLOCK_EXECUTOR_POOL__SIZE": "4",
        "AIRLOCK_EXECUTOR_EGRESS__ENABLED": "false",
        "AIRLOCK_EXECUTOR_ALLOWED_PEER_UIDS": "[10001]",
        "AIRLOCK_EXECUTOR_EGRESS__HOSTS__API.EXAMPLE": "[192.0.2.1]",
    }
    cfg = load_executor_config(path, env)
    assert cfg.pool.size == 4
    assert cfg.egress.enabled is False
    assert cfg.allowed_peer_uids == (10001,)
    assert dict(cfg.egress.hosts) == {"api.example": ("192.0.2.1",)}
    with pytest.raises(ConfigError, match=r"AIRLOCK_EXECUTOR_POOL__SIZ: pool\.siz: unknown key"):
        load_executor_config(path, {"AIRLOCK_EXECUTOR_POOL__SIZ": "4"})
