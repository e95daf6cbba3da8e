"""What the gateway checks in a define_tool call before the policy sees it:
the shape of the arguments, the name, the schema (a valid draft 2020-12
object schema with local references only) and the sizes. The policy decides
the rest (who may define, on which base, what the source may do)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema

from airlock.gateway._json import MalformedJSON
from airlock.gateway._json import loads as strict_loads
from airlock.gateway._registry import BUILTIN_TOOLS
from airlock.gateway.tooldefs._model import Definition, DefinitionError

#: Names a model may give its tools: what the Responses API accepts as a
#: function name, starting with a letter.
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
#: Ceilings the gateway holds whatever the policy says (a profile's
#: max_source_bytes can only be lower).
MAX_SOURCE_BYTES = 64 * 1024
MAX_DESCRIPTION_CHARS = 1024
MAX_SCHEMA_BYTES = 16 * 1024
MAX_SCHEMA_DEPTH = 16
MAX_ENUM = 64
#: The JSON Schema a model may write: a subset that validates in time linear
#: in the arguments' size. Each argument value meets exactly one subschema
#: (properties, items, additionalProperties), nothing is fetched or resolved
#: ($ref, $dynamicRef, $id: an attack review made the gateway fetch a URL and
#: read a local file through them), and no keyword can run away (pattern and
#: friends are backtracking regexes; uniqueItems is quadratic; the
#: combinators multiply).
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "description",
        "title",
        "default",
        "examples",
        "$schema",
    }
)

DESCRIPTION = (
    "Define a new tool of your own that you (and, if an operator promotes it, your later sessions) can call "
    "like any other tool. Its body is Python run on a registered base tool (e.g. python) with that tool's "
    "limits; the call's arguments are in the global dict ARGS, and whatever it prints is the result. The "
    "policy decides whether it is admitted; the next turn lists it by name."
)
#: define_tool's arguments. Strict-mode compatible: every property is
#: required, and the tool's own schema travels as JSON text.
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The new tool's name: a letter, then letters, digits or _."},
        "description": {"type": "string", "description": "What the tool does, for the model."},
        "parameters": {
            "type": "string",
            "description": 'JSON Schema (draft 2020-12) of its arguments, as JSON text: {"type": "object", ...}.',
        },
        "source": {"type": "string", "description": "The Python body; arguments are in the dict ARGS."},
        "base": {"type": "string", "description": "The registered tool it runs on, e.g. python."},
        "network": {"type": "boolean", "description": "Whether it needs network (only on a base that has it)."},
    },
    "required": ["name", "description", "parameters", "source", "base", "network"],
    "additionalProperties": False,
}


def parse_definition(arguments: Any, registered: Mapping[str, Any]) -> Definition:
    """The definition the arguments describe; raises DefinitionError with a
    reason code of its own for each way it can be wrong. ``registered`` is
    the registry's tools (a name may shadow none of them)."""
    errors = sorted(jsonschema.Draft202012Validator(PARAMETERS).iter_errors(arguments), key=str)
    if errors:
        raise DefinitionError("definition_invalid", f"define_tool arguments: {errors[0].message[:200]}")
    name, source, base = arguments["name"], arguments["source"], arguments["base"]
    if not NAME_RE.fullmatch(name):
        raise DefinitionError("definition_name_invalid", "the name must be a letter then letters, digits or _ (<= 64)")
    if name in registered or name in BUILTIN_TOOLS:
        raise DefinitionError("definition_name_taken", f"{name!r} is a registered or built-in tool")
    if len(arguments["description"]) > MAX_DESCRIPTION_CHARS:
        raise DefinitionError("definition_invalid", f"the description is over {MAX_DESCRIPTION_CHARS} characters")
    if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise DefinitionError("source_too_large", f"the source is over the gateway's {MAX_SOURCE_BYTES}-byte limit")
    if base not in registered:
        raise DefinitionError("base_unknown", f"base {base[:64]!r} is not a registered tool")
    return Definition(
        name=name,
        description=arguments["description"],
        parameters=_schema(arguments["parameters"]),
        source=source,
        base=base,
        network=arguments["network"],
    )


def _schema(text: str) -> dict[str, Any]:
    if len(text.encode("utf-8")) > MAX_SCHEMA_BYTES:
        raise DefinitionError("schema_invalid", f"the parameters schema is over {MAX_SCHEMA_BYTES} bytes")
    try:
        schema = strict_loads(text, max_depth=MAX_SCHEMA_DEPTH)
    except MalformedJSON as exc:
        raise DefinitionError("schema_invalid", f"parameters is not JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise DefinitionError("schema_invalid", 'parameters must be an object schema ({"type": "object", ...})')
    _check_subset(schema, "(root)")
    if schema.get("$schema", DRAFT_2020_12) != DRAFT_2020_12:
        raise DefinitionError("schema_invalid", f"$schema must be {DRAFT_2020_12} (or absent)")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise DefinitionError("schema_invalid", f"parameters is not a valid JSON Schema: {exc.message[:200]}") from exc
    return schema


DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _check_subset(node: Any, where: str) -> None:
    """Every schema in the tree uses only SCHEMA_KEYWORDS."""
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise DefinitionError("schema_invalid", f"{where}: a schema must be an object or a boolean")
    unknown = sorted(k for k in node if k not in SCHEMA_KEYWORDS)
    if unknown:
        allowed = ", ".join(sorted(SCHEMA_KEYWORDS))
        raise DefinitionError(
            "schema_invalid", f"{where}: {unknown[0][:64]!r} is not allowed in a tool's schema (allowed: {allowed})"
        )
    enum = node.get("enum")
    if isinstance(enum, list) and len(enum) > MAX_ENUM:
        raise DefinitionError("schema_invalid", f"{where}: enum has more than {MAX_ENUM} values")
    props = node.get("properties", {})
    if isinstance(props, dict):
        for name, sub in props.items():
            _check_subset(sub, f"{where}/properties/{name[:64]}")
    for key in ("items", "additionalProperties"):
        if key in node:
            _check_subset(node[key], f"{where}/{key}")


def program(definition: Definition, arguments: Any) -> str:
    """The Python program a call runs on its base tool: the definition's
    source, compiled under its own name (tracebacks keep its line numbers),
    with the call's arguments in ARGS. Both travel as string literals, never
    as code."""
    args_json = json.dumps(arguments, ensure_ascii=False)
    filename = f"<tool {definition.name}>"
    return (
        "import json as _json\n"
        f"ARGS = _json.loads({args_json!r})\n"
        f"exec(compile({definition.source!r}, {filename!r}, 'exec'), "
        "{'__name__': '__main__', 'ARGS': ARGS})\n"
    )
