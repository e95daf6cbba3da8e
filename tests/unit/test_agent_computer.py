"""Unit tier: the agent loop's computer_call handling against a fake
gateway: the tool declared in both SDK shapes, one batch per call, the
screenshot output item, a refusal answered with the current screen and a
note, and pending safety checks. The real desktop is
tests/integration/test_computer_use.py."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fixtures.responses import cli, computer_call, message, response
from openai.types.responses import ToolParam
from openai.types.responses.response_input_param import ComputerCallOutput
from pydantic import TypeAdapter
from test_agent_loop import FakeClient

from airlock import agent
from airlock.v1 import call_pb2, gateway_pb2

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()


class DesktopGateway:
    """Lists the computer tool; refuses batches with a keypress; safety
    checks are acknowledged only when ``acknowledge``."""

    def __init__(self, *, acknowledge: bool = False) -> None:
        self.acknowledge = acknowledge
        self.invoked: list[tuple[str, str, str, str]] = []

    def list_tools(self, session_id: str = "") -> gateway_pb2.ListToolsResponse:
        del session_id
        info = gateway_pb2.ToolInfo(
            name="computer",
            description="a desktop",
            item_type=call_pb2.ITEM_TYPE_COMPUTER_CALL,
            display=call_pb2.Display(width=1024, height=768),
            environment="browser",
        )
        return gateway_pb2.ListToolsResponse(tools=[info])

    def invoke(
        self, call_id: str, item_type: str, tool: str, arguments_raw: str, session_id: str, **_: Any
    ) -> agent.ToolResult:
        del session_id
        self.invoked.append((call_id, item_type, tool, arguments_raw))
        args = json.loads(arguments_raw)
        if any(a["type"] == "keypress" for a in args["actions"]):
            return agent.ToolResult(False, "d-deny", (agent.Reason("computer_key_denied", "no"),))
        if args.get("pending_safety_checks") and not self.acknowledge:
            return agent.ToolResult(False, "d-sc", (agent.Reason("safety_checks_not_acknowledged", "no"),))
        decision = call_pb2.Decision(decision_id="d-ok", verdict=call_pb2.VERDICT_ALLOW)
        decision.obligations.computer.acknowledge_safety_checks = self.acknowledge
        return agent.ToolResult(
            True, "d-ok", (agent.Reason("allowed", "ok"),), stdout=PNG + "\n", outcome="ok", decision=decision
        )

    def end_session(self, **_: Any) -> list[Any]:
        return []


@pytest.mark.parametrize(
    ("shape", "want"),
    [
        ("computer", {"type": "computer"}),
        (
            "computer_use_preview",
            {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "browser"},
        ),
    ],
)
def test_the_tool_is_declared_in_either_shape(shape: Any, want: dict[str, Any]) -> None:
    decl = agent.declare(DesktopGateway().list_tools(), computer=shape)
    assert decl.tools == [want]
    TypeAdapter(ToolParam).validate_python(decl.tools[0])


def test_a_batch_is_one_call_and_the_screenshot_is_the_output() -> None:
    gw = DesktopGateway()
    batch = [{"type": "click", "x": 10, "y": 20, "button": "left"}, {"type": "type", "text": "hi"}]
    client = FakeClient([response("r0", [computer_call("c1", actions=batch)]), response("r1", [message("done")])])
    result = agent.run(client, "m", "hi", gw)  # type: ignore[arg-type]
    assert result.text == "done"
    ((call_id, item_type, tool, raw),) = gw.invoked
    assert (call_id, item_type, tool) == ("c1", "computer_call", "computer")
    assert json.loads(raw) == {"actions": batch}
    (out,) = client.responses.requests[1]["input"]
    TypeAdapter(ComputerCallOutput).validate_python(out)
    assert out["output"] == {"type": "computer_screenshot", "image_url": f"data:image/png;base64,{PNG}"}


def test_a_refused_batch_runs_nothing_and_the_model_sees_the_screen_and_why() -> None:
    gw = DesktopGateway()
    item = computer_call("c1", action={"type": "keypress", "keys": ["CTRL", "L"]})
    client = FakeClient([response("r0", [item]), response("r1", [message("ok")])])
    agent.run(client, "m", "hi", gw)  # type: ignore[arg-type]
    # The refused call, then a screenshot-only call for the output.
    assert [json.loads(raw)["actions"] for *_, raw in gw.invoked] == [
        [{"type": "keypress", "keys": ["CTRL", "L"]}],
        [{"type": "screenshot"}],
    ]
    out, note = client.responses.requests[1]["input"]
    assert out["type"] == "computer_call_output"
    assert note["role"] == "developer"
    assert "computer_key_denied" in note["content"]


def test_pending_safety_checks_stop_the_loop_unless_acknowledged() -> None:
    checks = [{"id": "sc_1", "code": "malicious_instructions", "message": "careful"}]
    item = computer_call("c1", action={"type": "click", "x": 1, "y": 2, "button": "left"}, checks=checks)
    with pytest.raises(agent.ComputerUseError) as err:
        agent.run(FakeClient([response("r0", [item])]), "m", "hi", DesktopGateway())  # type: ignore[arg-type]
    assert err.value.code == "safety_checks_not_acknowledged"
    client = FakeClient([response("r0", [item]), response("r1", [message("ok")])])
    agent.run(client, "m", "hi", DesktopGateway(acknowledge=True))  # type: ignore[arg-type]
    (out,) = client.responses.requests[1]["input"]
    assert out["acknowledged_safety_checks"] == checks


def test_the_command_line_declares_the_chosen_shape_and_a_safety_stop_exits_1() -> None:
    """`airlock agent run --computer computer_use_preview` declares that shape;
    a stop on unacknowledged safety checks is a clear message and exit 1
    (the run ended before an answer), never a traceback."""
    client = FakeClient([response("r0", [message("ok")])])
    code, _, _ = cli(DesktopGateway(), "hi", client, computer="computer_use_preview")
    assert code == 0
    assert [t["type"] for t in client.responses.requests[0]["tools"]] == ["computer_use_preview"]
    checks = [{"id": "sc_1", "code": "malicious_instructions", "message": "careful"}]
    item = computer_call("c1", action={"type": "screenshot"}, checks=checks)
    code, _, err = cli(DesktopGateway(), "hi", FakeClient([response("r0", [item])]))
    assert code == 1
    assert err.startswith("airlock: safety_checks_not_acknowledged: ")
