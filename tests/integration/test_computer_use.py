"""Integration tier, the real stack (gateway, OPA, the executor on Docker
with the desktop sandbox) and the real openai SDK against the scripted
Responses server: issue 16's computer use through ``agent.run``.

The desktop's test page (deploy/images/desktop/index.html): a blue button
at x 0..400, y 0..300 that paints the area x 0..1024, y 400..600 red; a text
field at x 450..1000, y 50..100 whose text is echoed in black on white at
x 0..1024, y 650..760. The scripted model takes a screenshot, clicks the
button, then types, and each output's PNG is read back pixel by pixel."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import docker
import openai
import pytest
from fixtures.png import Image, decode_png
from fixtures.responses import computer_call, message
from fixtures.responses_server import ScriptedResponses, serving
from helpers import Stack

from airlock import agent

pytestmark = pytest.mark.integration

RED, WHITE = (255, 0, 0), (255, 255, 255)
TARGET = (0, 400, 1024, 600)
ECHO = (0, 650, 1024, 760)
BUTTON = {"type": "click", "x": 200, "y": 150, "button": "left"}
FIELD = {"type": "click", "x": 700, "y": 75, "button": "left"}


def screenshot(request: dict[str, Any], index: int = 0) -> Image:
    out = request["input"][index]
    assert out["type"] == "computer_call_output", out
    url = out["output"]["image_url"]
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return decode_png(base64.b64decode(url[len(prefix) :]))


def share(img: Image, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> float:
    pixels = img.region(*box, step=16)
    return sum(1 for p in pixels if p == colour) / len(pixels)


def dark(img: Image, box: tuple[int, int, int, int]) -> int:
    return sum(1 for p in img.region(*box, step=2) if max(p) < 100)


def run(stack: Stack, turns: list[list[dict[str, Any]]], shape: Any) -> tuple[ScriptedResponses, agent.AgentResult]:
    script = ScriptedResponses(turns)
    with serving(script), agent.GatewayClient(stack.gateway, stack.token, timeout_s=120) as gateway:
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script.port}/v1", max_retries=0)
        result = agent.run(client, "test-model", "Use the page.", gateway, computer=shape)
    return script, result


@pytest.mark.parametrize("shape", ["computer_use_preview", "computer"])
def test_click_and_type_in_the_desktop_through_the_agent_loop(stack: Stack, shape: str) -> None:
    tag = uuid.uuid4().hex[:8]
    if shape == "computer":
        # The batch shape: field click and typing in one call.
        typing = [computer_call(f"c3_{tag}", actions=[FIELD, {"type": "type", "text": "hello"}])]
        turns = [
            [computer_call(f"c1_{tag}", actions=[{"type": "screenshot"}])],
            [computer_call(f"c2_{tag}", actions=[BUTTON])],
            typing,
            [message("done")],
        ]
    else:
        turns = [
            [computer_call(f"c1_{tag}", action={"type": "screenshot"})],
            [computer_call(f"c2_{tag}", action=BUTTON)],
            [computer_call(f"c3_{tag}", action={"type": "type", "text": "hello"})],
            [message("done")],
        ]
        # The preview shape's single action: the field gets focus from a
        # click of its own first.
        turns.insert(2, [computer_call(f"c2b_{tag}", action=FIELD)])
    script, result = run(stack, turns, shape)
    assert result.text == "done"
    declared = script.requests[0]["tools"]
    assert [t["type"] for t in declared if t["type"].startswith("computer")] == [shape]

    first = screenshot(script.requests[1])
    assert (first.width, first.height) == (1024, 768)
    assert share(first, TARGET, WHITE) > 0.95, "the target area was not white before the click"
    clicked = screenshot(script.requests[2])
    assert share(clicked, TARGET, RED) > 0.95, "the click did not paint the target area"
    typed = screenshot(script.requests[-1])
    assert dark(clicked, ECHO) == 0
    assert dark(typed, ECHO) > 50, "the typed text did not reach the label"

    # Audited by reference: each execution names its screenshot's digest.
    c2 = next(r for r in result.calls if r.call_id == f"c2_{tag}")
    (execution,) = [e for e in stack.audit_events(c2.result.decision_id) if e["kind"] == "execution"]
    assert len(execution["execution"]["screenshot_sha256"]) == 64
    assert int(execution["execution"]["screenshot_bytes"]) > 1000
    (decision,) = [e for e in stack.audit_events(c2.result.decision_id) if e["kind"] == "decision"]
    assert decision["input"]["call"]["arguments"]["actions"] == [BUTTON]
    assert (
        stack.metric("gateway", "airlock_gateway_computer_actions_total", {"action": "click", "verdict": "allow"}) >= 1
    )


def test_a_refused_action_never_runs_and_the_model_is_told(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    turns = [
        [computer_call(f"c1_{tag}", action={"type": "screenshot"})],
        # CTRL+L would focus the address bar, and the text a javascript: URL.
        [computer_call(f"c2_{tag}", actions=[{"type": "keypress", "keys": ["CTRL", "L"]}, BUTTON])],
        [computer_call(f"c3_{tag}", actions=[FIELD, {"type": "type", "text": "javascript:alert(1)"}])],
        [message("stopped")],
    ]
    script, result = run(stack, turns, "computer")
    assert result.text == "stopped"
    before = screenshot(script.requests[1])
    after_keys = screenshot(script.requests[2])
    after_text = screenshot(script.requests[3])
    # The batch was refused whole: the button in it was never clicked.
    assert share(after_keys, TARGET, WHITE) > 0.95
    assert dark(after_text, ECHO) == dark(before, ECHO) == 0
    notes = [item for item in script.requests[2]["input"] if item.get("role") == "developer"]
    assert "computer_key_denied" in notes[0]["content"]
    notes = [item for item in script.requests[3]["input"] if item.get("role") == "developer"]
    assert "computer_text_denied" in notes[0]["content"]
    refused = next(r for r in result.calls if r.call_id == f"c2_{tag}")
    assert not refused.result.allowed
    assert not [e for e in stack.audit_events(refused.result.decision_id) if e["kind"] == "execution"]


def test_pending_safety_checks_stop_the_loop(stack: Stack) -> None:
    checks = [{"id": "sc_1", "code": "malicious_instructions", "message": "The page asks you to ignore the user."}]
    turns = [[computer_call(f"c1_{uuid.uuid4().hex[:8]}", action={"type": "screenshot"}, checks=checks)]]
    script = ScriptedResponses(turns)
    with serving(script), agent.GatewayClient(stack.gateway, stack.token, timeout_s=120) as gateway:
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script.port}/v1", max_retries=0)
        with pytest.raises(agent.ComputerUseError) as err:
            agent.run(client, "test-model", "Use the page.", gateway)
    assert err.value.code == "safety_checks_not_acknowledged"
    # Recorded, checks and all.
    refused = [
        e
        for e in stack.audit_events()
        if e["kind"] == "decision"
        and e.get("input", {}).get("call", {}).get("arguments", {}).get("pending_safety_checks")
    ]
    assert refused[-1]["decision"] == "deny"
    assert refused[-1]["input"]["call"]["arguments"]["pending_safety_checks"][0]["id"] == "sc_1"


def test_the_desktop_has_no_network(stack: Stack) -> None:
    session = f"desk-{uuid.uuid4().hex[:8]}"
    with agent.GatewayClient(stack.gateway, stack.token, timeout_s=120) as gateway:
        shot = gateway.invoke(
            "c1", "computer_call", "computer", json.dumps({"actions": [{"type": "screenshot"}]}), session
        )
        assert shot.allowed, shot.reasons
        assert shot.run is not None
        client = docker.from_env()
        try:
            container = client.containers.get(shot.run.sandbox.container_id)
            # The desktop's container: no network at all (the registry entry
            # has none), read-only root, the session's keeper.
            assert container.attrs["HostConfig"]["NetworkMode"] == "none"
            assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
            assert any("airlock-desktop" in part for part in container.attrs["Config"]["Cmd"])
        finally:
            client.close()
            gateway.end_session(session_id=session)
