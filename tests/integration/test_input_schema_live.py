"""The policy input a real gateway sends to a real OPA matches
policies/schema/input.schema.json. Read back from the audit log: each
decision event that reached the policy (``path`` set) carries the masked
policy input, and masking replaces values with strings only where the
schema leaves the shape open (arguments, env, parameters)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
from helpers import REPO, Stack, auth, decision_from_error

from airlock.gateway import load_registry
from airlock.v1 import call_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
SCHEMA_PATH = REPO / "policies" / "schema" / "input.schema.json"
SECRET = "sk-live-abcdefghijklmnop0123"
FN = call_pb2.ITEM_TYPE_FUNCTION_CALL


REGISTRY = load_registry(Path(__file__).resolve().parents[2] / "deploy" / "tool_registry.yaml")


def _schema_validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _ints(value: Any) -> Any:
    """The audit log renders ``input`` through protobuf Struct, whose numbers
    are doubles; integral ones go back to ints so the schema can stay strict."""
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _call(call_id: str, tool: str, arguments: str, item_type: int = FN, session_id: str = "") -> call_pb2.ToolCall:
    return call_pb2.ToolCall(
        call_id=call_id, item_type=item_type, tool=tool, arguments=arguments, session_id=session_id
    )


def test_audited_policy_inputs_match_the_schema(stack: Stack) -> None:
    session = "schema-live-session"
    decide: list[tuple[str, call_pb2.ToolCall]] = [
        ("dev", _call("schema-live-unknown", "web_lookup", json.dumps({"query": "opa"}))),
        ("dev", _call("schema-live-invalid", "python", json.dumps({"code": 42}), session_id=session)),
        (
            "dev",
            _call("schema-live-custom", "python", "print('free text')", call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL, session),
        ),
        (
            "dev",
            _call("schema-live-shell-item", "shell", json.dumps({"commands": ["ls"]}), call_pb2.ITEM_TYPE_SHELL_CALL),
        ),
        (
            "dev",
            _call("schema-live-masked", "python", json.dumps({"code": "print(1)", "api_key": SECRET, "token": 12345})),
        ),
        ("untrusted", _call("schema-live-untrusted", "shell", json.dumps({"command": "id"}))),
        ("untrusted", _call("schema-live-untrusted-ok", "python", json.dumps({"code": "print(1)"}))),
    ]
    ids: dict[str, str] = {}
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for n in (1, 2):
            resp = stub.Invoke(
                gateway_pb2.InvokeRequest(
                    call=_call(
                        f"schema-live-run-{n}", "python", json.dumps({"code": f"print({n})"}), session_id=session
                    )
                ),
                metadata=auth(stack.token),
                timeout=60,
            )
            assert resp.decision.verdict == call_pb2.VERDICT_ALLOW, resp.decision
            ids[f"schema-live-run-{n}"] = resp.decision.decision_id
        for who, call in decide:
            token = stack.token if who == "dev" else stack.untrusted_token
            answer = stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=auth(token), timeout=30)
            ids[call.call_id] = answer.decision.decision_id
        # Bad input is refused before the policy: audited, but with no policy input.
        with pytest.raises(grpc.RpcError) as refused:
            stub.Decide(
                gateway_pb2.DecideRequest(call=_call("schema-live-malformed", "python", '{"code": ')),
                metadata=auth(stack.token),
                timeout=30,
            )
        ids["schema-live-malformed"] = decision_from_error(refused.value).decision_id

    by_id = {e["decision_id"]: e for e in stack.audit_events() if e["kind"] == "decision"}
    assert set(ids.values()) <= by_id.keys()
    events = {call_id: by_id[decision_id] for call_id, decision_id in ids.items()}

    malformed = events.pop("schema-live-malformed")
    assert malformed["path"] == ""
    assert "arguments_raw" in malformed["input"]["call"]

    validator = _schema_validator(SCHEMA_PATH)
    inputs: dict[str, dict[str, Any]] = {}
    failures: dict[str, list[str]] = {}
    for call_id, event in events.items():
        assert event["path"], f"{call_id} should have reached the policy"
        doc = _ints(event["input"])
        # The audit copy names the tool instead of repeating its registry
        # entry (pinned by the bundle revision): put the entry back.
        if doc["tool"] is not None:
            assert doc["tool"] == {"name": doc["call"]["tool"]}
            doc["tool"] = REGISTRY.tool_data(doc["call"]["tool"])
        inputs[call_id] = doc
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
        if errors:
            failures[call_id] = errors
    assert failures == {}

    # The calls covered what they were meant to.
    assert inputs["schema-live-unknown"]["tool"] is None
    assert inputs["schema-live-invalid"]["call"]["arguments_errors"]
    assert inputs["schema-live-custom"]["call"]["arguments"] == {"input": "print('free text')"}
    assert inputs["schema-live-custom"]["call"]["item_type"] == "custom_tool_call"
    assert inputs["schema-live-shell-item"]["call"]["item_type"] == "shell_call"
    assert inputs["schema-live-untrusted"]["principal"]["profile"] == "untrusted"
    assert inputs["schema-live-run-1"]["request"]["rpc"] == "Invoke"
    assert inputs["schema-live-run-1"]["call"]["session_id"] == session
    assert inputs["schema-live-masked"]["call"]["arguments"]["api_key"] == "**masked**"
    assert inputs["schema-live-masked"]["call"]["arguments"]["token"] == "**masked**"
    assert SECRET not in json.dumps(inputs)
    # Counters are per session: the second run sees the first, this call excluded.
    assert inputs["schema-live-run-1"]["counters"]["session_calls"] == 0
    assert inputs["schema-live-run-2"]["counters"]["session_calls"] == 1
    assert inputs["schema-live-invalid"]["counters"]["session_calls"] == 2
