"""gateway._config: gateway.yaml parsing and relative path resolution."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.common import ConfigError
from airlock.gateway import load_gateway_config
from airlock.gateway._config import DEFAULT_MAX_ARGUMENTS_BYTES, DEFAULT_OPA_TIMEOUT_MS, DEFAULT_OPA_URL

SHA = hashlib.sha256(b"some-long-agent-token").hexdigest()


def _doc() -> dict[str, Any]:
    return {
        "version": 1,
        "registry": "tool_registry.yaml",
        "executor": {"socket": "run/executor.sock", "token_file": "../secrets/executor.token"},
        "audit": {"path": "audit/audit.jsonl"},
        "agents": [
            {"id": "alice", "token_file": "tokens/alice"},
            {"id": "bob", "profile": "untrusted", "token_sha256": SHA},
        ],
    }


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    folder = tmp_path / "conf"
    folder.mkdir(exist_ok=True)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, _doc())
    # The working directory must not matter.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_gateway_config(path)
    conf = (tmp_path / "conf").resolve()
    assert cfg.registry == str(conf / "tool_registry.yaml")
    assert cfg.executor.socket == str(conf / "run" / "executor.sock")
    assert cfg.executor.token_file == str(tmp_path.resolve() / "secrets" / "executor.token")
    assert cfg.audit.path == str(conf / "audit" / "audit.jsonl")
    assert cfg.agents[0].token_file == str(conf / "tokens" / "alice")
    assert cfg.agents[1].token_file is None
    assert cfg.agents[1].token_sha256 == SHA
    assert cfg.agents[1].profile == "untrusted"
    assert cfg.agents[0].profile == "default"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    doc = _doc()
    doc["registry"] = "/etc/airlock/tool_registry.yaml"
    doc["audit"] = {"path": "/var/log/airlock/audit.jsonl"}
    cfg = load_gateway_config(_write(tmp_path, doc))
    assert cfg.registry == "/etc/airlock/tool_registry.yaml"
    assert cfg.audit.path == "/var/log/airlock/audit.jsonl"


def test_defaults(tmp_path: Path) -> None:
    cfg = load_gateway_config(_write(tmp_path, _doc()))
    assert cfg.opa.url == DEFAULT_OPA_URL
    assert cfg.opa.timeout_ms == DEFAULT_OPA_TIMEOUT_MS
    assert cfg.limits.max_arguments_bytes == DEFAULT_MAX_ARGUMENTS_BYTES
    assert cfg.limits.max_arguments_bytes < cfg.limits.max_message_bytes
    assert cfg.listen.startswith("127.0.0.1:")


def _agent(i: int, **fields: Any):
    def mutate(doc: dict[str, Any]) -> None:
        doc["agents"][i] = fields

    return mutate


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [
        pytest.param(
            _agent(1, id="bob", token_file="t", token_sha256=SHA),
            "agents[1]",
            "agent 'bob': set token_file or token_sha256, not both",
            id="agent-both-tokens",
        ),
        pytest.param(
            _agent(0, id="alice"),
            "agents[0]",
            "agent 'alice': needs a token (token_file or token_sha256) or a tls_identity",
            id="agent-no-token",
        ),
        # The executor reads an empty principal as "everyone" (ListSandboxes,
        # EndSandboxes), so a blank agent id must never load.
        pytest.param(
            _agent(1, id="", token_sha256=SHA),
            "agents[1]",
            "agent id '' is empty: each agent needs a non-blank id",
            id="agent-empty-id",
        ),
        pytest.param(
            _agent(1, id="  ", token_sha256=SHA),
            "agents[1]",
            "agent id '  ' is empty: each agent needs a non-blank id",
            id="agent-blank-id",
        ),
        pytest.param(
            _agent(1, id="alice", token_sha256=SHA),
            "(top level)",
            "agents: ids must be unique",
            id="duplicate-agent-ids",
        ),
        pytest.param(
            lambda d: d.update(limits={"max_arguments_bytes": 4096, "max_message_bytes": 4096}),
            "(top level)",
            "limits.max_arguments_bytes must be below limits.max_message_bytes",
            id="arguments-equal-message",
        ),
        pytest.param(
            lambda d: d.update(limits={"max_arguments_bytes": 8 * 1024 * 1024}),
            "(top level)",
            "limits.max_arguments_bytes must be below limits.max_message_bytes",
            id="arguments-above-default-message",
        ),
        pytest.param(
            lambda d: d.update(opa={"timeout_ms": 0}),
            "opa",
            "opa.timeout_ms and opa.queue_timeout_ms must be > 0",
            id="opa-timeout-zero",
        ),
        pytest.param(
            lambda d: d.update(opa={"url": "ftp://opa"}),
            "opa",
            "opa.url must be unix://, https:// or loopback",
            id="opa-url",
        ),
        pytest.param(
            lambda d: d.update(opa={"url": "http://10.0.0.5:8181"}),
            "opa",
            "plain http is accepted only on a loopback address",
            id="opa-remote-plain-http",
        ),
        pytest.param(
            lambda d: d.update(listen="0.0.0.0:50051"),
            "(top level)",
            "is not a loopback address and tls is not set",
            id="listen-any",
        ),
        pytest.param(
            lambda d: d["agents"][0].update(tokenfile="x"), "agents[0].tokenfile", "unknown key", id="agent-typo"
        ),
        pytest.param(lambda d: d.pop("executor"), "executor", "required key missing", id="no-executor"),
        pytest.param(
            lambda d: d["executor"].update(grace_ms="15s"), "executor.grace_ms", "expected an integer", id="grace-type"
        ),
    ],
)
def test_invalid_gateway_config(tmp_path: Path, mutate, key, problem) -> None:
    doc = _doc()
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    assert (info.value.source, info.value.key) == (str(path), key)
    assert problem in info.value.problem


def test_max_arguments_just_below_message_is_fine(tmp_path: Path) -> None:
    doc = _doc()
    doc["limits"] = {"max_arguments_bytes": 4095, "max_message_bytes": 4096}
    cfg = load_gateway_config(_write(tmp_path, doc))
    assert (cfg.limits.max_arguments_bytes, cfg.limits.max_message_bytes) == (4095, 4096)


@pytest.mark.parametrize("digest", ["not-hex", SHA[:32], SHA.upper() + "00"], ids=["not-hex", "too-short", "too-long"])
def test_token_sha256_must_be_a_sha256_hex_digest(tmp_path: Path, digest: str) -> None:
    doc = _doc()
    doc["agents"][1]["token_sha256"] = digest
    with pytest.raises(ConfigError, match=r"agents\[1\]"):
        load_gateway_config(_write(tmp_path, doc))
