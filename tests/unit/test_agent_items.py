"""Unit tier for the agent's non-function items, with a scripted gateway at
the seam: custom tool, shell (one gateway call per command, exit/timeout
outcomes, max_output_length, refusals in stderr), legacy local shell,
apply_patch against a workspace, and hosted items recorded through Observe.
Every output item is validated against the SDK's own param types."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures.responses import cli, ok, refused, response
from openai.types.responses import Response
from openai.types.responses.response_custom_tool_call_output_param import ResponseCustomToolCallOutputParam
from openai.types.responses.response_input_param import ApplyPatchCallOutput, LocalShellCallOutput, ShellCallOutput
from pydantic import TypeAdapter

from airlock import agent
from airlock.agent._cli import EXIT_OK
from airlock.cli._main import _parser
from airlock.common.stackfile import Metrics, Principal, StackFile, write_stack
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2

SHELL_OUTPUT = TypeAdapter(ShellCallOutput)
LOCAL_SHELL_OUTPUT = TypeAdapter(LocalShellCallOutput)
PATCH_OUTPUT = TypeAdapter(ApplyPatchCallOutput)
CUSTOM_OUTPUT = TypeAdapter(ResponseCustomToolCallOutputParam)

Answer = Callable[[str, dict[str, Any]], agent.ToolResult]


class ScriptedGateway:
    """Lists the built-ins; answers each Invoke with ``answer(tool, args)``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.invoked: list[dict[str, Any]] = []
        self.observed: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def list_tools(self, session_id: str = "") -> gateway_pb2.ListToolsResponse:
        def info(name: str, item_type: int) -> gateway_pb2.ToolInfo:
            return gateway_pb2.ToolInfo(name=name, description=name, item_type=item_type)

        return gateway_pb2.ListToolsResponse(
            tools=[
                info("script", call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL),
                info("shell_builtin", call_pb2.ITEM_TYPE_SHELL_CALL),
                info("apply_patch", call_pb2.ITEM_TYPE_APPLY_PATCH_CALL),
                info("web_search", call_pb2.ITEM_TYPE_WEB_SEARCH_CALL),
            ]
        )

    def invoke(
        self,
        call_id: str,
        item_type: str,
        tool: str,
        arguments_raw: str,
        session_id: str,
        *,
        requested_timeout_ms: int = 0,
    ) -> agent.ToolResult:
        args = json.loads(arguments_raw) if item_type != "custom_tool_call" else {"input": arguments_raw}
        with self._lock:
            self.invoked.append(
                {
                    "call_id": call_id,
                    "item_type": item_type,
                    "tool": tool,
                    "args": args,
                    "timeout": requested_timeout_ms,
                }
            )
        return self.answer(tool, args)

    def observe(self, item_type: str, item_id: str, *, tool: str, status: str, item_json: str, session_id: str) -> str:
        self.observed.append({"item_type": item_type, "item_id": item_id, "tool": tool, "session": session_id})
        return f"ev-{item_id}"

    def end_session(self, *, session_id: str = "", sandbox_id: str = "") -> list[executor_pb2.SessionInfo]:
        del session_id, sandbox_id
        return []


def ctx(gw: ScriptedGateway, workspace: Path | None = None) -> agent.ItemContext:
    decl = agent.declare(gw.list_tools(), apply_patch=workspace is not None)
    return agent.ItemContext(gw, "sess", decl, 1, agent.Workspace(workspace) if workspace is not None else None)


def shell_call(commands: list[str], **action: Any) -> Any:
    from openai.types.responses import ResponseFunctionShellToolCall  # noqa: PLC0415 - local to the helper

    return ResponseFunctionShellToolCall.model_validate(
        {
            "type": "shell_call",
            "id": "sh_1",
            "call_id": "call_sh",
            "status": "completed",
            "action": {"commands": commands, **action},
            "environment": {"type": "local"},
        }
    )


