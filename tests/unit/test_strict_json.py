"""gateway._json: one reading of a document, or arguments_malformed.

Each rejected case broke something on the old parser: NaN/inf and huge
numbers killed the audit writer (a Struct cannot hold them), a lone
surrogate reached OPA as U+FFFD, duplicate keys meant two readers could see
two values, and deep nesting exhausted the recursion limit downstream."""

from __future__ import annotations

import json

import pytest

from airlock.gateway._input import parse_arguments
from airlock.gateway._json import MAX_SAFE_INTEGER, MalformedJSON, loads


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param('{"x": NaN}', "NaN is not a JSON number", id="nan"),
        pytest.param('{"x": Infinity}', "Infinity is not a JSON number", id="infinity"),
        pytest.param('{"x": -Infinity}', "-Infinity is not a JSON number", id="minus-infinity"),
        pytest.param('{"x": 1e999}', "not finite", id="overflowing-float"),
        pytest.param('{"x": -1e999}', "not finite", id="overflowing-negative-float"),
        pytest.param('{"x": 1' + "0" * 309 + "}", "outside the exact range", id="integer-above-1e308"),
        pytest.param(f'{{"x": {MAX_SAFE_INTEGER + 1}}}', "outside the exact range", id="integer-above-2-53"),
        pytest.param('{"x": 1' + "0" * 5000 + "}", "too many digits", id="integer-too-many-digits"),
        pytest.param('{"x": "\\ud800"}', "lone surrogate", id="lone-high-surrogate"),
        pytest.param('{"x": "a\\udfffb"}', "lone surrogate", id="lone-low-surrogate"),
        pytest.param('{"\\ud800": 1}', "lone surrogate", id="surrogate-key"),
        pytest.param('{"x": 1, "x": 2}', "duplicate key", id="duplicate-key"),
        pytest.param('{"a": {"x": 1, "x": 1}}', "duplicate key", id="nested-duplicate-key"),
        pytest.param('{"x": ' + "[" * 40 + "]" * 40 + "}", "deeper than 32", id="deep-arrays"),
        pytest.param('{"x": ' + '{"y": ' * 40 + "1" + "}" * 40 + "}", "deeper than 32", id="deep-objects"),
        pytest.param("[" * 100_000 + "]" * 100_000, "deeper than 32", id="very-deep"),
        pytest.param('{"x": 1', "not valid JSON", id="truncated"),
    ],
)
def test_rejected(text: str, why: str) -> None:
    with pytest.raises(MalformedJSON, match=why):
        loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"x": 1.5, "y": -0, "z": 1e308, "i": 9007199254740991, "j": -9007199254740991}',
        '{"emoji": "\\ud83d\\ude00", "plain": "\u00e9"}',
        '{"x": ' + "[" * 31 + "]" * 31 + "}",
        '{"a": {"x": 1}, "b": {"x": 1}}',
    ],
)
def test_accepted(text: str) -> None:
    assert loads(text) == json.loads(text)


def test_messages_never_quote_values() -> None:
    secret = "CorrectHorseBatteryStaple"
    for text in (f'{{"p": "{secret}", "p": 1}}', f'{{"p": "{secret}", "n": NaN}}', f'{{"{secret}": "\\ud800"}}'):
        with pytest.raises(MalformedJSON) as info:
            loads(text)
        assert secret not in str(info.value)


def test_arguments_must_be_an_object_and_custom_tools_take_text() -> None:
    with pytest.raises(MalformedJSON, match="must be a JSON object"):
        parse_arguments("function_call", "[1]")
    assert parse_arguments("function_call", "  ") == {}
    assert parse_arguments("custom_tool_call", "NaN {") == {"input": "NaN {"}
