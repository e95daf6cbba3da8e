"""Strict JSON for untrusted input (tool arguments, observed items).

Python's json module accepts more than JSON: NaN and Infinity, numbers that
overflow to infinity (``1e999``), lone surrogates (``"\\ud800"``), duplicate
keys (last one wins) and nesting until the recursion limit. Each of those
either breaks something downstream (a NaN cannot be rendered into the audit
event, a lone surrogate reaches OPA as U+FFFD so the policy judges another
string than the one we hold) or lets two readers see two different values
(duplicate keys). So the gateway accepts exactly one reading of a document:

- no NaN/Infinity, and no number that is not finite as a double;
- integers within I-JSON's exact range (RFC 7493: |n| <= 2**53 - 1), because
  the audit event and OPA both hold numbers as doubles, and a larger integer
  would be recorded as a different value from the one judged;
- no duplicate keys, no lone surrogates in keys or strings;
- at most ``max_depth`` nested arrays/objects.

Anything else raises MalformedJSON, which the caller turns into
``arguments_malformed`` before any policy sees it.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Deep enough for any real tool's arguments; shallow enough that walking,
#: masking and rendering a document can never recurse dangerously.
DEFAULT_MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1


class MalformedJSON(ValueError):  # noqa: N818 - reads better at the raise sites than ...Error
    """The text is not strict JSON; the message says why (never quoting values)."""


def _no_constant(name: str) -> Any:
    raise MalformedJSON(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJSON("a number is too large to be represented (not finite)")
    return value


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:  # more digits than int() accepts
        raise MalformedJSON("an integer has too many digits") from exc
    if abs(value) > MAX_SAFE_INTEGER:
        raise MalformedJSON("an integer is outside the exact range +/-(2**53-1); send it as a string")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedJSON("an object has a duplicate key")
        out[key] = value
    return out


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedJSON(f"a {what} contains a lone surrogate (\\ud800-\\udfff)") from exc


def _walk(value: Any, max_depth: int) -> None:
    """Depth, keys and strings in one iterative pass (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node, "string")
        elif isinstance(node, dict):
            if depth >= max_depth:
                raise MalformedJSON(f"nesting is deeper than {max_depth} levels")
            for key, child in node.items():
                _check_text(key, "key")
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            if depth >= max_depth:
                raise MalformedJSON(f"nesting is deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in node)


def loads(text: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parses strict JSON; raises MalformedJSON with a message that quotes no value."""
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_no_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except MalformedJSON:
        raise
    except json.JSONDecodeError as exc:
        raise MalformedJSON(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise MalformedJSON(f"nesting is deeper than {max_depth} levels") from exc
    _walk(value, max_depth)
    return value
