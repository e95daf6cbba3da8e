"""From a call as received to the policy's question: field caps, argument
parsing (strict JSON, airlock/gateway/_json.py), JSON-Schema errors, and the policy
input document (policies/schema/input.schema.json).

Shared by the gateway and by ``airlock decide --offline``, so both ask the
policy exactly the same question. No grpc, no I/O.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import referencing

from airlock.common.wire import LIMIT_KEYS
from airlock.gateway import _json
from airlock.gateway._images import ImagePins
from airlock.gateway._model import CallInput, Limits, Principal
from airlock.gateway._registry import Registry

#: Longest value of each identifying field. They are capped before anything
#: parses, decides or records them, so a 3 MB call_id cannot become a 5 MB
#: fsynced audit line. Tool names are at most 64 characters (the Responses
#: API's limit); ids from the Responses API are far below 256.
FIELD_CAPS: Mapping[str, int] = {"call_id": 256, "tool": 128, "session_id": 256}
#: Bad input is recorded as received, up to this many characters.
RAW_AUDIT_CHARS = 4096
#: At most this many schema errors are reported; the rest are counted.
MAX_SCHEMA_ERRORS = 16


class InputError(ValueError):
    """A call the gateway refuses before asking the policy; ``code`` is the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters cut]"


def check_fields(inp: CallInput) -> None:
    """Raises InputError for a missing or oversized identifying field."""
    call = inp.call
    for name, limit in FIELD_CAPS.items():
        value: str = getattr(call, name)
        if len(value) > limit:
            raise InputError("field_too_long", f"call.{name} is {len(value)} characters; the limit is {limit}")
    if not call.call_id:
        raise InputError("call_id_missing", "call.call_id is required")
    if not call.item_type:
        raise InputError("item_type_missing", "call.item_type is required")
    if not call.tool:
        raise InputError("tool_missing", "call.tool is required")


def parse_arguments(item_type: str, raw: str, *, max_depth: int = _json.DEFAULT_MAX_DEPTH) -> Any:
    """The model's raw arguments as a JSON object. Custom tools take free
    text; every other item carries a JSON object in strict JSON. Raises
    ValueError (MalformedJSON) when malformed."""
    if item_type == "custom_tool_call":
        return {"input": raw}
    value = _json.loads(raw, max_depth=max_depth) if raw.strip() else {}
    if not isinstance(value, dict):
        raise _json.MalformedJSON(f"arguments must be a JSON object, got {type(value).__name__}")
    return value


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    # An empty registry: a reference that is not inside the schema fails
    # (an error, so a deny) instead of jsonschema fetching it over HTTP or
    # from a file, as its deprecated default retrieval would.
    return jsonschema.Draft202012Validator(json.loads(schema_json), registry=referencing.Registry())


def _describe(error: jsonschema.ValidationError) -> str:
    """What failed, built from the schema alone: jsonschema's own messages
    quote the instance ("'CorrectHorse…' is too long"), and an argument value
    must never be copied into a reason, a log line or the audit event."""
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    keyword = str(error.validator)
    expected = error.validator_value
    if keyword == "required" and isinstance(error.instance, dict) and isinstance(expected, list):
        missing = [name for name in expected if name not in error.instance]
        return f"{where}: missing required properties {json.dumps(missing)[:200]}"
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        # Counted, not named: a property name is the caller's text too, and
        # one that is a secret would be echoed into the reason.
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = sum(1 for k in error.instance if k not in allowed)
        return f"{where}: {extra} properties not allowed by the schema"
    if keyword in ("type", "enum", "const", "format", "pattern"):
        return f"{where}: does not match '{keyword}' {json.dumps(expected)[:200]}"
    if keyword in ("maxLength", "minLength", "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum"):
        return f"{where}: violates '{keyword}' {json.dumps(expected)}"
    if keyword in ("maxItems", "minItems", "maxProperties", "minProperties", "uniqueItems", "multipleOf"):
        return f"{where}: violates '{keyword}' {json.dumps(expected)}"
    return f"{where}: fails schema keyword '{keyword}'"


def schema_errors(schema: Mapping[str, Any], arguments: Any) -> list[str]:
    """The arguments' schema violations, described without their values."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path])
    out = [_describe(e) for e in errors[:MAX_SCHEMA_ERRORS]]
    if len(errors) > MAX_SCHEMA_ERRORS:
        out.append(f"(and {len(errors) - MAX_SCHEMA_ERRORS} more)")
    return out


@dataclass(frozen=True)
class PolicyQuestion:
    """The policy input and the parsed arguments it was built from."""

    document: dict[str, Any]
    arguments: Any


def principal_doc(principal: Principal) -> dict[str, Any]:
    return {"id": principal.id, "profile": principal.profile, "authn": principal.authn, "roles": list(principal.roles)}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def build_policy_input(
    registry: Registry,
    inp: CallInput,
    principal: Principal,
    *,
    decision_id: str,
    arguments: Any,
    counters: Mapping[str, int],
    session: Mapping[str, Any] | None = None,
    definition: Mapping[str, Any] | None = None,
    images: ImagePins | None = None,
) -> dict[str, Any]:
    """The policy input (policies/schema/input.schema.json). ``session``
    is the session facts (airlock/gateway/_sessions.py SessionView.facts).
    ``definition`` is a dynamic tool's (``input.tool_definition``): the
    entry is then its base's, and its own schema checks the arguments.
    ``images`` gives the tool image's pin and scan (``input.image``)."""
    call = inp.call
    name = definition["base"] if definition is not None else call.tool
    tool = registry.get(name)
    data = registry.tool_data(name) if tool is not None else None
    schema = definition["parameters"] if definition is not None else data["parameters"] if data is not None else None
    errors = schema_errors(schema, arguments) if schema is not None else []
    extra = {"tool_definition": dict(definition)} if definition is not None else {}
    return {
        **extra,
        "principal": principal_doc(principal),
        # The tool's registry entry (null when unregistered), so rules can
        # read it from the input; data.registry holds the same entries.
        "tool": data,
        # The tool image's pinned digest and last scan, beside the entry
        # (which stays exactly data.registry's): null when not pinned.
        "image": images.facts(data["image"]) if images is not None and data is not None else None,
        "call": {
            "call_id": call.call_id,
            "item_type": call.item_type,
            "tool": call.tool,
            "arguments": arguments,
            "arguments_errors": errors,
            "arguments_bytes": len(call.arguments.encode()),
            "session_id": call.session_id,
            # Only the fields asked for, and only when any was: airlock.limits
            # takes the minimum with the caps, so a request can only tighten.
            **_requested(call.requested_limits),
        },
        "counters": dict(counters),
        "session": dict(session) if session is not None else no_session_facts(call.session_id),
        "request": {"rpc": inp.rpc, "decision_id": decision_id, "time": now()},
    }


def no_session_facts(session_id: str) -> dict[str, Any]:
    """``input.session`` when nothing is known of the session's sandboxes."""
    return {"id": session_id, "sandbox": {"exists": False, "count": 0, "age_seconds": 0, "calls": 0}}


def _requested(limits: Limits | None) -> dict[str, Any]:
    asked = {k: getattr(limits, k) for k in LIMIT_KEYS if getattr(limits, k) > 0} if limits else {}
    return {"requested_limits": asked} if asked else {}
