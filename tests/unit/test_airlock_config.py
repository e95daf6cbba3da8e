"""airlock._config: the typed YAML loader every config file goes through."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from airlock.common import ConfigError, load_yaml_config, parse_config, parse_duration_ms, parse_size


@dataclass(frozen=True)
class _Agent:
    id: str
    token_file: str | None = None


@dataclass(frozen=True)
class _Server:
    port: int
    debug: bool = False
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.port > 65535:
            raise ValueError(f"port must be <= 65535, got {self.port}")


@dataclass(frozen=True)
class _Root:
    server: _Server
    agents: tuple[_Agent, ...] = ()
    ratio: float = 1.0
    mode: Literal["a", "b"] = "a"


def _valid() -> dict[str, Any]:
    return {
        "version": 1,
        "server": {"port": 8080, "debug": True, "tags": ["x", "y"]},
        "agents": [{"id": "a1", "token_file": "t1"}, {"id": "a2"}],
        "ratio": 2,
        "mode": "b",
    }


def _write(tmp_path: Path, doc: Any, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def _error(tmp_path: Path, doc: Any) -> tuple[Path, ConfigError]:
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_yaml_config(path, _Root)
    return path, info.value


def test_valid_file_parses_into_frozen_dataclasses(tmp_path: Path) -> None:
    cfg = load_yaml_config(_write(tmp_path, _valid()), _Root)
    assert cfg == _Root(
        server=_Server(port=8080, debug=True, tags=("x", "y")),
        agents=(_Agent("a1", "t1"), _Agent("a2", None)),
        ratio=2.0,
        mode="b",
    )
    assert isinstance(cfg.ratio, float)
    assert isinstance(cfg.agents, tuple)


def test_defaults_apply_when_keys_are_absent(tmp_path: Path) -> None:
    cfg = load_yaml_config(_write(tmp_path, {"version": 1, "server": {"port": 1}}), _Root)
    assert cfg == _Root(server=_Server(port=1))


@pytest.mark.parametrize(
    ("mutate", "key", "expected_keys"),
    [
        pytest.param(lambda d: d.update(bogus=1), "bogus", "agents, mode, ratio, server", id="top-level"),
        pytest.param(lambda d: d["server"].update(prot=1), "server.prot", "debug, port, tags", id="nested"),
        pytest.param(lambda d: d["agents"][1].update(token=1), "agents[1].token", "id, token_file", id="list-item"),
    ],
)
def test_unknown_key_names_file_key_path_and_expected_keys(tmp_path: Path, mutate, key, expected_keys) -> None:
    doc = _valid()
    mutate(doc)
    path, err = _error(tmp_path, doc)
    message = str(err)
    assert str(path) in message
    assert f": {key}: unknown key" in message
    assert f"expected one of: {expected_keys}" in message
    assert (err.source, err.key) == (str(path), key)


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [
        pytest.param(lambda d: d.pop("server"), "server", "required key missing; expected a mapping", id="top"),
        pytest.param(
            lambda d: d["server"].pop("port"), "server.port", "required key missing; expected an integer", id="nested"
        ),
        pytest.param(lambda d: d["agents"][1].pop("id"), "agents[1].id", "required key missing", id="list-item"),
    ],
)
def test_missing_required_key(tmp_path: Path, mutate, key, problem) -> None:
    doc = _valid()
    mutate(doc)
    path, err = _error(tmp_path, doc)
    assert err.key == key
    assert problem in err.problem
    assert str(path) in str(err)


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [
        pytest.param(
            lambda d: d["server"].update(port="x"), "server.port", "expected an integer, got 'x'", id="int-given-str"
        ),
        pytest.param(
            lambda d: d["server"].update(port=True), "server.port", "expected an integer, got True", id="int-given-bool"
        ),
        pytest.param(
            lambda d: d["server"].update(port=1.5), "server.port", "expected an integer, got 1.5", id="int-given-float"
        ),
        pytest.param(
            lambda d: d["server"].update(debug=1), "server.debug", "expected true or false, got 1", id="bool-given-int"
        ),
        pytest.param(
            lambda d: d["server"].update(tags="x"), "server.tags", "expected a list of a string", id="list-given-str"
        ),
        pytest.param(
            lambda d: d["server"].update(tags=["ok", 3]), "server.tags[1]", "expected a string, got 3", id="list-item"
        ),
        pytest.param(lambda d: d.update(ratio="1"), "ratio", "expected a number", id="float-given-str"),
        pytest.param(lambda d: d.update(ratio=False), "ratio", "expected a number", id="float-given-bool"),
        pytest.param(lambda d: d.update(mode="c"), "mode", "expected 'a' or 'b', got 'c'", id="literal"),
        pytest.param(lambda d: d.update(server=[1]), "server", "expected a mapping", id="mapping-given-list"),
        pytest.param(
            lambda d: d.update(agents={"id": "x"}), "agents", "expected a list of a mapping", id="list-given-map"
        ),
        pytest.param(
            lambda d: d["agents"][1].update(token_file=5),
            "agents[1].token_file",
            "expected a string or null, got 5",
            id="optional",
        ),
        pytest.param(lambda d: d["server"].update(port=70000), "server", "port must be <= 65535", id="post-init"),
    ],
)
def test_wrong_type_names_key_path_and_expectation(tmp_path: Path, mutate, key, problem) -> None:
    doc = _valid()
    mutate(doc)
    path, err = _error(tmp_path, doc)
    assert err.key == key
    assert problem in err.problem
    assert str(err) == f"{path}: {key}: {err.problem}"
    assert err.code == "config_invalid"


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        pytest.param(None, "expected 1, got None", id="missing"),
        pytest.param(2, "expected 1, got 2", id="unsupported"),
        pytest.param("1", "expected 1, got '1'", id="string"),
    ],
)
def test_version_must_be_supported(tmp_path: Path, version, problem) -> None:
    doc = _valid()
    if version is None:
        del doc["version"]
    else:
        doc["version"] = version
    path, err = _error(tmp_path, doc)
    assert (err.source, err.key, err.problem) == (str(path), "version", problem)


def test_several_supported_versions_are_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, {**_valid(), "version": 3})
    with pytest.raises(ConfigError, match=r"version: expected 1 or 2, got 3"):
        load_yaml_config(path, _Root, versions=(1, 2))
    doc = {**_valid(), "version": 2}
    assert load_yaml_config(_write(tmp_path, doc), _Root, versions=(1, 2)).mode == "b"


def test_boolean_version_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, {**_valid(), "version": True})
    with pytest.raises(ConfigError, match="version"):
        load_yaml_config(path, _Root)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "expected a mapping at the top level", id="empty"),
        pytest.param("- 1\n- 2\n", "expected a mapping at the top level", id="list"),
        pytest.param("server: {port: 1\n", "not valid YAML", id="bad-yaml"),
    ],
)
def test_unusable_file_contents(tmp_path: Path, text, problem) -> None:
    path, err = _error(tmp_path, text)
    assert err.key == ""
    assert problem in err.problem
    assert str(err).startswith(f"{path}: ")


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_yaml_config(missing, _Root)
    assert info.value.source == str(missing)
    assert "cannot read" in info.value.problem


def test_version_key_is_only_allowed_at_the_top(tmp_path: Path) -> None:
    doc = _valid()
    doc["server"]["version"] = 1
    _, err = _error(tmp_path, doc)
    assert err.key == "server.version"
    assert "unknown key" in err.problem


def test_parse_config_without_a_file_uses_the_given_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"port": "x"}, _Server, source="<inline>", key="srv")
    assert str(info.value) == "<inline>: srv.port: expected an integer, got 'x'"


def test_unknown_keys_of_mixed_types_are_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "version: 1\nserver: {port: 1}\nno: 1\nextra: 2\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_yaml_config(path, _Root)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("256Mi", 256 * 1024**2),
        ("256m", 256 * 1024**2),
        ("256M", 256 * 1024**2),
        ("1k", 1024),
        ("1Ki", 1024),
        ("2g", 2 * 1024**3),
        ("2Gi", 2 * 1024**3),
        ("512b", 512),
        ("  64Mi ", 64 * 1024**2),
        ("0", 0),
        ("4096", 4096),
        (1048576, 1048576),
        (0, 0),
    ],
)
def test_parse_size(value, expected) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["12xb", "", "Mi", "1.5Mi", "-1", "1Ti", "1 Mi", "1gb", "1mib", -1])
def test_parse_size_rejects(value) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10s", 10_000),
        ("500ms", 500),
        ("2m", 120_000),
        ("1h", 3_600_000),
        ("0s", 0),
        (" 10S ", 10_000),
        (1500, 1500),
        (0, 0),
    ],
)
def test_parse_duration_ms(value, expected) -> None:
    assert parse_duration_ms(value) == expected


@pytest.mark.parametrize("value", ["10", "1.5s", "10d", "1h30m", "s", "ms", "h", "-5s", "10 s", "5sms", "", -1])
def test_parse_duration_ms_rejects(value) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(value)