def test_shell_call_runs_one_gateway_call_per_command_and_shapes_each_outcome() -> None:
    answers = {
        "echo hi": ok("hi\n"),
        "sleep 9": ok(outcome="timeout", exit_code=-1),
        "false": ok(exit_code=1),
        "cat /etc/shadow": refused(),
        "python3 -c 'x'*10**9": ok(outcome="oom_killed", exit_code=-1),
    }
    gw = ScriptedGateway(lambda _tool, args: answers[args["command"]])
    record = agent.execute_item(ctx(gw), shell_call(list(answers), timeout_ms=1500))

    assert [i["args"] for i in gw.invoked] == [{"command": c} for c in answers]
    assert {(i["call_id"], i["item_type"], i["tool"], i["timeout"]) for i in gw.invoked} == {
        ("call_sh", "shell_call", "shell_builtin", 1500)
    }
    out = record.output_item
    SHELL_OUTPUT.validate_python(out)
    assert out is not None
    assert out["type"] == "shell_call_output"
    assert out["call_id"] == "call_sh"
    assert "max_output_length" not in out
    entries = list(out["output"])
    assert [e["outcome"] for e in entries] == [
        {"type": "exit", "exit_code": 0},
        {"type": "timeout"},
        {"type": "exit", "exit_code": 1},
        {"type": "exit", "exit_code": 1},  # refused: exit 1, the refusal in stderr
        {"type": "exit", "exit_code": 1},  # OOM never reads as success
    ]
    assert entries[0]["stdout"] == "hi\n"
    assert entries[3]["stdout"] == ""
    assert entries[3]["stderr"].startswith("refused by policy (argument_denied: not this) decision_id=d-no")
    assert "[airlock: oom_killed]" in entries[4]["stderr"]
    # The record's result is the first refusal; every call's result is kept.
    assert record.result.allowed is False
    assert len(record.results) == 5
    assert record.declared is True


def test_shell_output_respects_max_output_length_over_stdout_and_stderr() -> None:
    gw = ScriptedGateway(lambda _t, _a: ok("abcdef", "uvwxyz", exit_code=3))
    record = agent.execute_item(ctx(gw), shell_call(["x", "y"], max_output_length=8))
    out = record.output_item
    SHELL_OUTPUT.validate_python(out)
    assert out is not None
    assert out["max_output_length"] == 8
    for entry in out["output"]:
        assert (entry["stdout"], entry["stderr"]) == ("abcdef", "uv")
        assert entry["outcome"] == {"type": "exit", "exit_code": 3}
    assert gw.invoked[0]["timeout"] == 0  # no timeout_ms asked, none requested


def test_custom_tool_call_sends_the_free_text_and_answers_with_custom_output() -> None:
    from openai.types.responses import ResponseCustomToolCall  # noqa: PLC0415 - local to the test

    gw = ScriptedGateway(lambda _t, args: ok(f"ran {len(args['input'])} chars\n"))
    item = ResponseCustomToolCall.model_validate(
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_c", "name": "script", "input": 'print("{x}")\n'}
    )
    record = agent.execute_item(ctx(gw), item)
    assert gw.invoked[0]["args"] == {"input": 'print("{x}")\n'}
    out = record.output_item
    CUSTOM_OUTPUT.validate_python(out)
    assert out == {"type": "custom_tool_call_output", "call_id": "call_c", "output": record.output}
    assert json.loads(record.output)["stdout"] == "ran 13 chars\n"


