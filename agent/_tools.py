"""Tool minimization: the Responses API ``tools`` array is built only from
what the gateway's ListTools returns for this principal, so the model is
never offered a tool the policy would refuse by grant. Slice 1 declares
function tools only; tools of other item types are left out."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from openai.types.responses import FunctionToolParam

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


def tools_for_responses(listed: gateway_pb2.ListToolsResponse) -> list[FunctionToolParam]:
    """The ``tools`` array for ``responses.create``: the listed tools only."""
    return [tool for info in listed.tools if (tool := function_tool(info)) is not None]
