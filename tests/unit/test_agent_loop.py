"""Unit tier for the agent loop, with a fake model client and a fake gateway
at the seams: the output items it sends back (shape, order, refusals), the
session id and chaining, the loop limits, and how a refusal status is read."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
import openai
import pytest
from fixtures.responses import fcall, message, response
from google.protobuf import any_pb2
from google.rpc import status_pb2
from openai.types.responses import Response
from openai.types.responses.response_input_param import FunctionCallOutput
from pydantic import TypeAdapter

from airlock import agent
from airlock.v1 import call_pb2, executor_pb2, gateway_pb2

SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
        "additionalProperties": False,
    }
)


class FakeResponses:
    def __init__(self, script: list[Response]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []

    def create(self, **kwargs: Any) -> Response:
        self.requests.append(kwargs)
        return self.script.pop(0)


class FakeClient:
    def __init__(self, script: list[Response]) -> None:
        self.responses = FakeResponses(script)


class FakeGateway:
    """Allows ``python``; refuses anything else with tool_not_granted. Call
    ``slow`` sleeps so that later calls finish first."""

    def __init__(self) -> None:
        self.invoked: list[tuple[str, str, str, str, str]] = []
        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()
        self.ended: list[str] = []
        self.end_fails = False

    def list_tools(self, session_id: str = "") -> gateway_pb2.ListToolsResponse:
        return gateway_pb2.ListToolsResponse(
            tools=[
                gateway_pb2.ToolInfo(
                    name="python",
                    description="run python",
                    parameters_json_schema=SCHEMA,
                    item_type=call_pb2.ITEM_TYPE_FUNCTION_CALL,
                )
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
        del requested_timeout_ms
        with self._lock:
            self.invoked.append((call_id, item_type, tool, arguments_raw, session_id))
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.2 if call_id == "slow" else 0.05)
            if tool != "python":
                return agent.ToolResult(
                    allowed=False,
                    decision_id=f"d-{call_id}",
                    reasons=(agent.Reason("tool_not_granted", f"tool {tool!r} is not granted"),),
                    status="PERMISSION_DENIED",
                )
            return agent.ToolResult(
                allowed=True,
                decision_id=f"d-{call_id}",
                reasons=(agent.Reason("allowed", "ok"),),
                stdout=f"out-{call_id}\n",
                exit_code=0,
                outcome="ok",
            )
        finally:
            with self._lock:
                self.active -= 1

    def observe(self, item_type: str, item_id: str, *, tool: str, status: str, item_json: str, session_id: str) -> str:
        del item_type, tool, status, item_json, session_id
        return f"ev-{item_id}"

    def end_session(self, *, session_id: str = "", sandbox_id: str = "") -> list[executor_pb2.SessionInfo]:
        self.ended.append(session_id or sandbox_id)
        if self.end_fails:
            raise agent.GatewayUnavailable("EndSession failed: UNAVAILABLE")
        return []


OUTPUT_ITEM = TypeAdapter(FunctionCallOutput)


def test_output_for_allowed_and_denied_calls() -> None:
    allowed = agent.ToolResult(True, "d1", (agent.Reason("allowed", "ok"),), "42\n", "", 0, "ok")
    item = agent.function_call_output("call_1", allowed)
    OUTPUT_ITEM.validate_python(item)
    assert item["type"] == "function_call_output"
    assert item["call_id"] == "call_1"
    assert json.loads(str(item["output"])) == {"exit_code": 0, "stdout": "42\n", "stderr": "", "outcome": "ok"}

    denied = agent.ToolResult(False, "d2", (agent.Reason("tool_not_granted", "no"),), status="PERMISSION_DENIED")
    assert json.loads(agent.output_text_for(denied)) == {
        "error": "refused by policy",
        "decision_id": "d2",
        "reasons": [{"code": "tool_not_granted", "message": "no"}],
    }

    failed = agent.ToolResult(True, "d3", (agent.Reason("allowed", "ok"),), outcome="error", error="no image")
    assert json.loads(agent.output_text_for(failed))["error"] == "no image"


def test_loop_runs_calls_concurrently_keeps_order_and_chains() -> None:
    arguments = '{"code":  "print(1)" }'  # odd spacing: must reach the gateway byte for byte
    client = FakeClient(
        [
            response(
                "resp_1",
                [fcall("slow", "python", arguments), fcall("fast", "python", "{}"), fcall("evil", "rm_rf", "{}")],
            ),
            response("resp_2", [message("done")]),
        ]
    )
    gw = FakeGateway()
    seen: list[str] = []
    result = agent.run(client, "m", "hi", gw, parallel=3, on_call=lambda r: seen.append(r.call_id))  # type: ignore[arg-type]

    assert result.text == "done"
    assert result.session_id == "resp_1"
    assert result.turns == 2
    assert gw.peak >= 2, "calls of one response should overlap"
    assert {c[0]: c for c in gw.invoked}["slow"] == ("slow", "function_call", "python", arguments, "resp_1")
    assert [r.call_id for r in result.calls] == ["slow", "fast", "evil"] == seen
    assert [r.declared for r in result.calls] == [True, True, False]

    first, second = client.responses.requests
    assert first["input"] == "hi"
    assert [t["name"] for t in first["tools"]] == ["python"]
    assert first["previous_response_id"] is openai.omit
    assert second["previous_response_id"] == "resp_1"
    items = second["input"]
    for item in items:
        OUTPUT_ITEM.validate_python(item)
    assert [i["call_id"] for i in items] == ["slow", "fast", "evil"]
    assert json.loads(items[0]["output"])["stdout"] == "out-slow\n"
    refused = json.loads(items[2]["output"])
    assert refused["error"] == "refused by policy"
    assert [r["code"] for r in refused["reasons"]] == ["tool_not_granted"]


def test_given_session_id_is_used() -> None:
    client = FakeClient([response("resp_1", [fcall("a", "python", "{}")]), response("resp_2", [message("ok")])])
    gw = FakeGateway()
    result = agent.run(client, "m", "hi", gw, session_id="sess-7")  # type: ignore[arg-type]
    assert result.session_id == "sess-7"
    assert gw.invoked[0][4] == "sess-7"


def test_the_session_is_ended_when_the_run_returns_or_raises() -> None:
    """The session's sandbox ends with the run (EndSession), also when the
    loop raises; end_session=False keeps it for a later run; a failure to
    end it does not hide the run's result."""
    script = [response("resp_1", [fcall("a", "python", "{}")]), response("resp_2", [message("ok")])]
    gw = FakeGateway()
    agent.run(FakeClient(script), "m", "hi", gw)  # type: ignore[arg-type]
    assert gw.ended == ["resp_1"]

    gw = FakeGateway()
    agent.run(FakeClient(list(script)), "m", "hi", gw, session_id="keep-me", end_session=False)  # type: ignore[arg-type]
    assert gw.ended == []

    gw = FakeGateway()
    looping = [response(f"r{i}", [fcall(f"c{i}", "python", "{}")]) for i in range(3)]
    with pytest.raises(agent.LoopLimitError):
        agent.run(FakeClient(looping), "m", "hi", gw, max_turns=2, session_id="s-9")  # type: ignore[arg-type]
    assert gw.ended == ["s-9"]

    gw = FakeGateway()
    gw.end_fails = True
    result = agent.run(FakeClient(list(script)), "m", "hi", gw)  # type: ignore[arg-type]
    assert (result.text, gw.ended) == ("ok", ["resp_1"])