def test_local_shell_call_output_carries_the_call_id() -> None:
    from openai.types.responses.response_output_item import LocalShellCall  # noqa: PLC0415 - local to the test

    gw = ScriptedGateway(lambda _t, _a: refused("tool_not_granted"))
    item = LocalShellCall.model_validate(
        {
            "type": "local_shell_call",
            "id": "lsh_1",
            "call_id": "call_ls",
            "status": "completed",
            "action": {"type": "exec", "command": ["ls", "-l"], "env": {}, "timeout_ms": 2000},
        }
    )
    record = agent.execute_item(ctx(gw), item)
    # Not listed: sent under its item type, which no registry entry is called.
    assert gw.invoked[0]["tool"] == "local_shell_call"
    assert gw.invoked[0]["args"] == {"type": "exec", "command": ["ls", "-l"], "env": {}, "timeout_ms": 2000}
    assert gw.invoked[0]["timeout"] == 2000
    out = record.output_item
    LOCAL_SHELL_OUTPUT.validate_python(out)
    assert out is not None
    assert out["call_id"] == "call_ls"  # type: ignore[typeddict-item]
    assert out["id"] == "call_ls"
    assert json.loads(out["output"])["error"] == "refused by policy"
    assert record.declared is False


def patch_call(op: dict[str, Any], call_id: str = "call_p") -> Any:
    from openai.types.responses import ResponseApplyPatchToolCall  # noqa: PLC0415 - local to the helper

    return ResponseApplyPatchToolCall.model_validate(
        {"type": "apply_patch_call", "id": f"apc_{call_id}", "call_id": call_id, "status": "completed", "operation": op}
    )


def test_apply_patch_update_sends_the_current_text_and_writes_the_sandbox_result(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    gw = ScriptedGateway(lambda _t, args: ok(args["original"].replace("1", "2")))
    op = {"type": "update_file", "path": "src/a.py", "diff": "-x = 1\n+x = 2\n"}
    record = agent.execute_item(ctx(gw, tmp_path), patch_call(op))

    assert gw.invoked[0]["args"] == {**op, "original": "x = 1\n"}
    assert gw.invoked[0]["tool"] == "apply_patch"
    out = record.output_item
    PATCH_OUTPUT.validate_python(out)
    assert out == {
        "type": "apply_patch_call_output",
        "call_id": "call_p",
        "status": "completed",
        "output": "update_file src/a.py: done",
    }
    assert (tmp_path / "src" / "a.py").read_text() == "x = 2\n"
    assert "original" not in json.loads(record.arguments)  # the file text stays out of the record


@pytest.mark.parametrize(
    ("op", "answer", "why"),
    [
        pytest.param(
            {"type": "update_file", "path": "a.py", "diff": "+y\n"}, refused(), "refused by policy", id="denied"
        ),
        pytest.param(
            {"type": "update_file", "path": "a.py", "diff": "-q\n"},
            ok(stderr="context not found\n", exit_code=1),
            "context not found",
            id="diff-does-not-apply",
        ),
        pytest.param(
            {"type": "update_file", "path": "a.py", "diff": "+y\n"},
            ok("partial", output_truncated=True),
            "cut by the sandbox's output cap",
            id="truncated",
        ),
        pytest.param(
            {"type": "create_file", "path": "../escape.py", "diff": "+y\n"}, ok("y\n"), "outside", id="dotdot"
        ),
        pytest.param(
            {"type": "create_file", "path": "/etc/cron.d/x", "diff": "+y\n"}, ok("y\n"), "outside", id="absolute"
        ),
        pytest.param({"type": "update_file", "path": "link/x", "diff": "+y\n"}, ok("y\n"), "outside", id="symlink"),
        pytest.param({"type": "update_file", "path": "new.py", "diff": "+y\n"}, ok("y\n"), "no such file", id="gone"),
    ],
)
def test_apply_patch_failures_write_nothing(tmp_path: Path, op: dict[str, Any], answer: Any, why: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.py").write_text("x\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("secret\n")
    (ws / "link").symlink_to(outside)
    before = {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()}

    gw = ScriptedGateway(lambda _t, _a: answer)
    record = agent.execute_item(ctx(gw, ws), patch_call(op))
    out = record.output_item
    PATCH_OUTPUT.validate_python(out)
    assert out is not None
    assert out["status"] == "failed"
    assert why in str(out.get("output"))
    assert {p: p.read_text() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert len(gw.invoked) == 1  # decided and audited all the same
    assert gw.invoked[0]["args"]["original"] in ("", "x\n")  # nothing outside the workspace was read


def test_apply_patch_create_and_delete(tmp_path: Path) -> None:
    gw = ScriptedGateway(lambda _t, args: ok("print(1)\n" if args["type"] == "create_file" else ""))
    create = agent.execute_item(
        ctx(gw, tmp_path), patch_call({"type": "create_file", "path": "/work/d/n.py", "diff": "+print(1)\n"})
    )
    assert create.output_item is not None
    assert create.output_item["status"] == "completed"  # type: ignore[typeddict-item]
    assert (tmp_path / "d" / "n.py").read_text() == "print(1)\n"  # /work stands for the workspace
    delete = agent.execute_item(ctx(gw, tmp_path), patch_call({"type": "delete_file", "path": "d/n.py"}, "call_d"))
    assert gw.invoked[1]["args"] == {"type": "delete_file", "path": "d/n.py", "diff": "", "original": "print(1)\n"}
    PATCH_OUTPUT.validate_python(delete.output_item)
    assert not (tmp_path / "d" / "n.py").exists()


def test_apply_patch_without_a_workspace_is_decided_but_writes_nothing() -> None:
    gw = ScriptedGateway(lambda _t, _a: ok("y\n"))
    record = agent.execute_item(ctx(gw), patch_call({"type": "create_file", "path": "n.py", "diff": "+y\n"}))
    assert record.output_item is not None
    assert record.output_item["status"] == "failed"  # type: ignore[typeddict-item]
    assert record.declared is False  # no workspace: apply_patch is not offered


class FakeClient:
    def __init__(self, script: list[Response]) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Responses:
            def create(self, **kwargs: Any) -> Response:
                outer.requests.append(kwargs)
                return script.pop(0)

        self.responses = Responses()


WEB_SEARCH = {
    "type": "web_search_call",
    "id": "ws_1",
    "status": "completed",
    "action": {"type": "search", "query": "airlock"},
}
HOSTED_SHELL = {
    "type": "shell_call",
    "id": "sh_hosted",
    "call_id": "call_hosted",
    "status": "completed",
    "action": {"commands": ["ls"]},
    "environment": {"type": "container_reference", "container_id": "cntr_1"},
}
FINAL = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "done", "annotations": []}],
}


