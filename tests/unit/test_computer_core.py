"""Unit tier: the gateway core's computer calls with a policy fake: the
session's action count the policy sees, added at the decision one call at
a time (concurrent calls cannot overshoot the budget), the desktop in the
run's sandbox plan, and the screenshot's digest in the execution event.
The real path is tests/integration/test_computer_use.py."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from test_gateway_core import ALLOW_LIMITS, REGISTRY, FakeAudit, FakeExecutor

from airlock.gateway import load_registry
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, Principal, RunOutcome
from airlock.gateway._policy import PolicyResult

ALICE = Principal("alice", "default", "token")
PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100
COMPUTER = {
    "description": "A desktop.",
    "item_type": "computer_call",
    "image": "desktop:test",
    "argv": ["act", "{actions}"],
    "display": {"width": 800, "height": 600, "environment": "browser"},
    "sandbox": {"mode": "session"},
    "parameters": {
        "type": "object",
        "properties": {"actions": {"type": "array"}},
        "required": ["actions"],
    },
}


class BudgetPolicy:
    """Allows a computer call while the session's actions stay within
    ``budget``, like airlock.computer's rule, after a pause (an OPA round
    trip) in which concurrent calls interleave."""

    def __init__(self, registry: Any, budget: int) -> None:
        self.registry, self.budget = registry, budget

    async def evaluate(self, path: str, input_doc: Any) -> PolicyResult:
        del path
        used = input_doc["counters"].get("session_computer_actions", 0)
        await asyncio.sleep(0.02)
        if used + len(input_doc["call"]["arguments"]["actions"]) > self.budget:
            reasons = [{"code": "computer_action_budget_exceeded", "message": "over"}]
            return PolicyResult({"allow": False, "reasons": reasons, "obligations": {}}, "rev-1")
        doc = {
            "allow": True,
            "reasons": [{"code": "allowed", "message": "ok"}],
            "obligations": {
                "limits": dict(ALLOW_LIMITS),
                "network": {"mode": "none", "egress_allowlist": []},
                "sandbox": {"mode": "session", "idle_ttl_ms": 60_000, "max_lifetime_ms": 600_000},
            },
            "tool": self.registry.tool_data("computer"),
        }
        return PolicyResult(doc, "rev-1")

    async def close(self) -> None:
        pass


@pytest.fixture
def harness(tmp_path: Path) -> tuple[Gateway, FakeExecutor, FakeAudit]:
    doc = copy.deepcopy(REGISTRY)
    doc["tools"]["computer"] = COMPUTER
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    registry = load_registry(path)
    executor = FakeExecutor(RunOutcome("ok", 0, base64.b64encode(PNG) + b"\n", b"", False, 40))
    audit = FakeAudit()
    gateway = Gateway(
        registry=registry,
        policy=BudgetPolicy(registry, budget=2),
        executor=executor,
        audit=audit,
        metrics=GatewayMetrics(CollectorRegistry(), registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 64 * 1024),
    )
    return gateway, executor, audit


def _call(call_id: str, session: str = "s1") -> CallInput:
    args = json.dumps({"actions": [{"type": "click", "x": 1, "y": 2}]})
    return CallInput(Call(call_id, "computer_call", "computer", args, session), ALICE, "Invoke")


def test_concurrent_calls_cannot_overshoot_the_action_budget(harness: Any) -> None:
    gateway, executor, audit = harness

    async def go() -> list[Any]:
        return list(await asyncio.gather(*(gateway.invoke(_call(f"c{i}")) for i in range(5))))

    results = asyncio.run(go())
    assert sum(r.decision.allowed for r in results) == 2
    assert {r.decision.reasons[0].code for r in results if not r.decision.allowed} == {
        "computer_action_budget_exceeded"
    }
    # Another session has a budget of its own.
    assert asyncio.run(gateway.invoke(_call("other", session="s2"))).decision.allowed
    plan = executor.plans[0]
    assert (plan.sandbox.desktop_width, plan.sandbox.desktop_height) == (800, 600)
    (execution, *_) = [e for e in audit.events if e.kind == "execution"]
    assert execution.execution.screenshot_sha256 == hashlib.sha256(PNG).hexdigest()
    assert execution.execution.screenshot_bytes == len(PNG)
