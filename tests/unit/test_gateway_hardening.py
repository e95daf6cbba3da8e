"""The gateway core against the attacks of issue 10: oversized fields,
malformed arguments, events that cannot be built, policy-supplied tool
entries, floods of one principal and of bad tokens, and budget races."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from prometheus_client import CollectorRegistry
from test_gateway_core import ALICE, DECISION_PATH, GRANTED_PATH, REGISTRY, FakeAudit, FakeExecutor, allow_doc

from airlock.common.wire import InputFile
from airlock.gateway import _events, load_registry
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, Principal, RunOutcome, RunSpec
from airlock.gateway._policy import PolicyResult

BOB = Principal("bob", "default", "token")


class ScriptedPolicy:
    """Answers with ``answer(input)``; records every input."""

    def __init__(self, answer: Any = None, delay: float = 0.0) -> None:
        self.answer = answer or (lambda _doc: allow_doc())
        self.delay = delay
        self.inputs: list[Any] = []

    async def evaluate(self, path: str, input_doc: Any) -> PolicyResult:
        self.inputs.append(copy.deepcopy(input_doc))
        if self.delay:
            await asyncio.sleep(self.delay)
        if path == GRANTED_PATH:
            return PolicyResult(["python"], "rev-1")
        return PolicyResult(self.answer(input_doc), "rev-1")

    async def close(self) -> None:
        pass


class BlockingExecutor(FakeExecutor):
    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.running: list[str] = []

    async def run(self, plan: RunSpec, inputs: Sequence[InputFile] = ()) -> RunOutcome:
        self.running.append(plan.run_id)
        await self.release.wait()
        return await super().run(plan)


def build(
    tmp_path: Path, *, policy: Any = None, executor: Any = None, **settings: Any
) -> tuple[Gateway, Any, FakeAudit]:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    policy = policy or ScriptedPolicy()
    audit = FakeAudit()
    gateway = Gateway(
        registry=registry,
        policy=policy,
        executor=executor or FakeExecutor(),
        audit=audit,
        metrics=GatewayMetrics(CollectorRegistry(), registry.tools.keys()),
        settings=CoreSettings(DECISION_PATH, GRANTED_PATH, 64 * 1024, **settings),
    )
    return gateway, policy, audit


def call(
    *,
    arguments: str = '{"code": "print(1)"}',
    principal: Principal | None = ALICE,
    rpc: Any = "Invoke",
    **fields: Any,
) -> CallInput:
    base: dict[str, Any] = {"call_id": "c1", "item_type": "function_call", "tool": "python", "session_id": "s1"}
    return CallInput(call=Call(arguments=arguments, **(base | fields)), principal=principal, rpc=rpc)


@pytest.mark.parametrize("field", ["call_id", "tool", "session_id"])
def test_an_oversized_field_is_refused_and_recorded_cut(tmp_path: Path, field: str) -> None:
    gateway, policy, audit = build(tmp_path)
    huge = "x" * 3_000_000
    result = asyncio.run(gateway.invoke(call(**{field: huge})))
    assert (result.decision.refusal, result.decision.reasons[0].code) == ("invalid_argument", "field_too_long")
    assert policy.inputs == [], "refused before the policy"
    [event] = audit.events
    assert len(event.SerializeToString()) < 20_000, "a 3 MB field never becomes a 3 MB audit event"
    assert getattr(event, field).endswith("characters cut]")


@pytest.mark.parametrize(
    "arguments",
    [
        '{"code": "print(1)", "x": NaN}',
        '{"code": "print(1)", "x": Infinity}',
        '{"code": "print(1)", "x": 1e999}',
        '{"code": "print(1)", "x": 1' + "0" * 309 + "}",
        '{"code": "\\ud800"}',
        '{"code": "a", "code": "b"}',
        '{"code": "x", "n": ' + "[" * 200 + "]" * 200 + "}",
    ],
)
def test_malformed_arguments_are_refused_audited_and_later_calls_work(tmp_path: Path, arguments: str) -> None:
    gateway, policy, audit = build(tmp_path)

    async def scenario() -> tuple[Any, Any]:
        bad = await gateway.invoke(call(arguments=arguments))
        good = await gateway.invoke(call(call_id="c2"))
        return bad, good

    bad, good = asyncio.run(scenario())
    assert (bad.decision.refusal, bad.decision.reasons[0].code) == ("invalid_argument", "arguments_malformed")
    assert good.decision.allowed
    assert [e.kind for e in audit.events] == ["decision", "decision", "execution"]
    assert len(policy.inputs) == 1, "only the good call reached the policy"


def test_observe_item_json_is_parsed_strictly(tmp_path: Path) -> None:
    from airlock.gateway._model import Observation  # noqa: PLC0415

    gateway, _, audit = build(tmp_path)
    observed = asyncio.run(
        gateway.observe(
            Observation(
                item_type="web_search_call",
                item_id="ws",
                tool="web_search",
                status="completed",
                item_json='{"type": "web_search_call", "n": NaN}',
                session_id="s",
                principal=ALICE,
            )
        )
    )
    assert (observed.refusal, observed.reason.code) == ("invalid_argument", "item_malformed")
    assert len(audit.events) == 1


def test_an_event_that_cannot_be_built_becomes_a_minimal_deny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, _, audit = build(tmp_path)

    def broken(*_a: Any) -> Any:
        raise ValueError("cannot render")

    monkeypatch.setattr(_events, "decision_event", broken)
    result = asyncio.run(gateway.invoke(call()))
    assert not result.decision.allowed, "no full record, no run"
    assert result.decision.reasons[0].code == "internal_error"
    [event] = audit.events
    assert (event.kind, event.decision, event.reasons[0].code) == ("decision", "deny", "internal_error")
    assert event.decision_id == result.decision.decision_id


def _allow_with_tool(entry: dict[str, Any]) -> Any:
    return lambda _doc: {**allow_doc(), "tool": entry}


def test_a_policy_cannot_supply_its_own_tool_entry(tmp_path: Path) -> None:
    registry = load_registry_from(tmp_path)
    forged = {**registry.tool_data("python"), "image": "attacker/image:latest", "argv": ["sh", "-c", "id"]}
    gateway, _, _ = build(tmp_path, policy=ScriptedPolicy(_allow_with_tool(forged)))
    result = asyncio.run(gateway.invoke(call()))
    assert (result.decision.allowed, result.decision.reasons[0].code) == (False, "policy_malformed")
    assert "not the registry's entry" in result.decision.reasons[0].message


def test_the_registrys_own_entry_is_accepted_also_just_after_a_reload(tmp_path: Path) -> None:
    registry = load_registry_from(tmp_path)
    old_entry = registry.tool_data("python")
    gateway, _, _ = build(tmp_path, policy=ScriptedPolicy(_allow_with_tool(old_entry)))
    assert asyncio.run(gateway.invoke(call())).decision.allowed
    changed = copy.deepcopy(REGISTRY)
    changed["tools"]["python"]["env"] = {"LANG": "C"}
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(changed))
    gateway.replace_registry(load_registry(tmp_path / "new.yaml"))
    assert asyncio.run(gateway.invoke(call(call_id="c2"))).decision.allowed, "OPA may lag one publish"
    gateway.replace_registry(load_registry(tmp_path / "new.yaml"))
    assert not asyncio.run(gateway.invoke(call(call_id="c3"))).decision.allowed, "but not two"


def load_registry_from(tmp_path: Path) -> Any:
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    return load_registry(path)


def test_one_principal_cannot_have_more_than_its_cap_in_flight(tmp_path: Path) -> None:
    executor = BlockingExecutor()
    gateway, _, audit = build(tmp_path, executor=executor, max_in_flight_per_principal=3)

    async def scenario() -> tuple[list[Any], Any]:
        held = [asyncio.create_task(gateway.invoke(call(call_id=f"a{i}"))) for i in range(3)]
        await asyncio.sleep(0.05)
        refused = await gateway.invoke(call(call_id="a-extra"))
        other = await gateway.decide(call(call_id="b1", principal=BOB, rpc="Decide"))
        executor.release.set()
        return [*await asyncio.gather(*held), refused], other

    results, other = asyncio.run(scenario())
    refused = results[-1]
    assert (refused.decision.refusal, refused.decision.reasons[0].code) == ("resource_exhausted", "too_many_in_flight")
    assert all(r.decision.allowed for r in results[:3])
    assert other.allowed, "another principal is unaffected"
    assert any(e.decision_id == refused.decision.decision_id for e in audit.events), "the refusal is audited"


def test_run_slots_are_shared_fairly(tmp_path: Path) -> None:
    executor = BlockingExecutor()
    gateway, _, _ = build(tmp_path, executor=executor, run_slots=4, run_slots_per_principal=2)

    async def scenario() -> None:
        flood = [asyncio.create_task(gateway.invoke(call(call_id=f"a{i}"))) for i in range(6)]
        await asyncio.sleep(0.05)
        assert len(executor.running) == 2, "one principal holds at most its share of run slots"
        polite = asyncio.create_task(gateway.invoke(call(call_id="b", principal=BOB)))
        await asyncio.sleep(0.05)
        assert len(executor.running) == 3, "a second principal starts at once"
        executor.release.set()
        await asyncio.gather(*flood, polite)

    asyncio.run(scenario())


def test_unauthenticated_floods_are_recorded_in_aggregate(tmp_path: Path) -> None:
    gateway, _, audit = build(tmp_path, unauthenticated_records_per_window=5, unauthenticated_window_s=60)

    async def scenario() -> None:
        for i in range(50):
            result = await gateway.decide(call(call_id=f"u{i}", principal=None, rpc="Decide"))
            assert result.reasons[0].code == "unauthenticated"
        await gateway.close()

    asyncio.run(scenario())
    kinds = [e.kind for e in audit.events]
    assert kinds.count("decision") == 5
    [summary] = [e for e in audit.events if e.kind == "unauthenticated_summary"]
    assert json_format.MessageToDict(summary.input)["suppressed"] == 45


def test_parallel_invokes_reserve_their_budget_before_the_policy_sees_it(tmp_path: Path) -> None:
    limit = 3

    def answer(doc: dict[str, Any]) -> Any:
        if doc["counters"]["principal_calls"] >= limit:
            return {"allow": False, "reasons": [{"code": "budget_exceeded", "message": "spent"}], "obligations": {}}
        return allow_doc()

    policy = ScriptedPolicy(answer, delay=0.02)
    gateway, _, _ = build(tmp_path, policy=policy)

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(gateway.invoke(call(call_id=f"p{i}", session_id=f"fresh-{i}")) for i in range(8)))

    results = asyncio.run(scenario())
    assert sum(r.decision.allowed for r in results) == limit, "concurrent calls cannot all see the old count"
    # Denied calls released their reservations: the count is the allowed ones.
    counts = asyncio.run(gateway._counters.snapshot("alice", "x", "python"))
    assert counts["principal_calls"] == limit


def test_schema_errors_never_quote_argument_values(tmp_path: Path) -> None:
    secret = "CorrectHorseBatteryStaple-0123456789"
    registry = copy.deepcopy(REGISTRY)
    registry["tools"]["python"]["parameters"]["properties"]["code"]["maxLength"] = 5
    (tmp_path / "tool_registry.yaml").write_text(yaml.safe_dump(registry))
    policy = ScriptedPolicy()
    gateway = Gateway(
        registry=load_registry(tmp_path / "tool_registry.yaml"),
        policy=policy,
        executor=FakeExecutor(),
        audit=FakeAudit(),
        metrics=GatewayMetrics(CollectorRegistry(), ["python"]),
        settings=CoreSettings(DECISION_PATH, GRANTED_PATH, 1024),
    )
    result = asyncio.run(gateway.invoke(call(arguments=json.dumps({"code": secret}))))
    assert result.decision.reasons[0].code == "arguments_invalid"
    assert secret not in result.decision.reasons[0].message
    assert secret not in json.dumps(policy.inputs[0]["call"]["arguments_errors"])
    assert "maxLength" in result.decision.reasons[0].message


def test_a_principal_over_its_rate_is_refused_and_the_refusals_are_summarised(tmp_path: Path) -> None:
    """One agent flooding Decide once wrote 16 MB/s of fsynced audit: calls
    and argument bytes are rate limited per principal, and refusals beyond
    the per-window record rate go into one summary event."""
    gateway, _, audit = build(
        tmp_path,
        calls_per_second=0.001,
        calls_burst=3,
        unauthenticated_records_per_window=2,
        unauthenticated_window_s=60,
    )

    async def scenario() -> tuple[list[Any], Any]:
        mine = [await gateway.decide(call(call_id=f"r{i}", rpc="Decide")) for i in range(10)]
        other = await gateway.decide(call(call_id="b", principal=BOB, rpc="Decide"))
        await gateway.close()
        return mine, other

    mine, other = asyncio.run(scenario())
    codes = [d.reasons[0].code for d in mine]
    assert codes == ["allowed"] * 3 + ["rate_limited"] * 7
    assert all(d.refusal == "resource_exhausted" for d in mine[3:])
    assert other.allowed, "another principal has its own bucket"
    decisions = [e for e in audit.events if e.kind == "decision"]
    assert len(decisions) == 3 + 2 + 1, "three allowed, two refusals recorded one by one, bob"
    [summary] = [e for e in audit.events if e.kind == "rate_limited_summary"]
    assert summary.principal == "alice"
    assert json_format.MessageToDict(summary.input)["suppressed"] == 5


def test_argument_bytes_are_rate_limited_per_principal(tmp_path: Path) -> None:
    gateway, _, _ = build(tmp_path, argument_bytes_per_second=1.0, argument_bytes_burst=100_000)
    big = json.dumps({"code": "x" * 60_000})

    async def scenario() -> list[str]:
        return [
            (await gateway.decide(call(call_id=f"b{i}", arguments=big, rpc="Decide"))).reasons[0].code for i in range(3)
        ]

    assert asyncio.run(scenario()) == ["allowed", "rate_limited", "rate_limited"]


def _observation(call_id: str, *, principal: Principal = ALICE, item: Any = None) -> Any:
    from airlock.gateway._model import Observation  # noqa: PLC0415

    return Observation(
        item_type="web_search_call",
        item_id=call_id,
        tool="web_search",
        status="completed",
        item_json=json.dumps(item if item is not None else {"type": "web_search_call"}, ensure_ascii=False),
        session_id="s",
        principal=principal,
    )


class HeldObservations(FakeAudit):
    """Holds every recorded observation (the audit writer busy masking one)
    until released; counts how many got as far as the writer."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.writing = 0

    async def write(self, event: Any) -> None:
        if event.kind == "observation" and event.reasons[0].code == "observed":
            self.writing += 1
            await self.release.wait()
        await super().write(event)


