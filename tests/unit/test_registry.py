"""gateway._registry: loading tool_registry.yaml and exporting it as OPA data."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from airlock.common import ConfigError
from airlock.gateway import load_registry
from airlock.gateway._registry import Registry

MiB = 1024**2


def _tool() -> dict[str, Any]:
    return {
        "description": "Run Python.",
        "image": "airlock/sandbox-python:1",
        "argv": ["python3", "-I", "-c", "{code}"],
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
            "additionalProperties": False,
        },
        "limits": {"memory": "256Mi", "cpus": 0.5, "pids": 64, "timeout": "10s", "output": "1Mi", "tmpfs": "64Mi"},
    }


def _write(tmp_path: Path, tools: dict[str, Any], *, version: Any = 1) -> Path:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump({"version": version, "tools": tools}), encoding="utf-8")
    return path


def test_shipped_registry_loads(shipped_registry_path: Path) -> None:
    reg = load_registry(shipped_registry_path)
    assert set(reg.tools) == {
        "apply_patch",
        "computer",
        "local_shell",
        "python",
        "python_files",
        "python_script",
        "shell",
        "shell_builtin",
        "web_fetch",
        "web_search",
    }
    python = reg.get("python")
    assert python is not None
    assert python.argv == ("python3", "-I", "-c", "{code}")
    assert python.item_type == "function_call"
    assert python.runtime == "runc"
    assert python.allowed_network is False
    web = reg.get("web_fetch")
    assert web is not None
    assert web.allowed_network is True
    assert web.egress_allowlist == ("*.wikipedia.org:443",)
    assert reg.get("nope") is None
    assert reg.source == str(shipped_registry_path)


def test_shipped_registry_as_policy_data(shipped_registry_path: Path) -> None:
    reg = load_registry(shipped_registry_path)
    data = reg.as_policy_data()
    # It is written to the bundle as JSON: no read-only mappings or tuples left.
    assert json.loads(json.dumps(data)) == data
    assert list(data) == ["tools"]
    assert list(data["tools"]) == sorted(
        {
            "apply_patch",
            "computer",
            "local_shell",
            "python",
            "python_files",
            "python_script",
            "shell",
            "shell_builtin",
            "web_fetch",
            "web_search",
        }
    )
    python = data["tools"]["python"]
    assert set(python) == {
        "name",
        "description",
        "item_type",
        "image",
        "argv",
        "parameters",
        "allowed_network",
        "egress_allowlist",
        "egress_allow_cidrs",
        "runtime",
        "env",
        "limits",
        "sandbox",
        "artifacts",
        "dynamic",
    }
    assert python["dynamic"] == {"source": "code"}
    assert "dynamic" not in data["tools"]["shell"]
    assert python["artifacts"] == {"inputs": "", "outputs": False}
    assert data["tools"]["python_files"]["artifacts"] == {"inputs": "inputs", "outputs": True}
    assert python["sandbox"] == {"mode": "session", "idle_ttl_ms": 600_000, "max_lifetime_ms": 3_600_000}
    assert python["name"] == "python"
    assert python["image"] == reg.tools["python"].image
    assert python["argv"] == ["python3", "-I", "-c", "{code}"]
    assert python["parameters"]["required"] == ["code"]
    assert type(python["parameters"]) is dict
    assert type(python["parameters"]["properties"]) is dict
    assert python["egress_allowlist"] == []
    assert python["env"] == {}
    assert python["limits"] == {
        "memory_bytes": 256 * MiB,
        "cpu_millis": 1000,
        "pids": 64,
        "timeout_ms": 10_000,
        "output_bytes": MiB,
        "tmpfs_bytes": 64 * MiB,
    }
    # Absent limits stay absent: the profile cap applies, not a zero.
    assert data["tools"]["shell"]["limits"] == {"memory_bytes": 256 * MiB, "pids": 64, "timeout_ms": 30_000}
    assert data["tools"]["web_fetch"]["egress_allowlist"] == ["*.wikipedia.org:443"]
    assert data["tools"]["web_fetch"]["allowed_network"] is True


def test_limits_conversion_units(tmp_path: Path) -> None:
    tool = _tool()
    tool["limits"] = {"memory": 1048576, "cpus": 0.25, "timeout": "500ms", "output": "1k", "tmpfs": "2m"}
    tool["env"] = {"LANG": "C.UTF-8"}
    tool["runtime"] = "runsc"
    data = load_registry(_write(tmp_path, {"py": tool})).tool_data("py")
    assert data["limits"] == {
        "memory_bytes": 1048576,
        "cpu_millis": 250,
        "timeout_ms": 500,
        "output_bytes": 1024,
        "tmpfs_bytes": 2 * MiB,
    }
    assert data["env"] == {"LANG": "C.UTF-8"}
    assert data["runtime"] == "runsc"


def test_defaults_for_optional_tool_fields(tmp_path: Path) -> None:
    tool = {"description": "d", "image": "img:1", "argv": ["true"]}
    reg = load_registry(_write(tmp_path, {"t": tool}))
    data = reg.tool_data("t")
    assert data["item_type"] == "function_call"
    assert data["parameters"] == {"type": "object"}
    assert data["runtime"] == "runc"
    assert data["limits"] == {}
    assert data["allowed_network"] is False


def _set(path: str, value: Any):
    """A mutation of the base tool: set a dotted key ("limits.memory") to value."""

    def mutate(tool: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = tool
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


@pytest.mark.parametrize(
    ("name", "mutate", "key", "problem"),
    [
        pytest.param(
            "python",
            _set("colour", "red"),
            "tools.python.colour",
            "unknown key; expected one of:",
            id="unknown-key-in-tool",
        ),
        pytest.param(
            "python", _set("limits.disk", "1Gi"), "tools.python.limits.disk", "unknown key", id="unknown-key-in-limits"
        ),
        pytest.param(
            "bad name!", _set("description", "d"), "tools.bad name!", "tool names must match", id="bad-tool-name"
        ),
        pytest.param(
            "x" * 65, _set("description", "d"), f"tools.{'x' * 65}", "tool names must match", id="tool-name-too-long"
        ),
        pytest.param(
            "python",
            _set("argv", ["python3", "{script}"]),
            "tools.python",
            "argv placeholder {script} must be a required parameter",
            id="placeholder-not-a-parameter",
        ),
        pytest.param(
            "python",
            _set("parameters.required", []),
            "tools.python",
            "argv placeholder {code} must be a required parameter",
            id="placeholder-optional",
        ),
        pytest.param(
            "python", _set("parameters.type", "objekt"), "tools.python", "not a valid JSON Schema", id="bad-schema-type"
        ),
        pytest.param(
            "python",
            _set("parameters.properties.code.pattern", "("),
            "tools.python",
            "not a valid JSON Schema",
            id="bad-schema-regex",
        ),
        pytest.param(
            "python",
            _set("parameters", ["code"]),
            "tools.python.parameters",
            "expected a mapping",
            id="schema-not-a-map",
        ),
        pytest.param(
            "python",
            _set("egress_allowlist", ["example.com:443"]),
            "tools.python",
            "egress_allowlist needs allowed_network: true",
            id="allowlist-without-network",
        ),
        pytest.param(
            "python",
            _set("egress_allow_cidrs", ["10.1.0.0/16"]),
            "tools.python",
            "egress_allow_cidrs needs allowed_network: true",
            id="cidrs-without-network",
        ),
        pytest.param(
            "web_fetch",
            lambda tool: tool.update(allowed_network=True, egress_allow_cidrs=["10.1.0.1/16"]),
            "tools.web_fetch",
            "egress_allow_cidrs: '10.1.0.1/16' is not a network in CIDR form",
            id="cidr-with-host-bits",
        ),
        pytest.param(
            "python", _set("limits.memory", "12xb"), "tools.python.limits", "expected a size like", id="bad-memory"
        ),
        pytest.param(
            "python", _set("limits.memory", -1), "tools.python.limits", "size must be >= 0", id="negative-memory"
        ),
        pytest.param(
            "python",
            _set("limits.memory", 1.5),
            "tools.python.limits.memory",
            "expected an integer or a string or null",
            id="float-memory",
        ),
        pytest.param(
            "python", _set("limits.timeout", "10d"), "tools.python.limits", "expected a duration", id="bad-timeout"
        ),
        pytest.param("python", _set("limits.cpus", 0), "tools.python.limits", "cpus must be > 0", id="zero-cpus"),
        pytest.param("python", _set("limits.pids", 0), "tools.python.limits", "pids must be > 0", id="zero-pids"),
        pytest.param(
            "python",
            _set("limits.pids", True),
            "tools.python.limits.pids",
            "expected an integer or null",
            id="bool-pids",
        ),
        pytest.param(
            "python",
            _set("item_type", "web_call"),
            "tools.python.item_type",
            "expected 'function_call' or",
            id="unknown-item-type",
        ),
        pytest.param(
            "python",
            _set("runtime", "kata"),
            "tools.python.runtime",
            "expected 'runc' or 'runsc', got 'kata'",
            id="bad-runtime",
        ),
        pytest.param("python", _set("argv", []), "tools.python", "argv must not be empty", id="empty-argv"),
        pytest.param("python", _set("image", ""), "tools.python", "image must not be empty", id="empty-image"),
        pytest.param(
            "python",
            _set("item_type", "web_search_call"),
            "tools.python",
            "a web_search_call tool is hosted: it takes no image, argv or network",
            id="hosted-with-argv",
        ),
        pytest.param(
            "python",
            _set("allowed_network", "yes"),
            "tools.python.allowed_network",
            "expected true or false",
            id="network-not-bool",
        ),
        pytest.param(
            "python", _set("env", {"A": 1}), "tools.python.env.A", "expected a string, got 1", id="env-not-string"
        ),
    ],
)
def test_bad_registry_entry_names_file_and_key(tmp_path: Path, name, mutate, key, problem) -> None:
    tool = copy.deepcopy(_tool())
    mutate(tool)
    path = _write(tmp_path, {name: tool})
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    err = info.value
    assert err.source == str(path)
    assert err.key == key
    assert problem in err.problem
    assert str(err).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("doc", "key", "problem"),
    [
        pytest.param({"version": 1}, "tools", "required key missing", id="no-tools"),
        pytest.param({"version": 2, "tools": {}}, "version", "expected 1, got 2", id="bad-version"),
        pytest.param(
            {"version": 1, "tools": {}, "tool": {}}, "tool", "unknown key; expected one of: tools", id="top-level-typo"
        ),
        pytest.param({"version": 1, "tools": ["python"]}, "tools", "expected a mapping", id="tools-list"),
    ],
)
def test_bad_registry_file_shape(tmp_path: Path, doc, key, problem) -> None:
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert (info.value.source, info.value.key) == (str(path), key)
    assert problem in info.value.problem


def test_registry_is_read_only(tmp_path: Path) -> None:
    reg = load_registry(_write(tmp_path, {"python": _tool()}))
    assert isinstance(reg, Registry)
    with pytest.raises(TypeError):
        reg.tools["evil"] = reg.tools["python"]  # type: ignore[index]
    tool = reg.tools["python"]
    with pytest.raises(TypeError):
        tool.parameters["type"] = "string"  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory", 0), ("timeout", "0s"), ("output", 0), ("tmpfs", "0Mi"), ("cpus", 0.0004)],
)
def test_zero_tool_limit_is_rejected_at_load(tmp_path: Path, field, value) -> None:
    tool = _tool()
    tool["limits"][field] = value
    with pytest.raises(ConfigError, match=r"tools\.python\.limits"):
        load_registry(_write(tmp_path, {"python": tool}))


def test_unresolvable_schema_ref_is_rejected_at_load(tmp_path: Path) -> None:
    tool = _tool()
    tool["parameters"]["properties"]["code"] = {"$ref": "#/$defs/missing"}
    with pytest.raises(ConfigError, match=r"tools\.python"):
        load_registry(_write(tmp_path, {"python": tool}))


def test_hosted_tool_needs_no_image_or_argv(tmp_path: Path) -> None:
    path = _write(tmp_path, {"web_search": {"description": "search", "item_type": "web_search_call"}})
    data = load_registry(path).tool_data("web_search")
    assert (data["item_type"], data["image"], data["argv"]) == ("web_search_call", "", [])


def test_one_entry_per_builtin_item_type(tmp_path: Path) -> None:
    # The agent finds a built-in's entry by item type, so two would be ambiguous.
    first, second = copy.deepcopy(_tool()), copy.deepcopy(_tool())
    first["item_type"] = second["item_type"] = "shell_call"
    path = _write(tmp_path, {"sh_a": first, "sh_b": second})
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert info.value.key == "tools.sh_b.item_type"
    assert "at most one shell_call tool (already 'sh_a')" in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"argv": ["python3", "-c", "{code}"], "dynamic": {"source": "src"}}, "must be a required argument"),
        (
            {"argv": ["python3", "-c", "{code}", "{other}"], "dynamic": {"source": "code"}, "two": True},
            "no argument besides",
        ),
        ({"argv": ["python3", "-c", "{code}"], "dynamic": {"source": "code"}, "outputs": True}, "with artifacts"),
    ],
)
def test_a_dynamic_base_is_checked(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    props: dict[str, Any] = {"code": {"type": "string"}}
    required = ["code"]
    if entry.pop("two", False):
        props["other"] = {"type": "string"}
        required.append("other")
    tool: dict[str, Any] = {
        "description": "d",
        "image": "img",
        "argv": entry["argv"],
        "parameters": {"type": "object", "properties": props, "required": required},
        "dynamic": entry["dynamic"],
    }
    if entry.get("outputs"):
        tool["artifacts"] = {"outputs": True}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "tools": {"t": tool}}))
    with pytest.raises(ConfigError, match=message):
        load_registry(path)


def test_a_registered_tool_cannot_shadow_a_built_in(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    tool = {"description": "d", "image": "i", "argv": ["true"]}
    path.write_text(yaml.safe_dump({"version": 1, "tools": {"define_tool": tool}}))
    with pytest.raises(ConfigError, match="built-in"):
        load_registry(path)


# -- egress_http: inspection, HTTP rules and secrets (issue 17) -----------------


def _github(egress_http: dict[str, Any], allowlist: list[str] | None = None) -> dict[str, Any]:
    tool = _tool()
    tool.update(
        allowed_network=True,
        egress_allowlist=allowlist or ["api.github.com:443", "*.githubusercontent.com"],
        egress_http=egress_http,
    )
    return tool


GITHUB_HTTP = {
    "rules": [{"methods": ["GET", "POST"], "paths": ["/repos/ORG/*"], "max_body": "1Mi"}],
    "secrets": [{"name": "github_token", "header": "Authorization", "format": "Bearer {value}"}],
}


def test_egress_http_as_policy_data(tmp_path: Path) -> None:
    reg = load_registry(
        _write(
            tmp_path,
            {
                "github_api": _github(
                    # The key is read like an allowlist entry: no port is 443.
                    {"api.github.com": GITHUB_HTTP, "*.githubusercontent.com": {"inspect": True}}
                ),
                "py": _tool(),
            },
        )
    )
    assert reg.tool_data("github_api")["egress_http"] == {
        "api.github.com": {
            "inspect": True,  # implied by rules and secrets
            "rules": [{"methods": ["GET", "POST"], "paths": ["/repos/ORG/*"], "max_body_bytes": MiB}],
            "secrets": [{"name": "github_token", "header": "Authorization", "format": "Bearer {value}"}],
        },
        "*.githubusercontent.com": {"inspect": True, "rules": [], "secrets": []},
    }
    # Absent stays absent, and a secret's format defaults to the bare value.
    assert "egress_http" not in reg.tool_data("py")
    one = load_registry(
        _write(tmp_path, {"t": _github({"api.github.com:443": {"secrets": [{"name": "k", "header": "X-Key"}]}})})
    )
    assert one.tool_data("t")["egress_http"]["api.github.com:443"]["secrets"][0]["format"] == "{value}"


def _rule(**changes: Any) -> dict[str, Any]:
    return {"api.github.com": {"rules": [{"methods": ["GET"], "paths": ["/repos/*"], **changes}]}}


def _secret(**changes: Any) -> dict[str, Any]:
    return {"api.github.com": {"secrets": [{"name": "github_token", "header": "Authorization", **changes}]}}


HOST = "tools.gh.egress_http.api.github.com"


@pytest.mark.parametrize(
    ("egress_http", "key", "problem"),
    [
        pytest.param(
            {"api.github.com:8443": {"inspect": True}},
            "tools.gh.egress_http.api.github.com:8443",
            "must be one of this tool's egress_allowlist entries ('api.github.com:443', '*.githubusercontent.com')",
            id="key-not-in-allowlist",
        ),
        pytest.param(
            {"api.github.com": {"inspect": True}, "api.github.com:443": {"inspect": True}},
            "tools.gh.egress_http.api.github.com:443",
            "names the same entry as 'api.github.com'",
            id="key-twice",
        ),
        pytest.param(
            {"*.githubusercontent.com": {"secrets": [{"name": "t", "header": "X-T"}]}},
            "tools.gh.egress_http.*.githubusercontent.com.secrets",
            "needs an exact host",
            id="secret-on-a-glob",
        ),
        pytest.param(
            {"api.github.com": {"inspct": True}}, HOST + ".inspct", "unknown key; expected one of", id="unknown-key"
        ),
        pytest.param(
            {"api.github.com": {"inspect": False, "rules": [{"methods": ["GET"], "paths": ["/"]}]}},
            HOST,
            "inspect: false, but rules and secrets need TLS inspection",
            id="inspect-false-with-rules",
        ),
        pytest.param(_rule(methods=[]), HOST + ".rules[0]", "methods must not be empty", id="no-methods"),
        pytest.param(_rule(paths=[]), HOST + ".rules[0]", "paths must not be empty", id="no-paths"),
        pytest.param(
            {"api.github.com": {"rules": [{"paths": ["/"]}]}},
            HOST + ".rules[0].methods",
            "required key missing",
            id="methods-missing",
        ),
        pytest.param(
            _rule(methods=["GET", "get"]),
            HOST + ".rules[0]",
            "methods[1]: 'get' is not an upper-case HTTP method token",
            id="lower-case-method",
        ),
        pytest.param(
            _rule(methods=["CONNECT"]), HOST + ".rules[0]", "methods[0]: CONNECT would open a tunnel", id="connect"
        ),
        pytest.param(
            _rule(paths=["repos/*"]), HOST + ".rules[0]", "paths[0]: 'repos/*' must start with '/'", id="relative-path"
        ),
        pytest.param(
            _rule(paths=["/repos?per_page=1"]),
            HOST + ".rules[0]",
            "must not contain a query string",
            id="query-string",
        ),
        pytest.param(_rule(paths=["/a/../admin"]), HOST + ".rules[0]", "'.' or '..' segment", id="dot-segment"),
        pytest.param(_rule(paths=["/a/***"]), HOST + ".rules[0]", "'***' means neither", id="triple-star"),
        pytest.param(_rule(paths=["/a b"]), HOST + ".rules[0]", "characters outside a URL path", id="space"),
        pytest.param(_rule(max_body="1 MB"), HOST + ".rules[0]", "expected a size like", id="bad-size"),
        pytest.param(_rule(max_body=0), HOST + ".rules[0]", "max_body must be > 0", id="zero-size"),
        pytest.param(
            _secret(name="GitHub"), HOST + ".secrets[0]", "name: 'GitHub' must match ^[a-z]", id="bad-secret-name"
        ),
        pytest.param(
            _secret(name="a" * 64), HOST + ".secrets[0]", "must match ^[a-z][a-z0-9_]{0,62}$", id="long-secret-name"
        ),
        pytest.param(
            _secret(header="Authori zation"), HOST + ".secrets[0]", "not an HTTP header name", id="header-not-token"
        ),
        *(
            pytest.param(_secret(header=h), HOST + ".secrets[0]", "hop-by-hop or framing header", id=f"header-{h}")
            for h in (
                "Host",
                "content-length",
                "Transfer-Encoding",
                "Connection",
                "Proxy-Authorization",
                "TE",
                "Trailer",
                "Upgrade",
                "Keep-Alive",
            )
        ),
        pytest.param(_secret(format="Bearer"), HOST + ".secrets[0]", "{value} exactly once", id="format-no-value"),
        pytest.param(
            _secret(format="{value}{value}"), HOST + ".secrets[0]", "{value} exactly once", id="format-value-twice"
        ),
        *(
            pytest.param(_secret(format=f"Bearer {{value}}{c}"), HOST + ".secrets[0]", "control", id=f"format-{n}")
            for n, c in (("cr", "\r"), ("lf", "\n"), ("nul", "\0"))
        ),
        pytest.param(
            {
                "api.github.com": {
                    "secrets": [{"name": "a", "header": "X-Key"}, {"name": "b", "header": "x-key"}],
                }
            },
            HOST,
            "secrets[1]: a second secret for header 'x-key'",
            id="same-header-twice",
        ),
    ],
)
def test_bad_egress_http_names_the_key(tmp_path: Path, egress_http, key, problem) -> None:
    path = _write(tmp_path, {"gh": _github(egress_http)})
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    assert (info.value.source, info.value.key) == (str(path), key)
    assert problem in info.value.problem
