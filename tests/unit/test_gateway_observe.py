"""gateway._core for the Responses API's non-function items: Observe records
hosted items (and audits its refusals), a ToolCall of a hosted type is
refused before the policy, and requested limits reach the policy input only
as asked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from prometheus_client import CollectorRegistry
from test_gateway_core import ALICE, DECISION_PATH, GRANTED_PATH, REGISTRY, FakeAudit, FakeExecutor, FakePolicy

from airlock.gateway import load_registry
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, Limits, Observation, Principal


def build(tmp_path: Path, audit: FakeAudit | None = None) -> tuple[Gateway, FakePolicy, FakeAudit]:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    policy, audit = FakePolicy(), audit or FakeAudit()
    gateway = Gateway(
        registry=registry,
        policy=policy,
        executor=FakeExecutor(),
        audit=audit,
        metrics=GatewayMetrics(CollectorRegistry(), registry.tools.keys()),
        settings=CoreSettings(DECISION_PATH, GRANTED_PATH, 1024),
    )
    return gateway, policy, audit


def observation(principal: Principal | None = ALICE, **kw: Any) -> Observation:
    fields: dict[str, Any] = {
        "item_type": "web_search_call",
        "item_id": "ws_1",
        "tool": "web_search",
        "status": "completed",
        "item_json": json.dumps({"type": "web_search_call", "id": "ws_1", "api_key": "sk-secret"}),
        "session_id": "resp_1",
    }
    return Observation(principal=principal, **(fields | kw))


def test_observe_writes_one_observation_event(tmp_path: Path) -> None:
    gateway, policy, audit = build(tmp_path)
    observed = asyncio.run(gateway.observe(observation()))
    assert observed.refusal == "none"
    assert observed.reason.code == "observed"
    assert policy.calls == []  # nothing to decide
    [event] = audit.events
    assert (event.kind, event.decision, event.rpc) == ("observation", "observed", "Observe")
    assert (event.decision_id, event.principal, event.session_id) == (observed.event_id, "alice", "resp_1")
    assert (event.item_type, event.call_id, event.tool) == ("web_search_call", "ws_1", "web_search")
    recorded = json_format.MessageToDict(event.input)
    assert recorded["item"]["id"] == "ws_1"
    assert recorded["principal"]["id"] == "alice"
    assert [r.code for r in event.reasons] == ["observed"]


@pytest.mark.parametrize(
    ("obs", "refusal", "code"),
    [
        pytest.param(observation(principal=None), "unauthenticated", "unauthenticated", id="no-identity"),
        pytest.param(observation(item_type="function_call"), "invalid_argument", "item_type_not_hosted", id="client"),
        pytest.param(observation(item_json="[1]"), "invalid_argument", "item_malformed", id="not-an-object"),
    ],
)
def test_observe_refusals_are_audited(tmp_path: Path, obs: Observation, refusal: str, code: str) -> None:
    gateway, _, audit = build(tmp_path)
    observed = asyncio.run(gateway.observe(obs))
    assert (observed.refusal, observed.reason.code) == (refusal, code)
    [event] = audit.events
    assert (event.kind, event.decision, event.reasons[0].code) == ("observation", "deny", code)


def test_oversized_item_is_recorded_cut(tmp_path: Path) -> None:
    gateway, _, audit = build(tmp_path)
    big = json.dumps({"type": "code_interpreter_call", "code": "x" * 5000})
    observed = asyncio.run(gateway.observe(observation(item_type="code_interpreter_call", item_json=big)))
    assert observed.refusal == "none"
    recorded = json_format.MessageToDict(audit.events[0].input)["item"]
    assert recorded["item_json"].startswith("x" * 10) or recorded["item_json"].startswith('{"type"')
    assert recorded["item_json"].endswith("more characters cut]")
    assert len(recorded["item_json"]) < 4096 + 40
    assert int(audit.events[0].arguments_bytes) == len(big)


def test_observe_without_a_durable_record_is_unavailable(tmp_path: Path) -> None:
    gateway, _, _ = build(tmp_path, FakeAudit(fail_kinds=("observation",)))
    observed = asyncio.run(gateway.observe(observation()))
    assert (observed.refusal, observed.reason.code) == ("unavailable", "audit_failed")


def call_input(item_type: str = "function_call", requested: Limits | None = None) -> CallInput:
    call = Call("c1", item_type, "python", '{"code": "1"}', "s1", requested_limits=requested)  # type: ignore[arg-type]
    return CallInput(call, ALICE, "Invoke")


def test_a_call_of_a_hosted_type_is_refused_before_the_policy(tmp_path: Path) -> None:
    gateway, policy, audit = build(tmp_path)
    result = asyncio.run(gateway.invoke(call_input("web_search_call")))
    assert result.run is None
    assert (result.decision.refusal, result.decision.reasons[0].code) == ("invalid_argument", "item_type_hosted")
    assert policy.calls == []
    assert [e.kind for e in audit.events] == ["decision"]


@pytest.mark.parametrize(
    ("requested", "want"),
    [
        pytest.param(None, None, id="none"),
        pytest.param(Limits(), None, id="all-zero"),
        pytest.param(Limits(timeout_ms=1500, pids=-3), {"timeout_ms": 1500}, id="only-positive-fields"),
    ],
)
def test_requested_limits_reach_the_policy_only_when_asked(
    tmp_path: Path, requested: Limits | None, want: dict[str, int] | None
) -> None:
    gateway, policy, _ = build(tmp_path)
    asyncio.run(gateway.decide(call_input(requested=requested)))
    [(_, doc)] = policy.calls
    assert doc["call"].get("requested_limits") == want