def test_observe_holds_a_fair_share_of_decision_slots(tmp_path: Path) -> None:
    """An Observe flood of items slow to mask took another principal's
    Decide from 10 ms to 3.8 s: Observe took no decision slot, so the
    flood filled the audit writer every principal shares. Now a record
    holds a slot as a decision does: one principal at most its share."""
    gateway, _, _ = build(tmp_path, policy_concurrency=4, policy_per_principal=2)
    audit = HeldObservations()
    gateway._audit = audit

    async def scenario() -> tuple[int, Any, list[Any]]:
        flood = [asyncio.create_task(gateway.observe(_observation(f"ws{i}"))) for i in range(6)]
        await asyncio.sleep(0.05)
        writing = audit.writing
        other = await asyncio.wait_for(gateway.decide(call(call_id="b1", principal=BOB, rpc="Decide")), 5)
        audit.release.set()
        return writing, other, await asyncio.gather(*flood)

    writing, other, observed = asyncio.run(scenario())
    assert writing == 2, "the flooding principal records at most its share at once"
    assert other.allowed, "another principal still gets a slot"
    assert [o.reason.code for o in observed] == ["observed"] * 6, "the rest waited their turn"


def test_an_observe_that_finds_no_slot_is_refused_and_recorded(tmp_path: Path) -> None:
    gateway, _, _ = build(tmp_path, policy_per_principal=1, policy_queue_timeout_s=0.05)
    audit = HeldObservations()
    gateway._audit = audit

    async def scenario() -> Any:
        held = asyncio.create_task(gateway.observe(_observation("ws0")))
        await asyncio.sleep(0.02)
        refused = await asyncio.wait_for(gateway.observe(_observation("ws1")), 2)
        audit.release.set()
        await held
        return refused

    refused = asyncio.run(scenario())
    assert (refused.refusal, refused.reason.code) == ("permission_denied", "gateway_overloaded")
    [event] = [e for e in audit.events if e.decision_id == refused.event_id]
    assert (event.kind, event.decision, event.reasons[0].code) == ("observation", "deny", "gateway_overloaded")


