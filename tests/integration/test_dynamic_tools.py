"""Integration tier, the real stack (gateway with its artifact store, OPA,
the executor on Docker) and the real openai SDK against the scripted
Responses server: issue 15's dynamic tools.

Session 1 defines ``summarize_csv`` through the built-in ``define_tool``
and calls it on the next turn (the loop re-lists its tools); an operator
promotes it to the principal; session 2 calls it without defining it again;
another principal never sees it. Each bad definition is refused with its
own reason, audited, and never run; an agent cannot promote; a retired tool
is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import openai
import pytest
from fixtures.responses import fcall, message
from fixtures.responses_server import ScriptedResponses, serving
from helpers import Stack, auth, tool_call

from airlock import agent
from airlock.v1 import call_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration

SOURCE = (
    "import csv, io\n"
    "rows = list(csv.DictReader(io.StringIO(ARGS['csv'])))\n"
    "col = ARGS['column']\n"
    "vals = [float(r[col]) for r in rows]\n"
    "print(f'{len(vals)} rows, {col} sum {sum(vals):g} max {max(vals):g}')\n"
)
SCHEMA = {
    "type": "object",
    "properties": {"csv": {"type": "string"}, "column": {"type": "string"}},
    "required": ["csv", "column"],
    "additionalProperties": False,
}
CSV = "region,sales\nnorth,120\nsouth,80\neast,45\n"


def definition(name: str, **over: Any) -> dict[str, Any]:
    doc = {
        "name": name,
        "description": "Summarise one numeric column of a CSV given as text.",
        "parameters": json.dumps(SCHEMA),
        "source": SOURCE,
        "base": "python",
        "network": False,
    }
    return {**doc, **over}


@pytest.fixture
def stub(stack: Stack) -> Iterator[gateway_pb2_grpc.GatewayServiceStub]:
    with grpc.insecure_channel(stack.gateway) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def operator_token(stack: Stack) -> str:
    return stack.layout.agent_token("dev-operator").read_text().strip()


def invoke(stack: Stack, token: str, tool: str, arguments: dict[str, Any], session: str) -> agent.ToolResult:
    with agent.GatewayClient(stack.gateway, token) as gateway:
        return gateway.invoke(f"call_{uuid.uuid4().hex[:12]}", "function_call", tool, json.dumps(arguments), session)


def listed(stack: Stack, token: str, session: str = "") -> dict[str, gateway_pb2.ToolInfo]:
    with agent.GatewayClient(stack.gateway, token) as gateway:
        return {t.name: t for t in gateway.list_tools(session_id=session).tools}


def declared(request: dict[str, Any]) -> set[str]:
    return {t["name"] for t in request.get("tools", []) if t.get("type") == "function"}


class DefineThenCall(ScriptedResponses):
    def __init__(self, name: str, tag: str) -> None:
        super().__init__(
            [
                [fcall(f"call_def_{tag}", "define_tool", json.dumps(definition(name)))],
                [fcall(f"call_use_{tag}", name, json.dumps({"csv": CSV, "column": "sales"}))],
                [message("Sales total 245.")],
            ]
        )


def test_define_call_promote_and_reuse_through_the_agent_loop(stack: Stack) -> None:  # noqa: PLR0915 - one lifecycle, read in order
    tag = uuid.uuid4().hex[:8]
    name = f"summarize_csv_{tag}"
    s1, s2 = f"dyn-{tag}-1", f"dyn-{tag}-2"

    # Session 1: define, then call it on the next turn.
    script = DefineThenCall(name, tag)
    with serving(script), agent.GatewayClient(stack.gateway, stack.token) as gateway:
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script.port}/v1", max_retries=0)
        result = agent.run(client, "test-model", "Summarise.", gateway, session_id=s1)
    assert result.text == "Sales total 245."
    assert "define_tool" in declared(script.requests[0])
    assert name not in declared(script.requests[0])
    assert name in declared(script.requests[1]), "the defined tool was not declared on the next turn"
    defined = json.loads(json.loads(script.requests[1]["input"][0]["output"])["stdout"])
    assert defined["defined"] == name
    assert defined["scope"] == "session"
    assert defined["created"] is True
    tool_id = defined["id"]
    used = json.loads(script.requests[2]["input"][0]["output"])
    assert used["outcome"] == "ok", used
    assert used["stdout"] == "3 rows, sales sum 245 max 120\n"

    records = {r.call_id: r for r in result.calls}
    define_decision = records[f"call_def_{tag}"].result.decision_id
    use_decision = records[f"call_use_{tag}"].result.decision_id
    (d_event,) = [e for e in stack.audit_events(define_decision) if e["kind"] == "decision"]
    assert d_event["path"] == "airlock/tool_definitions/decision"
    assert d_event["tool_definition"]["id"] == tool_id
    assert d_event["tool_definition"]["operation"] == "define"
    assert d_event["input"]["definition"]["source"] == SOURCE
    (d_exec,) = [e for e in stack.audit_events(define_decision) if e["kind"] == "execution"]
    assert d_exec["tool_definition"]["created"] is True
    use_events = {e["kind"]: e for e in stack.audit_events(use_decision)}
    assert use_events["decision"]["tool_definition"]["id"] == tool_id
    assert use_events["decision"]["tool_definition"]["operation"] == "call"
    assert use_events["decision"]["input"]["tool_definition"]["base"] == "python"
    assert use_events["decision"]["input"]["tool_definition"]["scope"] == "session"
    assert use_events["execution"]["tool_definition"]["id"] == tool_id
    # No network for a definition that asked for none.
    assert use_events["decision"]["obligations"].get("network_mode", "NETWORK_MODE_NONE") in (
        "NETWORK_MODE_NONE",
        "none",
    )

    # Defining the same thing again (another session of the same owner)
    # returns the existing id; another session does not see a session tool.
    assert name not in listed(stack, stack.token, f"dyn-{tag}-other")
    again = invoke(stack, stack.token, "define_tool", definition(name), f"dyn-{tag}-other")
    assert again.allowed
    assert json.loads(again.stdout)["id"] == tool_id
    assert json.loads(again.stdout)["created"] is False

    # An agent never promotes; an operator does.
    with grpc.insecure_channel(stack.gateway) as channel:
        gw = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            gw.PromoteToolDefinition(
                gateway_pb2.PromoteToolDefinitionRequest(id=tool_id, to="principal"), metadata=auth(stack.token)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (err.value.details() or "").startswith("forbidden: ")
        (refused,) = [
            e
            for e in stack.audit_events()
            if e["kind"] == "tool_definition" and e["decision"] == "deny" and e["tool_definition"]["id"] == tool_id
        ]
        assert refused["principal"] == "dev-agent"
        assert refused["reasons"][0]["code"] == "forbidden"
        promoted = gw.PromoteToolDefinition(
            gateway_pb2.PromoteToolDefinitionRequest(id=tool_id, to="principal"),
            metadata=auth(operator_token(stack)),
            timeout=10,
        ).definition
    assert promoted.scope == "principal"
    (promote_event,) = [
        e
        for e in stack.audit_events()
        if e["kind"] == "tool_definition" and e["decision"] == "allow" and e["tool_definition"]["id"] == tool_id
    ]
    assert promote_event["principal"] == "dev-operator"
    assert promote_event["tool_definition"]["previous_scope"] == "session"
    assert promote_event["tool_definition"]["scope"] == "principal"

    # Session 2: declared from the start, called without defining it.
    script2 = ScriptedResponses(
        [[fcall(f"call_again_{tag}", name, json.dumps({"csv": CSV, "column": "sales"}))], [message("245 again.")]]
    )
    with serving(script2), agent.GatewayClient(stack.gateway, stack.token) as gateway:
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script2.port}/v1", max_retries=0)
        result2 = agent.run(client, "test-model", "Again.", gateway, session_id=s2)
    assert name in declared(script2.requests[0])
    assert result2.text == "245 again."
    out2 = json.loads(script2.requests[1]["input"][0]["output"])
    assert out2["stdout"] == "3 rows, sales sum 245 max 120\n"

    # Another principal neither sees it nor can call it.
    assert name not in listed(stack, stack.untrusted_token, s2)
    theirs = invoke(stack, stack.untrusted_token, name, {"csv": CSV, "column": "sales"}, s2)
    assert not theirs.allowed
    assert [r.code for r in theirs.reasons] == ["tool_not_granted"]

    # Reuse counts, and `airlock tools show` (escaped text).
    show = subprocess.run(
        [sys.executable, "-m", "airlock.cli", "--home", str(stack.home), "tools", "show", tool_id],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert show.returncode == 0, show.stderr
    assert f"name:        {name}" in show.stdout
    assert "used:        2 calls in 2 sessions" in show.stdout
    assert "rows = list(csv.DictReader(io.StringIO(ARGS['csv'])))" in show.stdout
    assert stack.metric("gateway", "airlock_gateway_dynamic_tool_calls_total", {"scope": "session"}) >= 1
    assert stack.metric("gateway", "airlock_gateway_dynamic_tool_calls_total", {"scope": "principal"}) >= 1
    admitted = {"verdict": "allow", "reason": "admitted"}
    assert stack.metric("gateway", "airlock_gateway_tool_definitions_total", admitted) >= 2

    # Retired: unlisted, and a call by name is refused with its own reason.
    with grpc.insecure_channel(stack.gateway) as channel:
        gateway_pb2_grpc.GatewayServiceStub(channel).RetireToolDefinition(
            gateway_pb2.RetireToolDefinitionRequest(id=tool_id), metadata=auth(operator_token(stack)), timeout=10
        )
    assert name not in listed(stack, stack.token, s2)
    gone = invoke(stack, stack.token, name, {"csv": CSV, "column": "sales"}, s2)
    assert not gone.allowed
    assert [r.code for r in gone.reasons] == ["tool_retired"]
    assert not [e for e in stack.audit_events(gone.decision_id) if e["kind"] == "execution"]
    # Nor does a changed body bring the retired name back.
    back = invoke(stack, stack.token, "define_tool", definition(name, source=SOURCE + "\n"), s2)
    assert not back.allowed
    assert [r.code for r in back.reasons] == ["definition_retired"]


@pytest.mark.parametrize(
    ("who", "over", "code"),
    [
        ("agent", {"parameters": '{"type": "object", "properties": {"a": {"type": 7}}}'}, "schema_invalid"),
        ("agent", {"parameters": '{"type": "array"}'}, "schema_invalid"),
        ("agent", {"name": "python"}, "definition_name_taken"),
        ("agent", {"name": "define_tool"}, "definition_name_taken"),
        ("agent", {"source": "x = 1\n" * 3000}, "source_too_large"),
        ("agent", {"source": "x" * (65 * 1024)}, "arguments_too_large"),  # over the call size limit first
        ("agent", {"base": "no_such_tool"}, "base_unknown"),
        ("agent", {"base": "shell"}, "base_not_dynamic"),
        ("agent", {"base": "web_fetch"}, "base_not_granted"),
        ("agent", {"network": True}, "network_not_permitted"),
        ("agent", {"source": "import socket\nprint(socket.gethostname())\n"}, "source_imports_network"),
        # Who may define comes first: no other check answers a principal without define_tool.
        ("untrusted", {}, "tool_not_granted"),
        ("untrusted", {"name": "web_fetch"}, "tool_not_granted"),
        ("untrusted", {"base": "no_such_tool"}, "tool_not_granted"),
    ],
)
def test_a_bad_definition_is_refused_audited_and_never_run(
    stack: Stack, who: str, over: dict[str, Any], code: str
) -> None:
    token = stack.token if who == "agent" else stack.untrusted_token
    name = over.pop("name", f"bad_{uuid.uuid4().hex[:8]}")
    result = invoke(stack, token, "define_tool", definition(name, **over), f"bad-{uuid.uuid4().hex[:6]}")
    assert not result.allowed
    assert code in [r.code for r in result.reasons], result.reasons
    events = stack.audit_events(result.decision_id)
    assert [e["kind"] for e in events] == ["decision"]
    assert events[0]["decision"] == "deny"
    # No dynamic tool of that name (python and define_tool stay what they are).
    assert not listed(stack, token).get(name, gateway_pb2.ToolInfo()).definition_id


def test_a_name_another_tool_has_in_the_session_is_taken(stack: Stack) -> None:
    session = f"taken-{uuid.uuid4().hex[:8]}"
    name = f"t_{uuid.uuid4().hex[:8]}"
    first = invoke(stack, stack.token, "define_tool", definition(name), session)
    assert first.allowed
    other = invoke(stack, stack.token, "define_tool", definition(name, source="print(1)\n"), session)
    assert not other.allowed
    assert [r.code for r in other.reasons] == ["definition_name_taken"]


def test_arguments_that_fail_the_tools_own_schema_are_refused(stack: Stack) -> None:
    session = f"schema-{uuid.uuid4().hex[:8]}"
    name = f"t_{uuid.uuid4().hex[:8]}"
    assert invoke(stack, stack.token, "define_tool", definition(name), session).allowed
    bad = invoke(stack, stack.token, name, {"csv": CSV}, session)
    assert not bad.allowed
    assert [r.code for r in bad.reasons] == ["arguments_invalid"]


def test_decide_reports_the_admission_without_storing(stub: gateway_pb2_grpc.GatewayServiceStub, stack: Stack) -> None:
    name = f"t_{uuid.uuid4().hex[:8]}"
    call = tool_call("define_tool", json.dumps(definition(name)))
    call.session_id = "decide-only"
    d = stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=auth(stack.token), timeout=10).decision
    assert d.verdict == call_pb2.VERDICT_ALLOW
    assert [r.code for r in d.reasons] == ["admitted"]
    assert name not in listed(stack, stack.token, "decide-only")
