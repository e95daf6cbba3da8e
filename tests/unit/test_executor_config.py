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
