"""Unit tier: the gateway core's handling of dynamic tools with a real
catalog and local artifact store, and a policy fake that answers per path:
what a dynamic call is counted and run as, and that one owner's concurrent
definitions cannot overshoot the policy's count. The real path is
tests/integration/test_dynamic_tools.py."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from test_gateway_core import ALLOW_LIMITS, REGISTRY, FakeAudit, FakeExecutor

from airlock.gateway import load_registry
from airlock.gateway._budget import CallCounters
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, Principal
from airlock.gateway._policy import PolicyResult
from airlock.gateway.artifacts import LocalStore
from airlock.gateway.tooldefs import Catalog, ToolDefinitions

ALICE = Principal("alice", "default", "token")
SCHEMA = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})


class PathPolicy:
    """Grants python and define_tool; admits up to ``max_definitions``
    definitions per owner (as the shipped policy does, from the count the
    gateway sends); allows every call with python's entry."""

    def __init__(self, registry: Any, max_definitions: int = 3) -> None:
        self.registry = registry
        self.max_definitions = max_definitions
        self.calls: list[tuple[str, Any]] = []

    async def evaluate(self, path: str, input_doc: Any) -> PolicyResult:
        self.calls.append((path, copy.deepcopy(input_doc)))
        await asyncio.sleep(0.01)  # an OPA round trip: lets concurrent defines interleave
        if path == "airlock/granted_tools":
            return PolicyResult(["define_tool", "python"], "rev-1")
        if path == "airlock/tool_definitions/decision":
            if input_doc["owner_definitions"] >= self.max_definitions:
                return PolicyResult(
                    {"allow": False, "reasons": [{"code": "too_many_definitions", "message": "m"}]}, "r"
                )
            return PolicyResult({"allow": True, "reasons": [{"code": "admitted", "message": "ok"}]}, "rev-1")
        entry = self.registry.tool_data(input_doc["tool"]["name"])
        doc = {
            "allow": True,
            "reasons": [{"code": "allowed", "message": "granted"}],
            "obligations": {"limits": dict(ALLOW_LIMITS), "network": {"mode": "none", "egress_allowlist": []}},
            "tool": entry,
        }
        return PolicyResult(doc, "rev-1")

    async def close(self) -> None:
        pass


@pytest.fixture
def harness(tmp_path: Path) -> tuple[Gateway, PathPolicy, FakeExecutor]:
    reg_doc = copy.deepcopy(REGISTRY)
    reg_doc["tools"]["python"]["dynamic"] = {"source": "code"}
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(reg_doc), encoding="utf-8")
    registry = load_registry(path)
    policy = PathPolicy(registry)
    executor = FakeExecutor()
    store = LocalStore(tmp_path / "artifacts")
    defs = ToolDefinitions(Catalog(tmp_path / "artifacts" / "tool_definitions.sqlite"), store)
    gateway = Gateway(
        registry=registry,
        policy=policy,
        executor=executor,
        audit=FakeAudit(),
        metrics=GatewayMetrics(CollectorRegistry(), registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 64 * 1024),
        counters=CallCounters(),
        tool_definitions=defs,
    )
    return gateway, policy, executor


def _call(tool: str, arguments: dict[str, Any], session: str = "s1", call_id: str = "c") -> CallInput:
    return CallInput(Call(call_id, "function_call", tool, json.dumps(arguments), session), ALICE, "Invoke")


def _definition(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": "d",
        "parameters": SCHEMA,
        "source": "print(ARGS['n'] * 2)",
        "base": "python",
        "network": False,
    }


def test_a_dynamic_call_is_counted_and_run_as_its_base(harness: Any) -> None:
    asyncio.run(_counted_and_run_as_its_base(*harness))


async def _counted_and_run_as_its_base(gateway: Gateway, policy: PathPolicy, executor: FakeExecutor) -> None:
    defined = await gateway.invoke(_call("define_tool", _definition("double")))
    assert defined.decision.allowed
    assert defined.run is not None
    assert json.loads(defined.run.stdout)["defined"] == "double"
    for _ in range(2):
        assert (await gateway.invoke(_call("python", {"code": "print(1)"}))).decision.allowed
    result = await gateway.invoke(_call("double", {"n": 21}))
    assert result.decision.allowed
    (path, doc) = policy.calls[-1]
    assert path == "airlock/decision"
    # Counted under python: the two python calls before it are in its counts.
    assert doc["counters"]["session_tool_calls"] == 2
    assert doc["tool"]["name"] == "python"
    assert doc["tool_definition"]["name"] == "double"
    plan = executor.plans[-1]
    assert plan.tool == "python"
    assert plan.argv[:3] == ("python3", "-I", "-c")
    assert "print(ARGS['n'] * 2)" in plan.argv[3]


def test_one_owners_concurrent_definitions_do_not_overshoot(harness: Any) -> None:
    asyncio.run(_concurrent_definitions(harness[0], harness[1]))


async def _concurrent_definitions(gateway: Gateway, policy: PathPolicy) -> None:
    results = await asyncio.gather(*(gateway.invoke(_call("define_tool", _definition(f"t{i}"))) for i in range(8)))
    admitted = [r for r in results if r.decision.allowed]
    assert len(admitted) == 3
    refused = {r.decision.reasons[0].code for r in results if not r.decision.allowed}
    assert refused == {"too_many_definitions"}
    # And one name, defined concurrently with four bodies, is stored once.
    policy.max_definitions = 100
    same = [dict(_definition("dup"), source=f"print({i})") for i in range(4)]
    outcomes = await asyncio.gather(*(gateway.invoke(_call("define_tool", d, session="s2")) for d in same))
    assert sum(1 for r in outcomes if r.decision.allowed) == 1
    taken = [r.decision.reasons[0].code for r in outcomes if not r.decision.allowed]
    assert taken == ["definition_name_taken"] * 3
