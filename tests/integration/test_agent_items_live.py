"""Integration tier for the Responses API items beyond function calls: the
REAL openai SDK against the scripted Responses server of
test_agent_responses.py, and the real stack (gateway, OPA, executor on
Docker). The scripted model uses a custom tool, the built-in shell with two
commands one of which times out, apply_patch (create, then update, in a
workspace), a hosted web search, then is prompt-injected into a never
declared tool, an ungranted legacy local shell and function, and a shell
command the argument rules refuse, then answers. Plain and streamed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from fixtures.responses import custom_call, shell_call
from helpers import Stack
from openai.types.responses import ToolParam
from openai.types.responses.response_custom_tool_call_output_param import ResponseCustomToolCallOutputParam
from openai.types.responses.response_input_param import (
    ApplyPatchCallOutput,
    FunctionCallOutput,
    LocalShellCallOutput,
    ShellCallOutput,
)
from pydantic import TypeAdapter
from test_agent_responses import ScriptedResponses, fcall, message, serving

from airlock import agent

pytestmark = pytest.mark.integration

OUTPUT_TYPES: dict[str, TypeAdapter[Any]] = {
    "function_call_output": TypeAdapter(FunctionCallOutput),
    "custom_tool_call_output": TypeAdapter(ResponseCustomToolCallOutputParam),
    "shell_call_output": TypeAdapter(ShellCallOutput),
    "local_shell_call_output": TypeAdapter(LocalShellCallOutput),
    "apply_patch_call_output": TypeAdapter(ApplyPatchCallOutput),
}


def local_shell_call(call_id: str, argv: list[str]) -> dict[str, Any]:
    return {
        "type": "local_shell_call",
        "id": f"lsh_{uuid.uuid4().hex}",
        "call_id": call_id,
        "status": "completed",
        "action": {"type": "exec", "command": argv, "env": {}},
    }


def patch_call(call_id: str, operation: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "apply_patch_call",
        "id": f"apc_{uuid.uuid4().hex}",
        "call_id": call_id,
        "status": "completed",
        "operation": operation,
    }


def web_search(item_id: str) -> dict[str, Any]:
    return {
        "type": "web_search_call",
        "id": item_id,
        "status": "completed",
        "action": {"type": "search", "query": "airlock agent gateway"},
    }


EXPECTED_TOOLS = [
    # ListTools order (sorted names) for functions and custom tools, then the built-ins, then hosted.
    ("function", "define_tool"),
    ("function", "python"),
    ("function", "python_files"),
    ("custom", "python_script"),
    ("function", "shell"),
    ("shell", None),
    ("apply_patch", None),
    ("computer", None),
    ("web_search", None),
]


def assert_tools(tools: list[dict[str, Any]]) -> None:
    """Tool minimization: the granted tools only, each a valid SDK ToolParam."""
    assert [(t["type"], t.get("name")) for t in tools] == EXPECTED_TOOLS
    adapter = TypeAdapter(ToolParam)
    for tool in tools:
        adapter.validate_python(tool)
    by_type = {t["type"]: t for t in tools}
    assert by_type["shell"] == {"type": "shell", "environment": {"type": "local"}}
    assert by_type["custom"]["description"].startswith("Run a Python 3 program")
    text = json.dumps(tools)
    for never in ("web_fetch", "local_shell", "delete_everything"):
        assert never not in text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_builtin_custom_and_hosted_items_through_the_gateway(stack: Stack, tmp_path: Path, stream: bool) -> None:  # noqa: PLR0915 - one scripted conversation, checked end to end
    tag = uuid.uuid4().hex[:10]
    ids = {k: f"call_{k}_{tag}" for k in ("py", "sh", "new", "upd", "del", "lsh", "web", "bad", "esc")}
    search_id = f"ws_{tag}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    script = ScriptedResponses(
        [
            [
                web_search(search_id),
                custom_call(ids["py"], "python_script", "print(6*7)\n"),
                shell_call(ids["sh"], ["echo one; echo err >&2", "sleep 20; echo never"], timeout_ms=1500),
                patch_call(ids["new"], {"type": "create_file", "path": "hello.py", "diff": "+print('hello')\n"}),
            ],
            [
                patch_call(
                    ids["upd"],
                    {
                        "type": "update_file",
                        "path": "hello.py",
                        "diff": "@@\n-print('hello')\n+print('hello, airlock')\n",
                    },
                ),
                # Prompt-injected: never declared, not granted, refused by the argument rules.
                fcall(ids["del"], "delete_everything", '{"path": "/"}'),
                local_shell_call(ids["lsh"], ["cat", "/etc/passwd"]),
                fcall(ids["web"], "web_fetch", '{"url": "https://en.wikipedia.org/"}'),
                shell_call(ids["bad"], ["cat /etc/shadow"]),
                patch_call(ids["esc"], {"type": "create_file", "path": "../escape.py", "diff": "+x\n"}),
            ],
            [message("42, and hello.py says hello.")],
        ]
    )
    executed_before = stack.metric("executor", "airlock_executor_requests_total", {"method": "Run"})
    with serving(script), agent.GatewayClient(stack.gateway, stack.token) as gateway:
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script.port}/v1", max_retries=0)
        result = agent.run(client, "test-model", "Do things.", gateway, workspace=workspace, stream=stream)

    assert result.text == "42, and hello.py says hello."
    assert result.turns == 3
    assert [body.get("stream", False) for body in script.requests] == [stream] * 3
    for body in script.requests:
        assert_tools(body["tools"])

    # Every output item: the SDK's param type, its call's call_id, in call order.
    sent: dict[str, dict[str, Any]] = {}
    expected_order = [
        [ids["py"], ids["sh"], ids["new"]],
        [ids["upd"], ids["del"], ids["lsh"], ids["web"], ids["bad"], ids["esc"]],
    ]
    for turn, body in enumerate(script.requests[1:]):
        items = body["input"]
        assert [i["call_id"] for i in items] == expected_order[turn]
        for item in items:
            OUTPUT_TYPES[item["type"]].validate_python(item)
            sent[item["call_id"]] = item

    py = sent[ids["py"]]
    assert py["type"] == "custom_tool_call_output"
    assert json.loads(py["output"]) == {"exit_code": 0, "stdout": "42\n", "stderr": "", "outcome": "ok"}

    sh = sent[ids["sh"]]
    assert sh["type"] == "shell_call_output"
    assert sh["max_output_length"] == 4096
    assert [(e["stdout"], e["stderr"], e["outcome"]) for e in sh["output"]] == [
        ("one\n", "err\n", {"type": "exit", "exit_code": 0}),
        ("", "", {"type": "timeout"}),
    ]

    assert sent[ids["new"]] == {
        "type": "apply_patch_call_output",
        "call_id": ids["new"],
        "status": "completed",
        "output": "create_file hello.py: done",
    }
    assert sent[ids["upd"]]["status"] == "completed"
    assert (workspace / "hello.py").read_text() == "print('hello, airlock')\n"

    for key in ("del", "web"):
        refused = json.loads(sent[ids[key]]["output"])
        assert refused["error"] == "refused by policy"
        assert [r["code"] for r in refused["reasons"]] == ["tool_not_granted"]
    lsh = sent[ids["lsh"]]
    assert (lsh["type"], lsh["call_id"], lsh["id"]) == ("local_shell_call_output", ids["lsh"], ids["lsh"])
    assert [r["code"] for r in json.loads(lsh["output"])["reasons"]] == ["tool_not_granted"]
    [bad] = sent[ids["bad"]]["output"]
    assert bad["outcome"] == {"type": "exit", "exit_code": 1}
    assert bad["stdout"] == ""
    assert bad["stderr"].startswith("refused by policy (argument_denied:")
    esc = sent[ids["esc"]]
    assert esc["status"] == "failed"
    assert [r["code"] for r in json.loads(esc["output"])["reasons"]] == ["path_outside_workdir"]
    assert not (tmp_path / "escape.py").exists()

    # Refused calls never reached the executor: only py, the two shell commands, and the two patches ran.
    assert stack.metric("executor", "airlock_executor_requests_total", {"method": "Run"}) - executed_before == 5

    # One decision event per gateway call (a shell_call makes one per command),
    # an execution event per run, and the hosted search recorded as observed.
    ours = [e for e in stack.audit_events() if e["call_id"] in {*ids.values(), search_id}]
    decisions = [e for e in ours if e["kind"] == "decision"]
    per_call = {call_id: sum(1 for e in decisions if e["call_id"] == call_id) for call_id in ids.values()}
    assert per_call == {call_id: (2 if key == "sh" else 1) for key, call_id in ids.items()}
    allowed = {ids["py"], ids["sh"], ids["new"], ids["upd"]}
    assert {e["call_id"] for e in decisions if e["decision"] == "allow"} == allowed
    assert sorted(e["call_id"] for e in ours if e["kind"] == "execution") == sorted([*allowed, ids["sh"]])
    for event in decisions:
        assert event["session_id"] == result.session_id
        assert event["principal"] == "dev-agent"
    item_types = {e["call_id"]: e["item_type"] for e in decisions}
    assert item_types[ids["py"]] == "custom_tool_call"
    assert item_types[ids["lsh"]] == "local_shell_call"
    assert item_types[ids["new"]] == "apply_patch_call"
    timeouts = [
        (e["input"]["call"]["arguments"]["command"], int(e["obligations"]["limits"]["timeout_ms"]))
        for e in decisions
        if e["call_id"] == ids["sh"]
    ]
    # The model's timeout_ms is a request the policy clamps the profile cap down to.
    assert sorted(timeouts) == [("echo one; echo err >&2", 1500), ("sleep 20; echo never", 1500)]
    runs = {e["input"]["call"]["arguments"]["command"]: e for e in decisions if e["call_id"] == ids["sh"]}
    sleeper = [
        e for e in ours if e["kind"] == "execution" and e["decision_id"] == runs["sleep 20; echo never"]["decision_id"]
    ]
    assert [e["execution"]["outcome"] for e in sleeper] == ["timeout"]

    [observed] = [e for e in ours if e["kind"] == "observation"]
    assert (observed["decision"], observed["rpc"], observed["item_type"], observed["tool"]) == (
        "observed",
        "Observe",
        "web_search_call",
        "web_search",
    )
    assert (observed["principal"], observed["session_id"]) == ("dev-agent", result.session_id)
    assert observed["input"]["item"]["action"]["query"] == "airlock agent gateway"
    assert [(o.item_id, o.event_id) for o in result.observed] == [(search_id, observed["decision_id"])]
    assert {r.call_id: r.declared for r in result.calls}[ids["del"]] is False


def test_a_principal_without_grants_is_offered_none_of_them(stack: Stack) -> None:
    with agent.GatewayClient(stack.gateway, stack.untrusted_token) as gateway:
        decl = agent.declare(gateway.list_tools(), hosted=[{"type": "web_search"}])
    assert [(t["type"], t.get("name")) for t in decl.tools] == [("function", "python")]
    assert dict(decl.builtin) == {}


def test_observe_needs_a_token(stack: Stack) -> None:
    with (
        agent.GatewayClient(stack.gateway, None) as gateway,
        pytest.raises(agent.GatewayUnavailable, match="UNAUTHENTICATED"),
    ):
        gateway.observe(
            "web_search_call", "ws_anon", tool="web_search", status="completed", item_json="{}", session_id=""
        )
    [event] = [e for e in stack.audit_events() if e["call_id"] == "ws_anon"]
    assert (event["kind"], event["decision"], event["reasons"][0]["code"]) == ("observation", "deny", "unauthenticated")


def test_the_readme_agent_example_runs(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's example, as written, against this stack's home."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## An agent") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    default_home = 'Path("/var/lib/airlock")'
    assert default_home in code
    tag = uuid.uuid4().hex[:10]
    script = ScriptedResponses(
        [
            [patch_call(f"call_readme_{tag}", {"type": "create_file", "path": "hello.py", "diff": "+print(6*7)\n"})],
            [message("hello.py is written.")],
        ]
    )
    monkeypatch.chdir(tmp_path)
    with serving(script):
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{script.port}/v1")
        here = f"Path({str(stack.home)!r})"
        exec(compile(code.replace(default_home, here), "README.md", "exec"), {})
    assert (tmp_path / "work" / "hello.py").read_text() == "print(6*7)\n"
    assert capsys.readouterr().out == "hello.py is written. [('apply_patch_call', 'allowed')]\n"
    assert script.requests[0]["model"] == "gpt-4.1"
