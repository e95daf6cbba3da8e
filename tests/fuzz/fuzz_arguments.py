"""Coverage-guided fuzz target (atheris) for the gateway's argument parser.

Whatever bytes arrive, the parser either refuses them with MalformedJSON or
returns a JSON object that every later stage can carry unchanged: it
serialises as strict JSON (no NaN/Infinity), every string encodes as UTF-8
(no lone surrogates reach OPA), and the audit event can hold and render it.
Any other exception is a finding.

    python tests/fuzz/fuzz_arguments.py tests/fuzz/corpus/arguments -max_total_time=60
"""

from __future__ import annotations

import json
import sys

import atheris

# Heavy dependencies first, uninstrumented: coverage guidance is for our code.
import google.protobuf.json_format  # noqa: F401
import jsonschema  # noqa: F401
import re2  # noqa: F401

from airlock.v1 import audit_pb2

with atheris.instrument_imports(include=["gateway"]):
    from airlock.gateway._audit import render
    from airlock.gateway._input import parse_arguments
    from airlock.gateway._json import MalformedJSON


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # a gRPC string field is valid UTF-8 by the time it reaches us
    for item_type in ("function_call", "custom_tool_call"):
        try:
            value = parse_arguments(item_type, text)
        except MalformedJSON:
            continue
        if not isinstance(value, dict):
            raise TypeError("arguments must parse to an object")
        json.dumps(value, allow_nan=False).encode("utf-8")
        event = audit_pb2.AuditEvent(kind="decision")
        event.input.update({"call": {"arguments": value}})
        render(event)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
