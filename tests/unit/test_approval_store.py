"""Approvals (airlock/gateway/_approvals.py): the store's binding, single
use, expiry and who may decide; and the Invoke path through the core with
fakes at the seams: an ask is held, approved, run once, asked again."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from airlock.cli import _approvals_cmd
from airlock.cli._client import Target
from airlock.cli._tools_cmd import escape
from airlock.common.wire import InputFile, Limits
from airlock.gateway import load_registry
from airlock.gateway._answer import parse_answer
from airlock.gateway._approvals import Approval, ApprovalError, ApprovalStore, Binding
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._errors import AuditError, ForbiddenError, PolicyError
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, Principal, Reason, RunOutcome, RunSpec
from airlock.gateway._policy import PolicyResult
from airlock.gateway._server import approval_to_proto
from airlock.v1 import approvals_pb2, audit_pb2

AGENT = Principal("dev-agent", "default")
APPROVER = Principal("alice", "default", roles=("approver",))
OPERATOR = Principal("olga", "default", roles=("operator",))
BOTH = Principal("dev-agent", "default", roles=("agent", "approver"))
BINDING = Binding("dev-agent", "s-1", "shell", "shell_call", "ab" * 32, "rev-1")
ASKED = (Reason("approval_required", "command of tool 'shell' needs approval: pushes (rule git_push)"),)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def store(clock: Clock | None = None, **kw: Any) -> ApprovalStore:
    return ApprovalStore(ttl_s=60, clock=clock or Clock(), **kw)


def decide(s: ApprovalStore, aid: str, who: Principal, *, grant: bool, note: str = "") -> Approval:
    a = s.decided(aid, who, grant=grant, note=note)
    assert s.commit(a, was="pending")
    return a


def requested(s: ApprovalStore, binding: Binding = BINDING) -> str:
    a, created = s.request(binding, call_id="call_1", decision_id="d-1", reasons=ASKED)
    assert created
    return a.id


def test_pending_until_approved_then_used_once() -> None:
    s = store()
    aid = requested(s)
    # A retry before anyone decided finds the same approval, and nothing to run on.
    again, created = s.request(BINDING, call_id="call_2", decision_id="d-2", reasons=ASKED)
    assert (again.id, created) == (aid, False)
    assert s.take(BINDING) is None
    granted = decide(s, aid, APPROVER, grant=True, note="ok")
    assert (granted.state, granted.approver, granted.note) == ("granted", "alice", "ok")
    used = s.take(BINDING)
    assert used is not None
    assert (used.id, used.state) == (aid, "used")
    assert s.take(BINDING) is None  # single use
    assert s.pending() == 0


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"principal": "dev-untrusted"}, id="principal"),
        pytest.param({"session_id": "s-2"}, id="session"),
        pytest.param({"tool": "shell_builtin"}, id="tool"),
        pytest.param({"item_type": "local_shell_call"}, id="item-type"),
        pytest.param({"arguments_sha256": "cd" * 32}, id="arguments"),
        pytest.param({"policy_revision": "rev-2"}, id="policy-revision"),
        pytest.param({"requested_limits_sha256": "ef" * 32}, id="requested-limits"),
    ],
)
def test_an_approval_is_valid_only_for_its_exact_call(other: dict[str, str]) -> None:
    s = store()
    decide(s, requested(s), APPROVER, grant=True)
    assert s.take(replace(BINDING, **other)) is None
    assert s.take(BINDING) is not None


@pytest.mark.parametrize(
    ("who", "code"),
    [
        pytest.param(AGENT, "forbidden", id="agent-token"),
        pytest.param(OPERATOR, "forbidden", id="operator-is-not-approver"),
        pytest.param(BOTH, "forbidden", id="nobody-approves-their-own-call"),
    ],
)
def test_only_approvers_decide_and_never_their_own(who: Principal, code: str) -> None:
    s = store()
    aid = requested(s)
    with pytest.raises(ForbiddenError) as err:
        decide(s, aid, who, grant=True)
    assert err.value.code == code
    assert s.get(aid).state == "pending"


def test_refusals_have_codes() -> None:
    s = store(max_pending_per_principal=1)
    aid = requested(s)
    with pytest.raises(ApprovalError) as err:
        s.request(replace(BINDING, arguments_sha256="cd" * 32), call_id="c", decision_id="d", reasons=ASKED)
    assert err.value.code == "approvals_full"
    with pytest.raises(ApprovalError) as err:
        decide(s, "apr_nope", APPROVER, grant=True)
    assert err.value.code == "approval_not_found"
    with pytest.raises(ApprovalError) as err:
        decide(s, aid, APPROVER, grant=True, note="x" * 1025)
    assert err.value.code == "note_too_long"
    decide(s, aid, APPROVER, grant=False)
    with pytest.raises(ApprovalError) as err:
        decide(s, aid, APPROVER, grant=True)
    assert err.value.code == "approval_not_pending"
    assert s.take(BINDING) is None  # denied: nothing runs


def test_expiry_of_pending_and_granted() -> None:
    clock = Clock()
    s = store(clock)
    pending = requested(s)
    granted = requested(s, replace(BINDING, session_id="s-2"))
    decide(s, granted, APPROVER, grant=True)
    clock.t += 59
    assert s.due() == []
    clock.t += 1
    assert sorted(a.id for a in s.due()) == sorted([pending, granted])
    # Past its time an approval is unusable, before the sweep marks it expired.
    assert s.take(replace(BINDING, session_id="s-2")) is None
    with pytest.raises(ApprovalError):
        decide(s, pending, APPROVER, grant=True)
    # A new ask of the same call starts a new approval.
    assert requested(s) != pending


def test_listing_and_forgetting() -> None:
    s = store(keep_finished=1)
    first = requested(s)
    second = requested(s, replace(BINDING, session_id="s-2"))
    third = requested(s, replace(BINDING, session_id="s-3"))
    decide(s, first, APPROVER, grant=False)
    decide(s, second, APPROVER, grant=False)
    assert [a.id for a in s.listed()] == [third]
    s.forget()  # keeps the newest finished one only
    assert [a.id for a in s.listed(everything=True)] == [third, second]


def test_wait_returns_on_a_decision() -> None:
    async def scenario() -> tuple[str, str]:
        s = store()
        aid = requested(s)
        waiter = asyncio.create_task(s.wait(aid, 5))
        await asyncio.sleep(0)
        decide(s, aid, APPROVER, grant=True)
        got = await waiter
        timed_out = await s.wait(requested(s, replace(BINDING, session_id="s-2")), 0.01)
        assert got is not None
        assert timed_out is not None
        return got.state, timed_out.state

    assert asyncio.run(scenario()) == ("granted", "pending")


# -- the answer ------------------------------------------------------------------------

LIMITS = {
    "memory_bytes": 1 << 28,
    "cpu_millis": 500,
    "pids": 64,
    "timeout_ms": 10_000,
    "output_bytes": 1 << 20,
    "tmpfs_bytes": 1 << 24,
}


def ask_doc(**extra: Any) -> dict[str, Any]:
    return {
        "allow": False,
        "ask": True,
        "reasons": [{"code": "approval_required", "message": "needs approval"}],
        "obligations": {"limits": dict(LIMITS), "network": {"mode": "none"}},
        **extra,
    }


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        pytest.param({**ask_doc(), "allow": True}, "cannot both allow and ask", id="allow-and-ask"),
        pytest.param({**ask_doc(), "ask": "yes"}, "'ask' must be true or false", id="ask-not-bool"),
        pytest.param(ask_doc(obligations={"limits": {}}), "must set every", id="ask-without-limits"),
        pytest.param(ask_doc(shadow_asks="x"), "'shadow_asks' must be a list", id="shadow-asks-shape"),
    ],
)
def test_malformed_asks(doc: dict[str, Any], why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        parse_answer(doc)


# -- through the core ------------------------------------------------------------------

REGISTRY = {
    "version": 1,
    "tools": {
        "shell": {
            "description": "Run a command.",
            "image": "sandbox-python:test",
            "argv": ["sh", "-c", "{command}"],
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        }
    },
}


class Policy:
    def __init__(self) -> None:
        self.result: Any = ask_doc()
        self.revision = "rev-1"

    async def evaluate(self, path: str, input_doc: Any) -> PolicyResult:
        del path, input_doc
        return PolicyResult(copy.deepcopy(self.result), self.revision)


class Audit:
    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []
        #: Event kinds whose write fails (a full disk, for those).
        self.fail_kinds: set[str] = set()

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        if event.kind in self.fail_kinds:
            raise AuditError(f"disk full writing {event.kind}")
        copied = audit_pb2.AuditEvent()
        copied.CopyFrom(event)
        self.events.append(copied)

    def close(self) -> None:
        pass


class Executor:
    def __init__(self) -> None:
        self.plans: list[RunSpec] = []

    async def run(self, plan: RunSpec, inputs: Sequence[InputFile] = ()) -> RunOutcome:
        del inputs
        self.plans.append(plan)
        return RunOutcome("ok", 0, b"pushed\n", b"", False, 5)


def call(arguments: str = '{"command": "git push"}', rpc: Any = "Invoke", limits: Limits | None = None) -> CallInput:
    return CallInput(
        Call("call_1", "function_call", "shell", arguments, session_id="s-1", requested_limits=limits), AGENT, rpc
    )


def make(tmp_path: Path, prom: CollectorRegistry, **settings: Any) -> tuple[Gateway, Policy, Audit, Executor]:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    policy, audit, executor = Policy(), Audit(), Executor()
    gw = Gateway(
        registry=registry,
        policy=policy,
        executor=executor,
        audit=audit,
        metrics=GatewayMetrics(prom, registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 4096, **settings),
    )
    return gw, policy, audit, executor


def kinds(audit: Audit) -> list[str]:
    return [e.kind for e in audit.events]


def test_invoke_holds_an_ask_and_runs_it_once_approved(tmp_path: Path, prom: CollectorRegistry) -> None:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    policy, audit, executor = Policy(), Audit(), Executor()
    gw = Gateway(
        registry=registry,
        policy=policy,
        executor=executor,
        audit=audit,
        metrics=GatewayMetrics(prom, registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 4096),
    )

    async def scenario() -> None:
        # Decide reports the ask and holds nothing.
        decided = await gw.decide(call(rpc="Decide"))
        assert (decided.verdict, decided.refusal, decided.approval) == ("ask", "permission_denied", None)
        assert gw.approvals.store.pending() == 0
        # Invoke holds it.
        held = (await gw.invoke(call())).decision
        assert (held.verdict, held.refusal) == ("ask", "failed_precondition")
        assert [r.code for r in held.reasons] == ["approval_pending", "approval_required"]
        approval_id = held.approval.id
        assert approval_id in held.reasons[0].message
        assert kinds(audit)[-2:] == ["decision", "approval_requested"]
        assert prom.get_sample_value("airlock_gateway_approvals_pending") == 1
        # An agent cannot approve (not even its own call); an approver can.
        with pytest.raises(ForbiddenError):
            await gw.approvals.decide(AGENT, approval_id, grant=True, note="")
        await gw.approvals.decide(APPROVER, approval_id, grant=True, note="go")
        granted = audit.events[-1]
        assert (granted.kind, granted.principal, granted.approval.approver) == ("approval_granted", "alice", "alice")
        # Other arguments: asked again, a new approval; the approved call runs once.
        other = (await gw.invoke(call('{"command": "git push --force"}'))).decision
        assert other.refusal == "failed_precondition"
        assert other.approval.id != approval_id
        ran = await gw.invoke(call())
        assert ran.decision.allowed
        assert [r.code for r in ran.decision.reasons] == ["approval_granted"]
        assert ran.run is not None
        assert executor.plans[-1].argv == ("sh", "-c", "git push")
        assert kinds(audit)[-3:] == ["decision", "approval_used", "execution"]
        assert audit.events[-3].approval.id == approval_id
        again = (await gw.invoke(call())).decision
        assert again.refusal == "failed_precondition"
        assert again.approval.id not in (approval_id, other.approval.id)
        # A later policy revision re-decides: the approval does not carry over.
        await gw.approvals.decide(APPROVER, again.approval.id, grant=True, note="")
        policy.revision = "rev-2"
        moved = (await gw.invoke(call())).decision
        assert moved.refusal == "failed_precondition"
        assert moved.approval.binding.policy_revision == "rev-2"

    asyncio.run(scenario())
    assert len(executor.plans) == 1
    assert prom.get_sample_value("airlock_gateway_approvals_total", {"event": "used"}) == 1
    decided = "airlock_gateway_approval_decision_duration_seconds_count"
    assert prom.get_sample_value(decided, {"outcome": "granted"}) == 2
    assert prom.get_sample_value(
        "airlock_gateway_decisions_total",
        {"tool": "shell", "decision": "ask", "reason": "approval_pending", "profile": "other"},
    ) == pytest.approx(4)


def test_shadowed_ask_runs_and_says_would_ask(tmp_path: Path, prom: CollectorRegistry) -> None:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    policy, audit, executor = Policy(), Audit(), Executor()
    policy.result = {
        "allow": True,
        "ask": False,
        "reasons": [{"code": "allowed", "message": "granted"}],
        "shadow_asks": [{"code": "approval_required", "message": "needs approval"}],
        "obligations": {"limits": dict(LIMITS), "network": {"mode": "none"}},
    }
    gw = Gateway(
        registry=registry,
        policy=policy,
        executor=executor,
        audit=audit,
        metrics=GatewayMetrics(prom, registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 4096),
    )
    result = asyncio.run(gw.invoke(call()))
    assert result.decision.allowed
    assert result.run is not None
    event = audit.events[0]
    assert (event.decision, event.would_ask, [r.code for r in event.shadow_ask_reasons]) == (
        "allow",
        True,
        ["approval_required"],
    )
    assert gw.approvals.store.pending() == 0
    assert prom.get_sample_value(
        "airlock_gateway_decisions_total",
        {"tool": "shell", "decision": "would_ask", "reason": "approval_required", "profile": "other"},
    ) == pytest.approx(1)


# -- the agent loop's side ---------------------------------------------------------------


def test_the_agent_tells_the_model_the_call_awaits_approval() -> None:
    from airlock import agent  # noqa: PLC0415 - the agent side only here
    from airlock.agent._items import AWAITING_APPROVAL, refusal_text  # noqa: PLC0415
    from airlock.v1 import call_pb2  # noqa: PLC0415

    decision = call_pb2.Decision(decision_id="d-9", verdict=call_pb2.VERDICT_ASK, approval_id="apr_1")
    held = agent.ToolResult(
        False,
        "d-9",
        (agent.Reason("approval_pending", "awaits apr_1"), agent.Reason("approval_required", "needs approval")),
        status="FAILED_PRECONDITION",
        decision=decision,
    )
    assert json.loads(agent.output_text_for(held)) == {
        "error": "awaiting approval",
        "approval_id": "apr_1",
        "decision_id": "d-9",
        "message": AWAITING_APPROVAL,
        "reasons": [{"code": "approval_required", "message": "needs approval"}],
    }
    assert refusal_text(held).startswith("awaiting approval apr_1: ")
    denied = replace(held, reasons=(agent.Reason("argument_denied", "no"),))
    assert json.loads(agent.output_text_for(denied))["error"] == "refused by policy"


def test_invoke_waits_for_an_approver_when_configured(tmp_path: Path, prom: CollectorRegistry) -> None:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    audit, executor = Audit(), Executor()
    gw = Gateway(
        registry=registry,
        policy=Policy(),
        executor=executor,
        audit=audit,
        metrics=GatewayMetrics(prom, registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 4096, approval_wait_s=5),
    )

    async def scenario() -> tuple[bool, float]:
        started = asyncio.get_running_loop().time()
        invoke = asyncio.create_task(gw.invoke(call()))
        while not gw.approvals.store.pending():
            await asyncio.sleep(0.01)
        (pending,) = gw.approvals.store.listed()
        await gw.approvals.decide(APPROVER, pending.id, grant=True, note="")
        result = await invoke
        return result.decision.allowed, asyncio.get_running_loop().time() - started

    allowed, took = asyncio.run(scenario())
    assert allowed
    assert took < 4
    assert len(executor.plans) == 1
    assert [e.kind for e in audit.events] == [
        "decision",
        "approval_requested",
        "approval_granted",
        "decision",
        "approval_used",
        "execution",
    ]


# -- review findings: what the approver sees, and nothing changes without its record ----


def test_the_approver_sees_the_raw_arguments_and_their_hash(
    tmp_path: Path, prom: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The audit masker shows PASSWORD="**masked**": an approver shown that
    # would approve a hidden force push. Approvers see the exact bytes.
    gw, _, audit, _ = make(tmp_path, prom)
    raw = json.dumps({"command": 'PASSWORD="$(git push --force origin HEAD:main)" git push origin feature'})

    async def scenario() -> Approval:
        held = (await gw.invoke(call(raw))).decision
        shown = await gw.approvals.shown(APPROVER, held.approval.id)
        await gw.approvals.decide(APPROVER, held.approval.id, grant=True, note="")
        return shown

    shown = asyncio.run(scenario())
    digest = hashlib.sha256(raw.encode()).hexdigest()
    assert (shown.arguments, shown.binding.arguments_sha256) == (raw, digest)
    # The approval's events tie it to those exact bytes.
    assert [(e.kind, e.approval.arguments_sha256) for e in audit.events if e.kind.startswith("approval_")] == [
        ("approval_requested", digest),
        ("approval_granted", digest),
    ]
    response = approvals_pb2.GetApprovalResponse(approval=approval_to_proto(shown, full=True))
    monkeypatch.setattr(_approvals_cmd, "_call", lambda *_: response)
    assert _approvals_cmd.show(Target("unix:/nowhere", None), shown.id, as_json=False, timeout_s=1) == 0
    out = capsys.readouterr().out
    assert "$(git push --force origin HEAD:main)" in out
    assert "**masked**" not in out
    assert f"sha256 {digest}" in out
    assert _approvals_cmd.show(Target("unix:/nowhere", None), shown.id, as_json=True, timeout_s=1) == 0
    assert json.loads(capsys.readouterr().out)["arguments"] == raw


@pytest.mark.parametrize(
    "hidden",
    [
        pytest.param("\u3164", id="hangul-filler"),
        pytest.param("\u115f", id="hangul-choseong-filler"),
        pytest.param("\u1160", id="hangul-jungseong-filler"),
        pytest.param("\uffa0", id="halfwidth-hangul-filler"),
        pytest.param("\u00a0", id="no-break-space"),
        pytest.param("\u2003", id="em-space"),
        pytest.param("\u0301", id="combining-mark"),
        pytest.param("\u202e", id="bidi-override"),
        pytest.param("\x1b", id="escape"),
    ],
)
def test_show_escapes_what_could_hide_text(hidden: str) -> None:
    assert escape(f"git{hidden}push") == f"git{ascii(hidden)[1:-1]}push"
    assert escape("git push é ✓") == "git push é ✓"


def test_a_grant_that_cannot_be_recorded_is_not_granted(tmp_path: Path, prom: CollectorRegistry) -> None:
    gw, _, audit, executor = make(tmp_path, prom, approval_wait_s=0.3)

    async def scenario() -> None:
        invoke = asyncio.create_task(gw.invoke(call()))
        while not await gw.approvals.listed(APPROVER, everything=False):
            await asyncio.sleep(0.01)
        (pending,) = await gw.approvals.listed(APPROVER, everything=False)
        audit.fail_kinds = {"approval_granted"}
        with pytest.raises(AuditError) as err:
            await gw.approvals.decide(APPROVER, pending.id, grant=True, note="")
        assert err.value.code == "audit_failed"
        # The waiting Invoke was not woken, and the approval is still pending.
        assert (await invoke).decision.refusal == "failed_precondition"
        assert gw.approvals.store.get(pending.id).state == "pending"
        audit.fail_kinds = set()
        assert (await gw.invoke(call())).decision.refusal == "failed_precondition"
        await gw.approvals.decide(APPROVER, pending.id, grant=True, note="")
        assert gw.approvals.store.get(pending.id).state == "granted"

    asyncio.run(scenario())
    assert executor.plans == []
    assert kinds(audit).count("approval_granted") == 1


def test_every_expiry_is_written_exactly_once(tmp_path: Path, prom: CollectorRegistry) -> None:
    gw, _, audit, _ = make(tmp_path, prom)
    clock = Clock()
    gw.approvals.store._clock = clock
    ttl = gw.approvals.store.ttl_s

    async def scenario() -> None:
        first = (await gw.invoke(call())).decision.approval
        await gw.approvals.decide(APPROVER, first.id, grant=True, note="")
        clock.t += ttl + 1
        # Past its time, before the sweep: unusable, so the retry asks anew.
        second = (await gw.invoke(call())).decision.approval
        assert second.id != first.id
        assert kinds(audit).count("approval_expired") == 0
        await gw.approvals.expire()
        assert gw.approvals.store.get(first.id).state == "expired"
        # A failed expiry write changes nothing, and is tried again.
        clock.t += ttl + 1
        audit.fail_kinds = {"approval_expired"}
        with pytest.raises(AuditError):
            await gw.approvals.expire()
        assert gw.approvals.store.get(second.id).state == "pending"
        with pytest.raises(ApprovalError) as err:
            await gw.approvals.decide(APPROVER, second.id, grant=True, note="")
        assert err.value.code == "approval_not_pending"
        audit.fail_kinds = set()
        await gw.approvals.expire()
        await gw.approvals.expire()
        assert gw.approvals.store.get(second.id).state == "expired"

    asyncio.run(scenario())
    expired = [e.approval.id for e in audit.events if e.kind == "approval_expired"]
    assert len(expired) == 2
    assert len(set(expired)) == 2
    assert prom.get_sample_value("airlock_gateway_approvals_total", {"event": "expired"}) == 2


@pytest.mark.parametrize("failing", ["decision", "approval_requested"])
def test_no_approval_is_held_without_its_records(tmp_path: Path, prom: CollectorRegistry, failing: str) -> None:
    gw, _, audit, _ = make(tmp_path, prom)
    audit.fail_kinds = {failing}
    held = asyncio.run(gw.invoke(call())).decision
    assert (held.verdict, held.refusal, held.approval) == ("deny", "unavailable", None)
    assert [r.code for r in held.reasons] == ["audit_failed"]
    assert gw.approvals.store.listed(everything=True) == []
    assert prom.get_sample_value("airlock_gateway_approvals_pending") == 0
    audit.fail_kinds = set()
    again = asyncio.run(gw.invoke(call())).decision
    assert again.refusal == "failed_precondition"
    assert kinds(audit)[-2:] == ["decision", "approval_requested"]


@pytest.mark.parametrize("failing", ["decision", "approval_used"])
def test_nothing_runs_without_the_used_record(tmp_path: Path, prom: CollectorRegistry, failing: str) -> None:
    gw, _, audit, executor = make(tmp_path, prom)

    async def scenario() -> None:
        aid = (await gw.invoke(call())).decision.approval.id
        await gw.approvals.decide(APPROVER, aid, grant=True, note="")
        audit.fail_kinds = {failing}
        refused = await gw.invoke(call())
        assert (refused.decision.allowed, refused.run) == (False, None)
        assert [r.code for r in refused.decision.reasons] == ["audit_failed"]
        # Put back: the next retry, recorded, runs on it.
        assert gw.approvals.store.get(aid).state == "granted"
        audit.fail_kinds = set()
        ran = await gw.invoke(call())
        assert ran.decision.allowed
        assert gw.approvals.store.get(aid).state == "used"

    asyncio.run(scenario())
    assert len(executor.plans) == 1
    assert kinds(audit).count("approval_used") == 1


def test_shadowed_denies_of_an_ask_reach_the_approver_and_the_run(tmp_path: Path, prom: CollectorRegistry) -> None:
    gw, policy, audit, _ = make(tmp_path, prom)
    policy.result = ask_doc(shadow=[{"code": "argument_denied", "message": "a new rule would deny"}])

    async def scenario() -> tuple[Approval, Any]:
        held = (await gw.invoke(call())).decision
        assert [r.code for r in held.shadow] == ["argument_denied"]
        shown = await gw.approvals.shown(APPROVER, held.approval.id)
        await gw.approvals.decide(APPROVER, held.approval.id, grant=True, note="")
        return shown, await gw.invoke(call())

    shown, ran = asyncio.run(scenario())
    assert [r.code for r in shown.shadow] == ["argument_denied"]
    assert [r.code for r in approval_to_proto(shown).shadow_reasons] == ["argument_denied"]
    assert ran.decision.allowed
    assert [r.code for r in ran.decision.shadow] == ["argument_denied"]
    event = [e for e in audit.events if e.kind == "decision"][-1]
    assert (event.decision, event.would_deny, [r.code for r in event.shadow_reasons]) == (
        "allow",
        True,
        ["argument_denied"],
    )
    assert prom.get_sample_value(
        "airlock_gateway_decisions_total",
        {"tool": "shell", "decision": "would_deny", "reason": "argument_denied", "profile": "other"},
    ) == pytest.approx(1)


def test_an_approval_is_bound_to_the_requested_limits(tmp_path: Path, prom: CollectorRegistry) -> None:
    gw, _, audit, executor = make(tmp_path, prom)

    async def scenario() -> None:
        held = (await gw.invoke(call(limits=Limits(timeout_ms=1000)))).decision
        await gw.approvals.decide(APPROVER, held.approval.id, grant=True, note="")
        other = (await gw.invoke(call(limits=Limits(timeout_ms=10_000)))).decision
        assert other.refusal == "failed_precondition"
        assert other.approval.id != held.approval.id
        assert (await gw.invoke(call(limits=Limits(timeout_ms=1000)))).decision.allowed

    asyncio.run(scenario())
    assert len(executor.plans) == 1
    requested = [e for e in audit.events if e.kind == "approval_requested"]
    assert requested[0].approval.requested_limits_sha256 != requested[1].approval.requested_limits_sha256


# -- gateway.yaml ------------------------------------------------------------------------

DATA = Path(__file__).resolve().parents[1] / "data" / "configs"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gateway_approvals_wait_over_ttl.yaml", "approvals.wait_ms must be below approvals.ttl_ms"),
        ("gateway_approvals_unknown_key.yaml", "approvals.ttl: unknown key; expected one of:"),
        ("gateway_approver_is_agent.yaml", "agents[0]: agent 'a': roles 'agent' and 'approver' cannot be combined"),
    ],
)
def test_check_names_the_file_and_the_approvals_key(name: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "airlock.gateway", "check", "--config", str(DATA / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert name in proc.stderr
    assert message in proc.stderr


def test_approvals_defaults() -> None:
    from airlock.gateway._config import ApprovalsConfig  # noqa: PLC0415

    assert ApprovalsConfig() == ApprovalsConfig(wait_ms=0, ttl_ms=900_000, max_pending_per_principal=100)
