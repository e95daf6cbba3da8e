"""executor.yaml keys for issue 10: the peer check on the socket, images from
the registry only, and the egress subnet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airlock.common import ConfigError
from airlock.executor._config import EgressSettings, ExecutorConfig, load_executor_config


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "executor.yaml"
    path.write_text("version: 1\nsocket: run/executor.sock\ntoken_file: executor.token\n" + body)
    return path


def test_defaults_are_the_executors_own_uid_no_group_and_no_images(tmp_path: Path) -> None:
    cfg = load_executor_config(_write(tmp_path, ""))
    assert cfg.allowed_peer_uids == (os.geteuid(),)
    assert cfg.socket_group is None
    assert cfg.registry_file is None
    assert cfg.allowed_images == ()
    assert cfg.egress.subnet is None


def test_the_new_keys_parse_and_a_relative_registry_is_resolved(tmp_path: Path) -> None:
    cfg = load_executor_config(
        _write(
            tmp_path,
            "allowed_peer_uids: [990, 991]\nsocket_group: 990\nregistry_file: ../deploy/tool_registry.yaml\n"
            "allowed_images: ['img:1']\negress: {subnet: 172.30.0.0/24}\n",
        )
    )
    assert cfg.allowed_peer_uids == (990, 991)
    assert cfg.socket_group == 990
    assert cfg.registry_file == str((tmp_path.parent / "deploy" / "tool_registry.yaml").resolve())
    assert cfg.allowed_images == ("img:1",)
    assert cfg.egress.subnet == "172.30.0.0/24"


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("allowed_peer_uids: []\n", "(top level)", "at least one uid"),
        ("allowed_peer_uids: [-1]\n", "(top level)", "at least one uid"),
        ("allowed_peer_uids: 990\n", "allowed_peer_uids", "expected a list of an integer"),
        ("socket_group: -5\n", "(top level)", "gid >= 0"),
        ("socket_group: wheel\n", "socket_group", "expected an integer or null"),
        ("allowed_images: ['']\n", "(top level)", "non-empty"),
        ("allowed_peers: [1]\n", "allowed_peers", "unknown key"),
        ("egress: {subnet: 10.0.0.0/30}\n", "egress", "/28 or larger"),
        ("egress: {subnet: 'fd00::/64'}\n", "egress", "not an IPv4 network"),
    ],
)
def test_bad_values_are_config_errors(tmp_path: Path, body: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_executor_config(_write(tmp_path, body))
    assert info.value.key == key
    assert problem in info.value.problem


def test_the_dataclasses_take_the_keys_directly() -> None:
    assert ExecutorConfig(socket="/x", token_file="/y", allowed_peer_uids=(5,)).allowed_peer_uids == (5,)
    assert EgressSettings(subnet="192.168.77.0/24").subnet == "192.168.77.0/24"


# --- issue 17: the egress CA, upstream trust anchors and injected secrets ---


def test_egress_tls_keys_default_to_a_ca_beside_the_token_and_env_secrets(tmp_path: Path) -> None:
    cfg = load_executor_config(_write(tmp_path, ""))
    assert cfg.egress.ca_dir is None
    assert cfg.egress_ca_dir == tmp_path.resolve() / "egress-ca"
    assert cfg.egress.trust_anchors == ()
    assert cfg.egress.secrets_file is None
    assert cfg.egress.secrets_env is True
    direct = ExecutorConfig(socket="/x", token_file="/etc/airlock/executor/executor.token")
    assert direct.egress_ca_dir == Path("/etc/airlock/executor/egress-ca")


def test_egress_tls_keys_parse_and_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    cfg = load_executor_config(
        _write(
            tmp_path,
            "egress:\n  ca_dir: state/ca\n  trust_anchors: [corp-ca.pem, /etc/ssl/extra.pem]\n"
            "  secrets_file: secrets.yaml\n  secrets_env: false\n",
        )
    )
    base = tmp_path.resolve()
    assert cfg.egress.ca_dir == str(base / "state" / "ca")
    assert cfg.egress_ca_dir == base / "state" / "ca"
    assert cfg.egress.trust_anchors == (str(base / "corp-ca.pem"), "/etc/ssl/extra.pem")
    assert cfg.egress.secrets_file == str(base / "secrets.yaml")
    assert cfg.egress.secrets_env is False


def test_egress_tls_keys_take_environment_overrides(tmp_path: Path) -> None:
    env = {
        "AIRLOCK_EXECUTOR_EGRESS__SECRETS_ENV": "false",
        "AIRLOCK_EXECUTOR_EGRESS__CA_DIR": "/var/lib/airlock/egress-ca",
        "AIRLOCK_EXECUTOR_EGRESS__TRUST_ANCHORS": "[/a.pem]",
    }
    cfg = load_executor_config(_write(tmp_path, ""), env)
    assert cfg.egress.secrets_env is False
    assert cfg.egress_ca_dir == Path("/var/lib/airlock/egress-ca")
    assert cfg.egress.trust_anchors == ("/a.pem",)


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ("egress: {ca_dir: ''}\n", "egress", "must be non-empty paths"),
        ("egress: {secrets_file: ' '}\n", "egress", "must be non-empty paths"),
        ("egress: {trust_anchors: ['']}\n", "egress", "must be non-empty paths"),
        ("egress: {trust_anchors: a.pem}\n", "egress.trust_anchors", "expected a list of a string"),
        ("egress: {secrets_env: 'yes'}\n", "egress.secrets_env", "expected true or false"),
        ("egress: {ca_dir: 5}\n", "egress.ca_dir", "expected a string or null"),
        ("egress: {secret_file: s.yaml}\n", "egress.secret_file", "unknown key"),
    ],
)
def test_bad_egress_tls_keys_are_config_errors(tmp_path: Path, body: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_executor_config(_write(tmp_path, body))
    assert info.value.key == key
    assert problem in info.value.problem