def test_hosted_items_are_observed_never_executed_or_answered() -> None:
    gw = ScriptedGateway(lambda _t, _a: ok("hi\n"))
    local = shell_call(["echo hi"]).model_dump(mode="json")
    client = FakeClient(
        [response("r0", [WEB_SEARCH, HOSTED_SHELL, local]), response("r1", [WEB_SEARCH | {"id": "ws_2"}, FINAL])]
    )
    result = agent.run(client, "m", "hi", gw)  # type: ignore[arg-type]

    assert result.text == "done"
    assert [(o.item_type, o.item_id, o.tool, o.event_id, o.turn) for o in result.observed] == [
        ("web_search_call", "ws_1", "web_search", "ev-ws_1", 1),
        ("shell_call", "sh_hosted", "shell", "ev-sh_hosted", 1),
        ("web_search_call", "ws_2", "web_search", "ev-ws_2", 2),
    ]
    assert {o["session"] for o in gw.observed} == {"r0"}
    # Only the local shell call ran, and only it is answered.
    assert [i["call_id"] for i in gw.invoked] == ["call_sh"]
    assert [i["call_id"] for i in client.requests[1]["input"]] == ["call_sh"]
    assert [t["type"] for t in client.requests[0]["tools"]] == ["custom", "shell", "web_search"]


def test_max_tool_calls_counts_each_shell_command() -> None:
    gw = ScriptedGateway(lambda _t, _a: ok())
    client = FakeClient([response("r0", [shell_call(["a", "b", "c"]).model_dump(mode="json")])])
    with pytest.raises(agent.LoopLimitError, match="3 tool calls would exceed max_tool_calls=2"):
        agent.run(client, "m", "hi", gw, max_tool_calls=2)  # type: ignore[arg-type]
    assert gw.invoked == []


