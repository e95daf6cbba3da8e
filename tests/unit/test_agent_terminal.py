"""Unit tier for what ``airlock agent run`` prints (issue 10, "should fix":
escape control characters in model text). The model writes tool names,
arguments, paths the refusal messages quote, and the answer; none of it may
steer the operator's terminal (ANSI escapes, CR, BEL, C1 controls,
U+2028/2029/0085, bidi overrides). The CLI regression test drives
``run_cli``, which the code before the fix had too."""

from __future__ import annotations

import unicodedata
from typing import Any

import openai
import pytest
from fixtures.responses import cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_agent_items import FakeClient, ScriptedGateway, ok, response

from airlock import agent
from airlock.agent._cli import EXIT_OK, EXIT_UNAVAILABLE

STEERING = {"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"}


def steering(text: str, allowed: str = "") -> list[str]:
    """The characters in ``text`` that a terminal would act on."""
    return [c for c in text if c not in allowed and unicodedata.category(c) in STEERING]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("plain text, quotes \"' and \\ stay", "plain text, quotes \"' and \\ stay"),
        ("\x1b[2J\x1b[Hclear", "\\x1b[2J\\x1b[Hclear"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("\x1b]52;c;cm0gLXJmIH4=\x1b\\", "\\x1b]52;c;cm0gLXJmIH4=\\x1b\\"),  # OSC 52: write the clipboard
        ("\x9b31m", "\\x9b31m"),  # C1 CSI
        ("ok\rrm -rf ~", "ok\\rrm -rf ~"),
        ("a\nb\tc", "a\\nb\\tc"),
        ("\u2028\u2029\x85", "\\u2028\\u2029\\x85"),
        ("invoice\u202efdp.exe", "invoice\\u202efdp.exe"),
        ("\u2066\u2067\u2068\u2069\u200e\u200f\u061c", "\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("tag \U000e0041", "tag \\U000e0041"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("héllo 日本 😀 Ω", "héllo 日本 😀 Ω"),
    ],
)
def test_escape_controls(text: str, want: str) -> None:
    assert agent.escape_controls(text) == want


def test_keep_newlines_keeps_only_newline_and_tab() -> None:
    got = agent.escape_controls("line 1\n\tline 2\r\n\x1b[1mbold\u2028", keep_newlines=True)
    assert got == "line 1\n\tline 2\\r\n\\x1b[1mbold\\u2028"


@settings(max_examples=500, deadline=None)
@given(text=st.text(), keep=st.booleans())
def test_nothing_steering_survives(text: str, keep: bool) -> None:
    got = agent.escape_controls(text, keep_newlines=keep)
    assert steering(got, "\n\t" if keep else "") == []
    got.encode("utf-8")  # a lone surrogate would make the write itself fail
    if text.isascii() and text.isprintable():
        assert got == text


EVIL_ARGS = '{"command": "\\u001b]0;owned\\u0007\\u001b[2J echo hi\\r"}'
EVIL_ANSWER = "\x1b[2J\x1b[HAll good.\rrm -rf ~ \u202etxt.exe\u2028next\x85line\nline 2\twith a tab"


def _items() -> list[dict[str, Any]]:
    return [
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_f\x1b[8m",
            "name": "evil\x1b[31m",
            "arguments": EVIL_ARGS,
            "status": "completed",
        },
        {
            "type": "apply_patch_call",
            "id": "apc_1",
            "call_id": "call_p",
            "status": "completed",
            "operation": {"type": "create_file", "path": "x\x1b]0;t\x07\x00.py", "diff": "+x\n"},
        },
    ]


def _final(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def test_cli_prints_model_text_escaped(tmp_path: Any) -> None:
    def answer(tool: str, args: dict[str, Any]) -> agent.ToolResult:
        if tool.startswith("evil"):
            # Refusal messages quote the model's text (a path, a tool name).
            message = f"tool {tool} is not granted; it asked for {args['command']}"
            return agent.ToolResult(False, "d-no", (agent.Reason("tool_not_granted", message),), status="DENIED")
        return ok("x\n")

    gw = ScriptedGateway(answer)
    client = FakeClient([response("r0", _items()), response("r1", [_final(EVIL_ANSWER)])])
    code, printed, errors = cli(gw, "hi", client, workspace=tmp_path)
    assert code == EXIT_OK, errors
    body, answer_text = printed.split("--- final answer", 1)
    assert steering(body, "\n") == []  # one record per line: only the line ends
    assert steering(answer_text, "\n\t") == []  # the answer keeps its lines and tabs, nothing else
    assert "evil\\x1b[31m(" in body
    assert "\\x1b]0;owned\\x07\\x1b[2J echo hi\\r" in body  # the refusal message, shown escaped
    assert "x\\x1b]0;t\\x07\\x00.py" in body
    assert "\\x1b[2J\\x1b[HAll good.\\rrm -rf ~ \\u202etxt.exe\\u2028next\\x85line\nline 2\twith a tab" in answer_text
    assert list(tmp_path.iterdir()) == []  # and the NUL path wrote nothing


def test_cli_escapes_api_error_text() -> None:
    class Failing:
        class responses:  # noqa: N801 - mimics the SDK's attribute
            @staticmethod
            def create(**_kw: Any) -> Any:
                raise openai.OpenAIError("upstream said \x1b[2J\x1b]0;pwned\x07")

    code, _, errors = cli(ScriptedGateway(lambda _t, _a: ok()), "hi", Failing())
    assert code == EXIT_UNAVAILABLE
    assert errors == "airlock: model API: upstream said \\x1b[2J\\x1b]0;pwned\\x07\n"