def test_parallel_one_is_sequential() -> None:
    client = FakeClient(
        [response("r1", [fcall("a", "python", "{}"), fcall("b", "python", "{}")]), response("r2", [message("x")])]
    )
    gw = FakeGateway()
    agent.run(client, "m", "hi", gw, parallel=1)  # type: ignore[arg-type]
    assert gw.peak == 1


def test_max_turns_stops_without_running_the_last_calls() -> None:
    script = [response(f"r{i}", [fcall(f"c{i}", "python", "{}")]) for i in range(3)]
    gw = FakeGateway()
    with pytest.raises(agent.LoopLimitError, match="max_turns=2") as info:
        agent.run(FakeClient(script), "m", "hi", gw, max_turns=2)  # type: ignore[arg-type]
    assert info.value.code == "loop_limit"
    assert [c[0] for c in gw.invoked] == ["c0"]


def test_max_tool_calls_stops_before_the_excess_response_runs() -> None:
    script = [
        response("r0", [fcall("a", "python", "{}"), fcall("b", "python", "{}")]),
        response("r1", [fcall("c", "python", "{}"), fcall("d", "python", "{}")]),
    ]
    gw = FakeGateway()
    with pytest.raises(agent.LoopLimitError, match="max_tool_calls=3"):
        agent.run(FakeClient(script), "m", "hi", gw, max_tool_calls=3)  # type: ignore[arg-type]
    assert sorted(c[0] for c in gw.invoked) == ["a", "b"]


COMPUTER_CALL = {
    "type": "computer_call",
    "id": "cu_1",
    "call_id": "x",
    "action": {"type": "screenshot"},
    "pending_safety_checks": [],
    "status": "completed",
}


def test_a_computer_call_without_a_screenshot_stops_the_loop() -> None:
    # Not granted here, so refused, and so is the screenshot that would show
    # the model the screen: nothing to answer the call with.
    item = COMPUTER_CALL
    with pytest.raises(agent.ComputerUseError) as err:
        agent.run(FakeClient([response("r0", [item])]), "m", "hi", FakeGateway())  # type: ignore[arg-type]
    assert err.value.code == "no_screenshot"


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, bytes], ...]) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailers


def test_denied_from_error_reads_the_decision_in_the_status_details() -> None:
    decision = call_pb2.Decision(
        decision_id="dec-1",
        verdict=call_pb2.VERDICT_DENY,
        reasons=[call_pb2.Reason(code="tool_not_granted", message="tool 'web_fetch' is not granted")],
    )
    detail = any_pb2.Any()
    detail.Pack(decision)
    status = status_pb2.Status(code=grpc.StatusCode.PERMISSION_DENIED.value[0], message="denied", details=[detail])
    exc = FakeRpcError(
        grpc.StatusCode.PERMISSION_DENIED, "denied", (("grpc-status-details-bin", status.SerializeToString()),)
    )
    result = agent.denied_from_error(exc)
    assert result.allowed is False
    assert result.decision_id == "dec-1"
    assert result.reasons == (agent.Reason("tool_not_granted", "tool 'web_fetch' is not granted"),)
    assert result.status == "PERMISSION_DENIED"


def test_denied_from_error_without_details_still_has_a_reason() -> None:
    result = agent.denied_from_error(FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "bad token", ()))
    assert result.allowed is False
    assert result.reasons == (agent.Reason("unauthenticated", "bad token"),)