@pytest.mark.parametrize(
    ("path", "want"),
    [("a.py", "a.py"), ("d/./b.py", "d/b.py"), ("/work/c.py", "c.py"), ("/work", None), ("", None), ("a/../b", None)],
)
def test_confine(tmp_path: Path, path: str, want: str | None) -> None:
    got = agent.confine(tmp_path, path)
    assert got == (tmp_path.resolve() / want if want else None)


def test_cli_prints_each_command_decision_and_the_hosted_items(tmp_path: Path) -> None:
    assert _parser().parse_args(["agent", "run", "--workspace", str(tmp_path), "hi"]).workspace == tmp_path
    assert _parser().parse_args(["agent", "run", "hi"]).workspace is None
    gw = ScriptedGateway(lambda _t, args: refused() if "shadow" in args["command"] else ok("x\n"))
    local = shell_call(["echo x", "cat /etc/shadow"]).model_dump(mode="json")
    client = FakeClient([response("r0", [WEB_SEARCH, local]), response("r1", [FINAL])])
    code, printed, errors = cli(gw, "hi", client, workspace=tmp_path)
    assert code == EXIT_OK, errors
    lines = printed.splitlines()
    assert lines[0].startswith('[turn 1] shell_builtin({"commands":["echo x","cat /etc/shadow"]')
    assert lines[0].endswith("call_id=call_sh [shell_call]")
    assert lines[1:5] == [
        "  ALLOW decision=d-ok -> ok exit_code=0",
        "  DENY argument_denied decision=d-no",
        "    argument_denied: not this",
        "[turn 1] hosted web_search_call ws_1: observed (audit event ev-ws_1)",
    ]
    assert lines[-1] == "done"


@pytest.mark.parametrize(
    "fields",
    [
        {"call_id": "call_\ud800"},
        {"tool": "py\udfff"},
        {"arguments_raw": '{"code": "print(\ud800)"}'},
    ],
)
def test_model_text_utf8_cannot_carry_is_refused_not_raised(fields: dict[str, str]) -> None:
    # The real client, nothing listening: the call never gets as far as the network.
    call = {"call_id": "call_1", "item_type": "function_call", "tool": "python", "arguments_raw": "{}"} | fields
    with agent.GatewayClient("127.0.0.1:9", None, timeout_s=1) as gw:
        result = gw.invoke(call["call_id"], call["item_type"], call["tool"], call["arguments_raw"], "s")
    assert not result.allowed
    assert [r.code for r in result.reasons] == ["arguments_malformed"]
    assert result.decision_id == ""
    json.dumps(agent.function_call_output("call_1", result), ensure_ascii=False).encode("utf-8")


def test_gateway_from_stack_reads_the_principals_own_token(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_text(f"tok-{name}\n")
    write_stack(
        tmp_path / "stack.json",
        StackFile(
            gateway="127.0.0.1:9",
            opa="http://127.0.0.1:1",
            opa_socket="/nonexistent",
            policy_revision="r",
            shadow="off",
            metrics=Metrics("", "", ""),
            audit_log="",
            audit_public_key="",
            executor_socket="",
            principal="a",
            principals={
                "a": Principal("default", str(tmp_path / "a"), "airlock-agent"),
                "b": Principal("untrusted", str(tmp_path / "b"), "airlock-untrusted"),
            },
            pids={},
            separated=False,
            dev=False,
        ),
    )
    for principal, want in ((None, "tok-a"), ("b", "tok-b")):
        with agent.GatewayClient.from_stack(tmp_path, principal=principal) as gw:
            assert gw._metadata == (("authorization", f"Bearer {want}"),)
    with pytest.raises(KeyError, match="no principal 'c' in this stack; known: a, b"):
        agent.GatewayClient.from_stack(tmp_path, principal="c")
