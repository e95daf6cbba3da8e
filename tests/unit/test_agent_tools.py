"""Unit tier for the agent's tool minimization: which schemas may be declared
strict, the shape of the Responses API ``tools`` array, and that the agent
package imports without the daemons' dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import FunctionToolParam, ToolParam
from pydantic import TypeAdapter

from airlock import agent
from airlock.v1 import call_pb2, gateway_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]

_CODE = {"type": "string", "description": "source"}


def _obj(props: dict[str, Any], *, required: list[str] | None = None, extra: Any = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    schema["required"] = list(props) if required is None else required
    if extra is not None:
        schema["additionalProperties"] = extra
    return schema


STRICT_TABLE = [
    ("shipped python schema", _obj({"code": _CODE}), True),
    ("no properties, closed", _obj({}), True),
    ("additionalProperties missing", _obj({"code": _CODE}, extra=None), False),
    ("additionalProperties true", _obj({"code": _CODE}, extra=True), False),
    ("additionalProperties a schema", _obj({"code": _CODE}, extra={"type": "string"}), False),
    ("optional property", _obj({"code": _CODE, "n": {"type": "integer"}}, required=["code"]), False),
    ("required lists an unknown key", _obj({"code": _CODE}, required=["code", "x"]), False),
    ("nested object closed", _obj({"o": _obj({"a": {"type": "string"}})}), True),
    ("nested object open", _obj({"o": _obj({"a": {"type": "string"}}, extra=None)}), False),
    ("array of closed objects", _obj({"xs": {"type": "array", "items": _obj({"a": {"type": "string"}})}}), True),
    ("array of open objects", _obj({"xs": {"type": "array", "items": _obj({}, extra=True)}}), False),
    ("anyOf branches closed", _obj({"v": {"anyOf": [{"type": "string"}, _obj({"a": {"type": "string"}})]}}), True),
    ("anyOf branch open", _obj({"v": {"anyOf": [{"type": "string"}, _obj({}, extra=None)]}}), False),
    ("$defs open", {**_obj({"v": {"$ref": "#/$defs/x"}}), "$defs": {"x": _obj({}, extra=None)}}, False),
    ("$defs closed", {**_obj({"v": {"$ref": "#/$defs/x"}}), "$defs": {"x": _obj({})}}, True),
    ("oneOf is not supported", _obj({"v": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}), False),
    ("allOf is not supported", _obj({"v": {"allOf": [{"type": "string"}]}}), False),
    ("patternProperties", {**_obj({}), "patternProperties": {"^x": {"type": "string"}}}, False),
    ("root is not an object", {"type": "string"}, False),
    ("root anyOf", {"anyOf": [_obj({})]}, False),
    ("boolean sub-schema", _obj({"v": True}), False),
]


@pytest.mark.parametrize(("schema", "want"), [(s, w) for _, s, w in STRICT_TABLE], ids=[n for n, _, _ in STRICT_TABLE])
def test_strict_detection(schema: dict[str, Any], want: bool) -> None:
    assert agent.schema_allows_strict(schema) is want


def _info(name: str, schema: Any, item_type: int = call_pb2.ITEM_TYPE_FUNCTION_CALL) -> gateway_pb2.ToolInfo:
    raw = schema if isinstance(schema, str) else json.dumps(schema)
    return gateway_pb2.ToolInfo(name=name, description=f"{name} tool", parameters_json_schema=raw, item_type=item_type)


def test_tools_array_declares_only_listed_function_tools() -> None:
    python_schema = _obj({"code": _CODE})
    loose = {"type": "object", "properties": {"q": {"type": "string"}}}
    listed = gateway_pb2.ListToolsResponse(
        principal="dev-agent",
        tools=[
            _info("python", python_schema),
            _info("search", loose),
            _info("patcher", _obj({}), call_pb2.ITEM_TYPE_APPLY_PATCH_CALL),  # not a function: not declared
            _info("broken", "{not json"),  # a schema we cannot read is never declared
            _info("listy", "[]"),
            _info("bad name!", _obj({})),
            _info("noargs", ""),
        ],
    )
    # No workspace: apply_patch stays undeclared (see the declaration test below).
    tools = agent.tools_for_responses(listed, apply_patch=False)
    assert tools == [
        {
            "type": "function",
            "name": "python",
            "description": "python tool",
            "parameters": python_schema,
            "strict": True,
        },
        {"type": "function", "name": "search", "description": "search tool", "parameters": loose, "strict": False},
        {
            "type": "function",
            "name": "noargs",
            "description": "noargs tool",
            "parameters": {"type": "object", "properties": {}},
            "strict": False,
        },
    ]
    adapter = TypeAdapter(FunctionToolParam)
    for tool in tools:
        adapter.validate_python(tool)


def test_empty_listing_declares_nothing() -> None:
    assert agent.tools_for_responses(gateway_pb2.ListToolsResponse()) == []


def test_agent_imports_without_daemon_dependencies() -> None:
    code = (
        "import sys\n"
        "daemons = ('airlock.gateway', 'airlock.executor')\n"
        "for name in ('docker', 'prometheus_client', 'aiohttp', 'jsonschema', *daemons):\n"
        "    sys.modules[name] = None\n"
        "import airlock.agent, airlock.agent._cli\n"
        "bad = sorted(m for m in sys.modules if m.startswith(daemons) and sys.modules[m])\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_declaration_of_custom_builtin_and_hosted_tools() -> None:
    listed = gateway_pb2.ListToolsResponse(
        tools=[
            _info("python", _obj({"code": _CODE})),
            _info("script", "", call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL),
            _info("bad name!", "", call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL),
            _info("sh_entry", _obj({}), call_pb2.ITEM_TYPE_SHELL_CALL),
            _info("legacy", _obj({}), call_pb2.ITEM_TYPE_LOCAL_SHELL_CALL),
            _info("patcher", _obj({}), call_pb2.ITEM_TYPE_APPLY_PATCH_CALL),
            _info("search", "", call_pb2.ITEM_TYPE_WEB_SEARCH_CALL),
            _info("mcp", "", call_pb2.ITEM_TYPE_MCP_CALL),
        ]
    )
    file_search: ToolParam = {"type": "file_search", "vector_store_ids": ["vs_1"]}
    mcp: ToolParam = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example/"}
    decl = agent.declare(listed, hosted=[file_search, mcp])
    assert [t["type"] for t in decl.tools] == ["function", "custom", "shell", "apply_patch", "mcp", "web_search"]
    assert decl.tools[1] == {"type": "custom", "name": "script", "description": "script tool"}
    assert decl.tools[2] == {"type": "shell", "environment": {"type": "local"}}
    assert decl.names == {"python", "script"}
    # Listed entries name the built-ins' calls, declared or not (local_shell never is).
    assert dict(decl.builtin) == {
        "shell_call": "sh_entry",
        "local_shell_call": "legacy",
        "apply_patch_call": "patcher",
    }
    assert decl.declared_items == {"shell_call", "apply_patch_call"}
    adapter = TypeAdapter(ToolParam)
    for tool in decl.tools:
        adapter.validate_python(tool)

    # file_search was configured but is not granted: never declared. Without
    # a workspace there is nowhere to apply a patch.
    no_ws = agent.declare(listed, hosted=[file_search], apply_patch=False)
    assert [t["type"] for t in no_ws.tools] == ["function", "custom", "shell", "web_search"]
    assert no_ws.declared_items == {"shell_call"}


def test_nothing_granted_declares_no_builtin_or_hosted_tool() -> None:
    listed = gateway_pb2.ListToolsResponse(tools=[_info("python", _obj({"code": _CODE}))])
    web: ToolParam = {"type": "web_search"}
    decl = agent.declare(listed, hosted=[web])
    assert [t["type"] for t in decl.tools] == ["function"]
    assert dict(decl.builtin) == {}
