"""Tool minimization: the Responses API ``tools`` array is built only from
what the gateway's ListTools returns for this principal, so the model is
never offered a tool the policy would refuse by grant.

Per listed item type: function tools with their JSON Schema (``strict`` where
the schema allows), custom tools (free text), the built-in ``shell`` with a
local environment, ``apply_patch`` (only when the agent has a workspace to
apply patches to), and hosted tools (web search, ...) when the application
supplied their configuration or, for web search, needs none. ``local_shell``
(the legacy built-in) is never declared: its calls are still executed through
the gateway if a model emits them."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from openai.types.responses import (
    ApplyPatchToolParam,
    ComputerToolParam,
    ComputerUsePreviewToolParam,
    CustomToolParam,
    FunctionShellToolParam,
    FunctionToolParam,
    ToolParam,
)

from airlock.v1 import call_pb2, gateway_pb2

_log = logging.getLogger(__name__)

#: The Responses API's rule for function names.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Schema keywords strict mode (Structured Outputs) does not accept. A schema
#: using any of them is declared non-strict rather than rejected by the API.
_UNSUPPORTED_IN_STRICT = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
    }
)
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def _is_object(schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    return t == "object" or (isinstance(t, list) and "object" in t) or "properties" in schema


def _object_ok(schema: dict[str, Any]) -> bool:
    props = schema.get("properties", {})
    required = schema.get("required", [])
    return (
        isinstance(props, dict)
        and schema.get("additionalProperties") is False
        and isinstance(required, list)
        and set(required) == set(props)
        and all(_strict_ok(p) for p in props.values())
    )


def _children(schema: dict[str, Any]) -> list[Any]:
    children: list[Any] = [schema["items"]] if "items" in schema else []
    children.extend(schema.get("anyOf", []))
    for defs_key in ("$defs", "definitions"):
        defs = schema.get(defs_key, {})
        if isinstance(defs, dict):
            children.extend(defs.values())
    return children


def _strict_ok(schema: Any) -> bool:
    # A `true`/`false` schema has no strict form; tuple validation
    # (prefixItems) and the combinators in _UNSUPPORTED_IN_STRICT neither.
    if not isinstance(schema, dict) or "prefixItems" in schema or _UNSUPPORTED_IN_STRICT & schema.keys():
        return False
    if _is_object(schema) and not _object_ok(schema):
        return False
    return all(_strict_ok(c) for c in _children(schema))


def schema_allows_strict(schema: dict[str, Any]) -> bool:
    """True when ``schema`` can be declared with ``strict: true``: the root is
    an object, every object has ``additionalProperties: false`` and lists all
    its properties in ``required``, and no keyword strict mode rejects is used."""
    return _is_object(schema) and "anyOf" not in schema and _strict_ok(schema)


def function_tool(info: gateway_pb2.ToolInfo) -> FunctionToolParam | None:
    """One ListTools entry as a function tool, or None when it cannot be one."""
    if info.item_type != call_pb2.ITEM_TYPE_FUNCTION_CALL:
        return None
    if not _NAME.match(info.name):
        _log.warning("tool %r: not a valid Responses API function name; not declared", info.name)
        return None
    try:
        parameters = json.loads(info.parameters_json_schema) if info.parameters_json_schema else dict(_EMPTY_OBJECT)
    except json.JSONDecodeError:
        _log.warning("tool %r: parameters are not JSON; not declared", info.name)
        return None
    if not isinstance(parameters, dict):
        _log.warning("tool %r: parameters are not a JSON object; not declared", info.name)
        return None
    return {
        "type": "function",
        "name": info.name,
        "description": info.description,
        "parameters": parameters,
        "strict": schema_allows_strict(parameters),
    }


def tools_for_responses(
    listed: gateway_pb2.ListToolsResponse, *, hosted: Sequence[ToolParam] = (), apply_patch: bool = True
) -> list[ToolParam]:
    """The ``tools`` array for ``responses.create``: the listed tools only."""
    return declare(listed, hosted=hosted, apply_patch=apply_patch).tools


#: Wire enum -> Responses API item type, for the built-in client-executed items.
BUILTIN_ITEMS: dict[int, str] = {
    call_pb2.ITEM_TYPE_SHELL_CALL: "shell_call",
    call_pb2.ITEM_TYPE_LOCAL_SHELL_CALL: "local_shell_call",
    call_pb2.ITEM_TYPE_APPLY_PATCH_CALL: "apply_patch_call",
    call_pb2.ITEM_TYPE_COMPUTER_CALL: "computer_call",
}
#: The two shapes of the computer-use tool the SDK defines: ``computer``
#: (a batch of ``actions`` per call) and ``computer_use_preview`` (one
#: ``action``, with the display declared).
ComputerShape = Literal["computer", "computer_use_preview"]
#: The shapes, for command lines.
COMPUTER_SHAPES: tuple[ComputerShape, ...] = ("computer", "computer_use_preview")
#: Wire enum -> the hosted tool ``type`` whose items it grants.
HOSTED_TOOL_TYPES: dict[int, str] = {
    call_pb2.ITEM_TYPE_WEB_SEARCH_CALL: "web_search",
    call_pb2.ITEM_TYPE_FILE_SEARCH_CALL: "file_search",
    call_pb2.ITEM_TYPE_CODE_INTERPRETER_CALL: "code_interpreter",
    call_pb2.ITEM_TYPE_MCP_CALL: "mcp",
}
#: Hosted tools that need no configuration of the application's to declare.
_HOSTED_DEFAULTS: dict[str, ToolParam] = {"web_search": {"type": "web_search"}}
#: A hosted tool param's ``type`` -> the grant it needs (dated variants included).
_HOSTED_ALIASES = {"web_search_2025_08_26": "web_search", "web_search_preview": "web_search"}


@dataclass(frozen=True)
class Declaration:
    """The ``tools`` array and what the loop needs to know about it."""

    tools: list[ToolParam] = field(default_factory=list)
    names: frozenset[str] = frozenset()
    """Declared function and custom tool names."""
    builtin: Mapping[str, str] = field(default_factory=dict)
    """Built-in item type -> the registry entry the gateway listed for it
    (listed, not necessarily declared: the name a call is sent with)."""
    declared_items: frozenset[str] = frozenset()
    """Built-in item types the model was offered (shell_call, apply_patch_call)."""


def custom_tool(info: gateway_pb2.ToolInfo) -> CustomToolParam | None:
    """One ListTools entry as a custom (free text) tool, or None."""
    if info.item_type != call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL:
        return None
    if not _NAME.match(info.name):
        _log.warning("tool %r: not a valid Responses API tool name; not declared", info.name)
        return None
    return {"type": "custom", "name": info.name, "description": info.description}


def _hosted_type(tool: Mapping[str, Any]) -> str:
    t = str(tool.get("type", ""))
    return _HOSTED_ALIASES.get(t, t)


def _hosted_tools(granted: set[str], hosted: Sequence[ToolParam]) -> list[ToolParam]:
    """The application's hosted tools that are granted, plus the granted ones
    that need no configuration and were not given."""
    out = []
    for tool in hosted:
        if _hosted_type(tool) in granted:
            out.append(tool)
        else:
            _log.info("hosted tool %r is not granted; not declared", tool.get("type"))
    given = {_hosted_type(t) for t in hosted}
    for kind in sorted(granted - given):
        if kind in _HOSTED_DEFAULTS:
            out.append(_HOSTED_DEFAULTS[kind])
        else:
            _log.info("hosted tool %r is granted but needs configuration (hosted=...); not declared", kind)
    return out


def computer_tool(info: gateway_pb2.ToolInfo, shape: ComputerShape) -> ToolParam:
    """The computer-use tool in the shape asked for."""
    if shape == "computer_use_preview":
        env = info.environment if info.environment in ("browser", "linux") else "browser"
        preview: ComputerUsePreviewToolParam = {
            "type": "computer_use_preview",
            "display_width": info.display.width,
            "display_height": info.display.height,
            "environment": env,  # type: ignore[typeddict-item]
        }
        return preview
    computer: ComputerToolParam = {"type": "computer"}
    return computer


def declare(
    listed: gateway_pb2.ListToolsResponse,
    *,
    hosted: Sequence[ToolParam] = (),
    apply_patch: bool = True,
    computer: ComputerShape = "computer",
) -> Declaration:
    """Builds the ``tools`` array from the listing. ``hosted`` are the
    application's hosted tool configurations (e.g. a file_search with its
    vector stores); each is declared only when the gateway lists a grant of
    its type. ``apply_patch=False`` (no workspace) leaves apply_patch out.
    A listed computer_call tool is declared in the ``computer`` shape."""
    tools: list[ToolParam] = []
    names: set[str] = set()
    builtin: dict[str, str] = {}
    granted_hosted: set[str] = set()
    declared_items: set[str] = set()
    desktop: gateway_pb2.ToolInfo | None = None
    for info in listed.tools:
        if (fn := function_tool(info)) is not None:
            tools.append(fn)
            names.add(fn["name"])
        elif (custom := custom_tool(info)) is not None:
            tools.append(custom)
            names.add(custom["name"])
        elif info.item_type in BUILTIN_ITEMS:
            builtin.setdefault(BUILTIN_ITEMS[info.item_type], info.name)
            if info.item_type == call_pb2.ITEM_TYPE_COMPUTER_CALL:
                desktop = desktop or info
        elif info.item_type in HOSTED_TOOL_TYPES:
            granted_hosted.add(HOSTED_TOOL_TYPES[info.item_type])
    if "shell_call" in builtin:
        # Local environment only: commands come back to us and go through the
        # gateway. A hosted shell (container_auto) would run unseen.
        shell: FunctionShellToolParam = {"type": "shell", "environment": {"type": "local"}}
        tools.append(shell)
        declared_items.add("shell_call")
    if "apply_patch_call" in builtin and apply_patch:
        patch: ApplyPatchToolParam = {"type": "apply_patch"}
        tools.append(patch)
        declared_items.add("apply_patch_call")
    if desktop is not None:
        tools.append(computer_tool(desktop, computer))
        declared_items.add("computer_call")
    tools.extend(_hosted_tools(granted_hosted, hosted))
    return Declaration(tools, frozenset(names), builtin, frozenset(declared_items))