def test_observe_too_many_in_flight_refusals_are_summarised(tmp_path: Path) -> None:
    gateway, _, _ = build(
        tmp_path, max_in_flight_per_principal=1, unauthenticated_records_per_window=2, unauthenticated_window_s=60
    )
    audit = HeldObservations()
    gateway._audit = audit

    async def scenario() -> list[str]:
        held = asyncio.create_task(gateway.observe(_observation("ws0")))
        await asyncio.sleep(0.02)
        codes = [(await gateway.observe(_observation(f"ws{i}"))).reason.code for i in range(1, 11)]
        audit.release.set()
        await held
        await gateway.close()
        return codes

    assert asyncio.run(scenario()) == ["too_many_in_flight"] * 10
    refusals = [e for e in audit.events if e.kind == "observation" and e.reasons[0].code == "too_many_in_flight"]
    assert len(refusals) == 2, "recorded one by one up to the per-window rate"
    [summary] = [e for e in audit.events if e.kind == "too_many_in_flight_summary"]
    assert (summary.principal, summary.rpc) == ("alice", "Observe")
    assert json_format.MessageToDict(summary.input)["suppressed"] == 8


def test_argument_bytes_are_counted_in_utf8(tmp_path: Path) -> None:
    """A 60 KB argument of "ä" counted as 30 K: the byte rate let through
    twice what it said."""
    gateway, _, _ = build(tmp_path, argument_bytes_per_second=0.001, argument_bytes_burst=70_000)
    umlauts = json.dumps({"code": "ä" * 29_000}, ensure_ascii=False)  # 29 K characters, 58 KB
    assert len(umlauts) < 35_000
    assert len(umlauts.encode()) > 58_000

    async def scenario() -> tuple[str, str, str]:
        first = await gateway.decide(call(call_id="u1", arguments=umlauts, rpc="Decide"))
        second = await gateway.decide(call(call_id="u2", arguments=umlauts, rpc="Decide"))
        observed = await gateway.observe(_observation("ws", item={"type": "web_search_call", "q": "ä" * 6_000}))
        return first.reasons[0].code, second.reasons[0].code, observed.reason.code

    assert asyncio.run(scenario()) == ("allowed", "rate_limited", "rate_limited")


def test_a_cut_of_raw_arguments_drops_the_token_it_falls_in(tmp_path: Path) -> None:
    """arguments_raw is cut to 4096 characters before it is masked: a key
    cut to ``sk-proj-AbCd`` no longer looks like one, so the cut drops it."""
    gateway, _, audit = build(tmp_path)
    key = "sk-proj-" + "AbCdEfGhIjKlMnOpQrSt" * 3
    prefix = '{"a": 1, "a": 2, "note": "' + "x" * 4053 + " "
    arguments = prefix + key + ' done"}'
    assert len(prefix) == 4080, "the cut keeps sk-proj-AbCdEfGh, too short for the key pattern"
    result = asyncio.run(gateway.decide(call(arguments=arguments, rpc="Decide")))
    assert result.reasons[0].code == "arguments_malformed"
    [event] = audit.events
    raw = json_format.MessageToDict(event.input)["call"]["arguments_raw"]
    assert "sk-proj" not in raw
    assert raw == f"{prefix}…[{len(arguments) - len(prefix)} more characters cut]"
