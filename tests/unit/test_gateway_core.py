"""gateway._core.Gateway with fakes at every seam: input checks, fail-closed
policy handling, audit-before-action, and the run plan handed to the executor."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from airlock.common.egress_http import HttpRule, SecretRef
from airlock.common.wire import InputFile
from airlock.gateway import load_registry
from airlock.gateway._answer import parse_answer
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._errors import AuditError, ExecutorError, PolicyError
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, Limits, Obligations, Principal, Reason, RunOutcome, RunSpec
from airlock.gateway._policy import PolicyResult
from airlock.v1 import audit_pb2

MiB = 1024**2
ALICE = Principal("alice", "default", "token")
DECISION_PATH = "airlock/decision"
GRANTED_PATH = "airlock/granted_tools"
ALLOW_LIMITS = {
    "memory_bytes": 256 * MiB,
    "cpu_millis": 500,
    "pids": 64,
    "timeout_ms": 10_000,
    "output_bytes": MiB,
    "tmpfs_bytes": 16 * MiB,
}
REGISTRY = {
    "version": 1,
    "tools": {
        "python": {
            "description": "Run Python.",
            "image": "sandbox-python:test",
            "argv": ["python3", "-I", "-c", "{code}"],
            "env": {"LANG": "C.UTF-8"},
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}},
                "required": ["code"],
                "additionalProperties": False,
            },
        },
        "sleep": {
            "description": "Sleep.",
            "image": "sandbox-python:test",
            "argv": ["sleep", "{seconds}"],
            "runtime": "runsc",
            "parameters": {
                "type": "object",
                "properties": {"seconds": {"type": "integer"}},
                "required": ["seconds"],
            },
        },
        "patch": {
            "description": "Apply a patch (free text).",
            "item_type": "custom_tool_call",
            "image": "sandbox-python:test",
            "argv": ["apply", "{input}"],
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
        },
        "fetch": {
            "description": "Fetch a URL.",
            "image": "sandbox-python:test",
            "argv": ["fetch", "{url}"],
            "allowed_network": True,
            "egress_allowlist": ["*.example.org:443"],
            "parameters": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
        },
    },
}


def allow_doc(**network: Any) -> dict[str, Any]:
    return {
        "allow": True,
        "reasons": [{"code": "allowed", "message": "granted"}],
        "obligations": {"limits": dict(ALLOW_LIMITS), "network": network or {"mode": "none", "egress_allowlist": []}},
    }


def deny_doc(code: str = "tool_not_granted", message: str = "not for you") -> dict[str, Any]:
    return {"allow": False, "reasons": [{"code": code, "message": message}], "obligations": {}}


_DEFAULT = object()


class FakePolicy:
    def __init__(self, result: Any = _DEFAULT, *, error: Exception | None = None, revision: str = "rev-1") -> None:
        self.result = allow_doc() if result is _DEFAULT else result
        self.error = error
        self.revision = revision
        self.calls: list[tuple[str, Any]] = []

    async def evaluate(self, path: str, input_doc: Any) -> PolicyResult:
        self.calls.append((path, copy.deepcopy(input_doc)))
        if self.error is not None:
            raise self.error
        return PolicyResult(self.result, self.revision)

    async def close(self) -> None:
        pass


class FakeAudit:
    def __init__(self, fail_kinds: tuple[str, ...] = ()) -> None:
        self.fail_kinds = fail_kinds
        self.events: list[audit_pb2.AuditEvent] = []

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        if event.kind in self.fail_kinds:
            raise AuditError("audit write to /x failed: disk full")
        copied = audit_pb2.AuditEvent()
        copied.CopyFrom(event)
        self.events.append(copied)

    def close(self) -> None:
        pass


OK_RUN = RunOutcome("ok", 0, b"1\n", b"", False, 12, container_start_ms=80)


class FakeExecutor:
    def __init__(self, outcome: RunOutcome = OK_RUN, error: Exception | None = None) -> None:
        self.outcome = outcome
        self.error = error
        self.plans: list[RunSpec] = []

    async def run(self, plan: RunSpec, inputs: Sequence[InputFile] = ()) -> RunOutcome:
        self.plans.append(plan)
        if self.error is not None:
            raise self.error
        return self.outcome


@dataclass
class Harness:
    gateway: Gateway
    policy: FakePolicy
    executor: FakeExecutor
    audit: FakeAudit
    prom: CollectorRegistry
    extra: dict[str, Any] = field(default_factory=dict)

    def sample(self, name: str, **labels: str) -> float:
        return self.prom.get_sample_value(name, labels) or 0.0

    def decisions(self, tool: str, decision: str, reason: str) -> float:
        """Summed over the profile label."""
        want = {"tool": tool, "decision": decision, "reason": reason}
        metric = next(m for m in self.prom.collect() if m.name == "airlock_gateway_decisions")
        return sum(
            s.value
            for s in metric.samples
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in want.items())
        )

    def decisions_total(self) -> float:
        metric = next(m for m in self.prom.collect() if m.name == "airlock_gateway_decisions")
        return sum(s.value for s in metric.samples if s.name.endswith("_total"))


@pytest.fixture
def registry_path(tmp_path: Path) -> Path:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    return path


@pytest.fixture
def make(registry_path: Path, prom: CollectorRegistry):
    def build(
        policy: FakePolicy | None = None,
        executor: FakeExecutor | None = None,
        audit: FakeAudit | None = None,
        max_arguments_bytes: int = 1024,
    ) -> Harness:
        registry = load_registry(registry_path)
        policy = policy or FakePolicy()
        executor = executor or FakeExecutor()
        audit = audit or FakeAudit()
        gateway = Gateway(
            registry=registry,
            policy=policy,
            executor=executor,
            audit=audit,
            metrics=GatewayMetrics(prom, registry.tools.keys()),
            settings=CoreSettings(DECISION_PATH, GRANTED_PATH, max_arguments_bytes),
        )
        return Harness(gateway, policy, executor, audit, prom)

    return build


def call_input(
    *,
    call_id: str = "call-1",
    item_type: Any = "function_call",
    tool: str = "python",
    arguments: str = '{"code": "print(1)"}',
    principal: Principal | None = ALICE,
    rpc: Any = "Invoke",
    authn_error: str = "",
) -> CallInput:
    return CallInput(
        call=Call(call_id=call_id, item_type=item_type, tool=tool, arguments=arguments, session_id="sess-1"),
        principal=principal,
        rpc=rpc,
        authn_error=authn_error,
    )


def assert_single_deny_event(h: Harness, decision_id: str, reason: str) -> audit_pb2.AuditEvent:
    assert len(h.audit.events) == 1
    (event,) = h.audit.events
    assert event.kind == "decision"
    assert event.decision == "deny"
    assert event.decision_id == decision_id
    assert [r.code for r in event.reasons] == [reason]
    assert not event.HasField("execution")
    return event


# -- input refusals: nothing reaches the policy or the executor ------------------


@pytest.mark.parametrize(
    ("overrides", "refusal", "reason", "tool_label", "message"),
    [
        pytest.param(
            {"principal": None, "authn_error": "unknown token"},
            "unauthenticated",
            "unauthenticated",
            "python",
            "unknown token",
            id="no-principal",
        ),
        pytest.param(
            {"principal": None},
            "unauthenticated",
            "unauthenticated",
            "python",
            "missing or invalid token",
            id="no-principal-no-why",
        ),
        pytest.param(
            {"principal": None, "call_id": ""},
            "unauthenticated",
            "unauthenticated",
            "python",
            "",
            id="authn-checked-first",
        ),
        pytest.param({"call_id": ""}, "invalid_argument", "call_id_missing", "python", "call_id", id="empty-call-id"),
        pytest.param(
            {"item_type": ""}, "invalid_argument", "item_type_missing", "python", "item_type", id="empty-item-type"
        ),
        pytest.param({"tool": ""}, "invalid_argument", "tool_missing", "unregistered", "call.tool", id="empty-tool"),
        pytest.param(
            {"arguments": '{"code": "' + "x" * 60 + '"}'},
            "invalid_argument",
            "arguments_too_large",
            "python",
            "arguments are 72 bytes; the limit is 64",
            id="too-large",
        ),
        pytest.param(
            # 42 characters but 72 bytes: the limit is on bytes.
            {"arguments": '{"code": "' + "é" * 30 + '"}'},
            "invalid_argument",
            "arguments_too_large",
            "python",
            "arguments are 72 bytes",
            id="too-large-multibyte",
        ),
        pytest.param(
            {"arguments": "x" * 100},
            "invalid_argument",
            "arguments_too_large",
            "python",
            "",
            id="size-checked-before-json",
        ),
        pytest.param(
            {"arguments": '{"code": '},
            "invalid_argument",
            "arguments_malformed",
            "python",
            "not valid JSON",
            id="bad-json",
        ),
        pytest.param(
            {"arguments": "[1, 2]"},
            "invalid_argument",
            "arguments_malformed",
            "python",
            "must be a JSON object, got list",
            id="json-list",
        ),
        pytest.param(
            {"arguments": '"print(1)"'},
            "invalid_argument",
            "arguments_malformed",
            "python",
            "got str",
            id="json-string",
        ),
        pytest.param(
            {"arguments": "null"}, "invalid_argument", "arguments_malformed", "python", "got NoneType", id="json-null"
        ),
        pytest.param(
            {"tool": "no_such_tool", "arguments": "{"},
            "invalid_argument",
            "arguments_malformed",
            "unregistered",
            "not valid JSON",
            id="unknown-tool-label",
        ),
    ],
)
def test_input_refusals(make, overrides, refusal, reason, tool_label, message) -> None:
    h = make(max_arguments_bytes=64)
    result = asyncio.run(h.gateway.invoke(call_input(**overrides)))
    decision = result.decision
    assert decision.allowed is False
    assert decision.refusal == refusal
    assert [r.code for r in decision.reasons] == [reason]
    assert message in decision.reasons[0].message
    assert result.run is None
    assert h.policy.calls == []
    assert h.executor.plans == []
    event = assert_single_deny_event(h, decision.decision_id, reason)
    assert event.rpc == "Invoke"
    assert h.decisions(tool_label, "deny", reason) == 1
    assert h.decisions_total() == 1
    assert h.sample("airlock_gateway_audit_events_total", kind="decision") == 1
    assert h.sample("airlock_gateway_in_flight_calls") == 0


def test_arguments_exactly_at_the_limit_reach_the_policy(make) -> None:
    arguments = '{"code": "' + "x" * 52 + '"}'
    assert len(arguments) == 64
    h = make(max_arguments_bytes=64)
    decision = asyncio.run(h.gateway.decide(call_input(arguments=arguments, rpc="Decide")))
    assert decision.allowed is True
    assert len(h.policy.calls) == 1


@pytest.mark.parametrize("arguments", ["", "   "])
def test_empty_function_arguments_are_an_empty_object(make, arguments) -> None:
    h = make(policy=FakePolicy(deny_doc()))
    asyncio.run(h.gateway.decide(call_input(arguments=arguments)))
    (_, doc) = h.policy.calls[0]
    assert doc["call"]["arguments"] == {}
    assert doc["call"]["arguments_errors"] == ['(root): missing required properties ["code"]']


def test_custom_tool_call_takes_free_text(make) -> None:
    text = '*** Begin Patch\n{ this is "not JSON"\n*** End Patch'
    h = make()
    result = asyncio.run(h.gateway.invoke(call_input(item_type="custom_tool_call", tool="patch", arguments=text)))
    assert result.decision.allowed is True
    assert [r.code for r in result.decision.reasons] == ["allowed"]
    (_, doc) = h.policy.calls[0]
    assert doc["call"]["arguments"] == {"input": text}
    assert doc["call"]["arguments_errors"] == []
    (plan,) = h.executor.plans
    assert plan.argv == ("apply", text)


def test_deeply_nested_arguments_are_denied_and_audited(make) -> None:
    arguments = '{"code": ' + "[" * 5000 + "]" * 5000 + "}"
    h = make(max_arguments_bytes=64 * 1024)
    decision = asyncio.run(h.gateway.decide(call_input(arguments=arguments)))
    assert decision.allowed is False
    assert decision.reasons[0].code in ("arguments_malformed", "arguments_invalid")
    assert len(h.audit.events) == 1


# -- the policy engine failing or answering nonsense ---------------------------


@pytest.mark.parametrize("code", ["policy_unreachable", "policy_timeout", "policy_http_error", "policy_undefined"])
def test_policy_errors_fail_closed(make, code) -> None:
    h = make(policy=FakePolicy(error=PolicyError(f"OPA said no ({code})", code=code)))
    result = asyncio.run(h.gateway.invoke(call_input()))
    decision = result.decision
    assert (decision.allowed, decision.refusal) == (False, "permission_denied")
    assert [(r.code, r.message) for r in decision.reasons] == [(code, f"OPA said no ({code})")]
    assert len(h.policy.calls) == 1
    assert h.executor.plans == []
    assert_single_deny_event(h, decision.decision_id, code)
    assert h.decisions("python", "deny", code) == 1
    assert h.decisions_total() == 1


def _doc_with(**changes: Any) -> dict[str, Any]:
    doc = allow_doc()
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = doc
        for part in parents:
            target = target[part]
        target[last] = value
    return doc


HTTP_RULE = {"host": "api.example.org:443", "methods": ["GET"], "paths": ["/v1/**"], "max_body_bytes": 0}
SECRET = {"name": "api_key", "host": "api.example.org:443", "header": "X-Api-Key", "format": "{value}"}


def _http_network(**changes: Any) -> dict[str, Any]:
    """An egress obligation with inspection, one rule and one secret."""
    return {
        "mode": "egress",
        "egress_allowlist": ["api.example.org:443"],
        "egress_allow_cidrs": [],
        "inspect": ["api.example.org:443"],
        "http_rules": [HTTP_RULE],
        "secrets": [SECRET],
        **changes,
    }


MALFORMED_DECISIONS = [
    pytest.param(None, id="null"),
    pytest.param([allow_doc()], id="list"),
    pytest.param(True, id="bare-true"),
    pytest.param(_doc_with(allow="true"), id="allow-string"),
    pytest.param(_doc_with(allow=1), id="allow-int"),
    pytest.param({k: v for k, v in allow_doc().items() if k != "allow"}, id="allow-missing"),
    pytest.param(_doc_with(reasons=[]), id="reasons-empty"),
    pytest.param(_doc_with(reasons={"code": "allowed", "message": "m"}), id="reasons-object"),
    pytest.param(_doc_with(reasons=[{"message": "m"}]), id="reason-without-code"),
    pytest.param(_doc_with(reasons=[{"code": "", "message": "m"}]), id="reason-empty-code"),
    pytest.param(_doc_with(reasons=[{"code": "allowed"}]), id="reason-without-message"),
    pytest.param(_doc_with(reasons=["allowed"]), id="reason-string"),
    pytest.param({k: v for k, v in allow_doc().items() if k != "obligations"}, id="obligations-missing"),
    pytest.param(_doc_with(obligations__limits=[1]), id="limits-list"),
    pytest.param(_doc_with(obligations__network="none"), id="network-string"),
    pytest.param(_doc_with(obligations__limits__memory_bytes=-1), id="negative-limit"),
    pytest.param(_doc_with(obligations__limits__pids=True), id="bool-limit"),
    pytest.param(_doc_with(obligations__limits__cpu_millis=0.5), id="float-limit"),
    pytest.param(_doc_with(obligations__limits__timeout_ms="10s"), id="string-limit"),
    pytest.param(_doc_with(obligations__limits__tmpfs_bytes=0), id="allow-zero-limit"),
    pytest.param(
        _doc_with(obligations__limits={k: v for k, v in ALLOW_LIMITS.items() if k != "output_bytes"}),
        id="allow-missing-limit",
    ),
    pytest.param(_doc_with(obligations__network={"mode": "host"}), id="bad-network-mode"),
    pytest.param(
        _doc_with(obligations__network={"mode": "egress", "egress_allowlist": "*.org"}), id="allowlist-string"
    ),
    pytest.param(_doc_with(obligations__network={"mode": "egress", "egress_allowlist": [443]}), id="allowlist-int"),
    *(
        pytest.param(_doc_with(obligations__network=_http_network(**change)), id=name)
        for name, change in (
            ("inspect-string", {"inspect": "api.example.org:443"}),
            ("inspect-not-allowlisted", {"inspect": ["other.example:443"]}),
            ("inspect-without-egress", {"mode": "none", "egress_allowlist": []}),
            ("rules-object", {"http_rules": {}}),
            ("rule-extra-key", {"http_rules": [{**HTTP_RULE, "priority": 1}]}),
            ("rule-missing-key", {"http_rules": [{k: v for k, v in HTTP_RULE.items() if k != "max_body_bytes"}]}),
            ("rule-methods-string", {"http_rules": [{**HTTP_RULE, "methods": "GET"}]}),
            ("rule-size-bool", {"http_rules": [{**HTTP_RULE, "max_body_bytes": True}]}),
            ("rule-size-negative", {"http_rules": [{**HTTP_RULE, "max_body_bytes": -1}]}),
            ("rule-host-not-inspected", {"http_rules": [{**HTTP_RULE, "host": "b.example:443"}]}),
            ("rule-lower-method", {"http_rules": [{**HTTP_RULE, "methods": ["get"]}]}),
            ("rule-query", {"http_rules": [{**HTTP_RULE, "paths": ["/a?b"]}]}),
            ("secrets-object", {"secrets": {}}),
            ("secret-int-name", {"secrets": [{**SECRET, "name": 7}]}),
            ("secret-extra-key", {"secrets": [{**SECRET, "value": "x"}]}),
            ("secret-framing-header", {"secrets": [{**SECRET, "header": "Content-Length"}]}),
            ("secret-format-crlf", {"secrets": [{**SECRET, "format": "{value}\r\nX: y"}]}),
            ("secret-host-not-inspected", {"secrets": [{**SECRET, "host": "b.example:443"}]}),
        )
    ),
    pytest.param(
        {"allow": False, "reasons": [{"code": "x", "message": "m"}], "obligations": {"limits": {"pids": -1}}},
        id="deny-negative-limit",
    ),
]


@pytest.mark.parametrize("doc", MALFORMED_DECISIONS)
def test_malformed_decision_is_policy_malformed(make, doc) -> None:
    h = make(policy=FakePolicy(doc, revision="rev-7"))
    result = asyncio.run(h.gateway.invoke(call_input()))
    decision = result.decision
    assert (decision.allowed, decision.refusal) == (False, "permission_denied")
    assert [r.code for r in decision.reasons] == ["policy_malformed"]
    assert "malformed policy decision" in decision.reasons[0].message
    assert decision.policy_revision == "rev-7"
    assert h.executor.plans == []
    event = assert_single_deny_event(h, decision.decision_id, "policy_malformed")
    assert event.policy_revision == "rev-7"
    assert h.decisions("python", "deny", "policy_malformed") == 1


def test_policy_allowing_an_unregistered_tool_is_denied(make) -> None:
    h = make()
    result = asyncio.run(h.gateway.invoke(call_input(tool="rm_rf", arguments="{}")))
    decision = result.decision
    assert (decision.allowed, decision.refusal) == (False, "permission_denied")
    assert [(r.code, r.message) for r in decision.reasons] == [
        ("policy_malformed", "policy allowed an unregistered tool")
    ]
    assert h.executor.plans == []
    assert_single_deny_event(h, decision.decision_id, "policy_malformed")
    assert h.decisions("unregistered", "deny", "policy_malformed") == 1


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        pytest.param('{"code": 5}', "code: does not match 'type' \"string\"", id="wrong-type"),
        pytest.param("{}", '(root): missing required properties ["code"]', id="missing"),
        pytest.param('{"code": "1", "evil": 1}', "(root): 1 properties not allowed by the schema", id="extra"),
    ],
)
def test_policy_allowing_schema_invalid_arguments_is_denied(make, arguments, error) -> None:
    h = make()
    result = asyncio.run(h.gateway.invoke(call_input(arguments=arguments)))
    decision = result.decision
    assert (decision.allowed, decision.refusal) == (False, "permission_denied")
    assert [r.code for r in decision.reasons] == ["arguments_invalid"]
    assert error in decision.reasons[0].message
    (_, doc) = h.policy.calls[0]
    assert doc["call"]["arguments_errors"][0].startswith(error)
    assert h.executor.plans == []
    assert_single_deny_event(h, decision.decision_id, "arguments_invalid")
    assert h.decisions("python", "deny", "arguments_invalid") == 1


@pytest.mark.parametrize(
    ("code", "label"),
    [
        pytest.param("tool_not_granted", "tool_not_granted", id="shipped-code"),
        pytest.param("network_not_permitted", "network_not_permitted", id="shipped-code-2"),
        pytest.param("weekend_freeze", "policy_other", id="custom-code"),
    ],
)
def test_policy_deny_keeps_its_reason(make, code, label) -> None:
    h = make(policy=FakePolicy(deny_doc(code, "denied by policy"), revision="rev-2"))
    result = asyncio.run(h.gateway.invoke(call_input()))
    decision = result.decision
    assert (decision.allowed, decision.refusal) == (False, "permission_denied")
    assert [(r.code, r.message) for r in decision.reasons] == [(code, "denied by policy")]
    assert decision.policy_revision == "rev-2"
    assert h.executor.plans == []
    # The caller and the audit log see the code verbatim; only the metric folds it.
    assert_single_deny_event(h, decision.decision_id, code)
    assert h.decisions("python", "deny", label) == 1
    assert h.decisions_total() == 1


def test_policy_input_document(make) -> None:
    h = make()
    decision = asyncio.run(h.gateway.decide(call_input(rpc="Decide")))
    ((path, doc),) = h.policy.calls
    assert path == DECISION_PATH
    assert doc["principal"] == {"id": "alice", "profile": "default", "authn": "token", "roles": ["agent"]}
    assert doc["call"] == {
        "call_id": "call-1",
        "item_type": "function_call",
        "tool": "python",
        "arguments": {"code": "print(1)"},
        "arguments_errors": [],
        "arguments_bytes": len('{"code": "print(1)"}'),
        "session_id": "sess-1",
    }
    assert doc["request"]["rpc"] == "Decide"
    assert doc["request"]["decision_id"] == decision.decision_id
    assert doc["request"]["time"].endswith("Z")


# -- allowed calls ---------------------------------------------------------------


def test_allowed_invoke_runs_the_plan_and_audits_twice(make) -> None:
    h = make()
    result = asyncio.run(h.gateway.invoke(call_input()))
    decision = result.decision
    assert (decision.allowed, decision.refusal) == (True, "none")
    assert [r.code for r in decision.reasons] == ["allowed"]
    assert decision.principal == "alice"
    assert decision.policy_revision == "rev-1"
    assert result.run == OK_RUN
    (plan,) = h.executor.plans
    assert plan == RunSpec(
        run_id=decision.decision_id,
        tool="python",
        image="sandbox-python:test",
        argv=("python3", "-I", "-c", "print(1)"),
        env={"LANG": "C.UTF-8"},
        limits=Limits(**ALLOW_LIMITS),
        network_mode="none",
        egress_allowlist=(),
        runtime="runc",
        # The authenticated principal and the call's session: what keys a
        # session sandbox at the executor.
        principal="alice",
        session_id="sess-1",
    )
    kinds = [e.kind for e in h.audit.events]
    assert kinds == ["decision", "execution"]
    decision_event, execution_event = h.audit.events
    assert decision_event.decision_id == execution_event.decision_id == decision.decision_id
    assert decision_event.decision == execution_event.decision == "allow"
    assert decision_event.obligations.limits.memory_bytes == ALLOW_LIMITS["memory_bytes"]
    assert decision_event.principal == "alice"
    assert decision_event.call_id == "call-1"
    assert execution_event.execution.outcome == "ok"
    assert execution_event.execution.stdout_bytes == 2
    assert execution_event.execution.container_start_ms == 80
    assert h.decisions("python", "allow", "allowed") == 1
    assert h.decisions_total() == 1
    assert h.sample("airlock_gateway_executions_total", tool="python", outcome="ok") == 1
    assert h.sample("airlock_gateway_audit_events_total", kind="decision") == 1
    assert h.sample("airlock_gateway_audit_events_total", kind="execution") == 1
    assert h.sample("airlock_gateway_invoke_duration_seconds_count", tool="python") == 1
    assert h.sample("airlock_gateway_in_flight_calls") == 0


@pytest.mark.parametrize(
    ("tool", "arguments", "argv", "runtime"),
    [
        pytest.param("sleep", '{"seconds": 5}', ("sleep", "5"), "runsc", id="non-string-argument"),
        pytest.param(
            "python",
            '{"code": "print(\'{code}\')"}',
            ("python3", "-I", "-c", "print('{code}')"),
            "runc",
            id="no-resubstitution",
        ),
        pytest.param(
            "python",
            '{"code": "a b; rm -rf /"}',
            ("python3", "-I", "-c", "a b; rm -rf /"),
            "runc",
            id="one-argv-element",
        ),
    ],
)
def test_plan_argv_substitution(make, tool, arguments, argv, runtime) -> None:
    h = make()
    result = asyncio.run(h.gateway.invoke(call_input(tool=tool, arguments=arguments)))
    assert result.decision.allowed is True
    (plan,) = h.executor.plans
    assert plan.argv == argv
    assert plan.runtime == runtime


def test_egress_obligation_reaches_the_plan(make) -> None:
    policy = FakePolicy(allow_doc(mode="egress", egress_allowlist=["api.example.org:443"]))
    h = make(policy=policy)
    result = asyncio.run(h.gateway.invoke(call_input(tool="fetch", arguments='{"url": "https://api.example.org"}')))
    assert result.decision.obligations == Obligations(Limits(**ALLOW_LIMITS), "egress", ("api.example.org:443",))
    (plan,) = h.executor.plans
    assert (plan.network_mode, plan.egress_allowlist) == ("egress", ("api.example.org:443",))


def test_egress_http_obligations_reach_the_plan_and_the_decision(make) -> None:
    h = make(policy=FakePolicy(allow_doc(**_http_network())))
    result = asyncio.run(h.gateway.invoke(call_input(tool="fetch", arguments='{"url": "https://api.example.org"}')))
    ob = result.decision.obligations
    rule = HttpRule("api.example.org:443", ("GET",), ("/v1/**",), 0)
    secret = SecretRef("api_key", "api.example.org:443", "X-Api-Key", "{value}")
    want = (("api.example.org:443",), (rule,), (secret,))
    assert (ob.egress_inspect, ob.egress_http_rules, ob.egress_secrets) == want
    (plan,) = h.executor.plans
    assert (plan.egress_inspect, plan.egress_http_rules, plan.egress_secrets) == want
    # The audit event's decision shows them too (names, never values).
    network = h.audit.events[0].obligations.network
    assert list(network.inspect_hosts) == ["api.example.org:443"]
    assert [(r.host, list(r.methods), list(r.paths)) for r in network.http_rules] == [
        ("api.example.org:443", ["GET"], ["/v1/**"])
    ]
    assert [(x.name, x.header, x.format) for x in network.secrets] == [("api_key", "X-Api-Key", "{value}")]


def test_parse_egress_http_absent_is_none() -> None:
    answer = parse_answer(allow_doc(mode="egress", egress_allowlist=["a.example:443"]))
    ob = answer.obligations
    assert (ob.egress_inspect, ob.egress_http_rules, ob.egress_secrets) == ((), (), ())


def test_decide_never_runs_anything(make) -> None:
    h = make()
    decision = asyncio.run(h.gateway.decide(call_input(rpc="Decide")))
    assert decision.allowed is True
    assert h.executor.plans == []
    assert [e.kind for e in h.audit.events] == ["decision"]
    assert h.audit.events[0].rpc == "Decide"
    assert h.sample("airlock_gateway_decision_duration_seconds_count", rpc="Decide") == 1


def test_every_decision_gets_its_own_id(make) -> None:
    h = make()
    ids = {asyncio.run(h.gateway.decide(call_input())).decision_id for _ in range(5)}
    assert len(ids) == 5
    assert "" not in ids


def test_executor_error_is_reported_and_audited(make) -> None:
    h = make(executor=FakeExecutor(error=ExecutorError("executor: UNAVAILABLE: socket gone")))
    result = asyncio.run(h.gateway.invoke(call_input()))
    assert result.decision.allowed is True
    assert result.run is not None
    assert result.run.outcome == "error"
    assert result.run.error == "executor_unavailable: executor: UNAVAILABLE: socket gone"
    assert [e.kind for e in h.audit.events] == ["decision", "execution"]
    assert h.audit.events[1].execution.outcome == "error"
    assert h.sample("airlock_gateway_executions_total", tool="python", outcome="error") == 1
    assert h.sample("airlock_gateway_executions_total", tool="python", outcome="ok") == 0


# -- audit failures ------------------------------------------------------------


def test_audit_failure_turns_an_allow_into_a_deny(make) -> None:
    h = make(audit=FakeAudit(fail_kinds=("decision",)))
    result = asyncio.run(h.gateway.invoke(call_input()))
    decision = result.decision
    assert (decision.allowed, decision.refusal) == (False, "unavailable")
    assert [r.code for r in decision.reasons] == ["audit_failed"]
    assert "disk full" in decision.reasons[0].message
    assert result.run is None
    assert h.executor.plans == []
    assert h.audit.events == []
    assert h.sample("airlock_gateway_audit_write_failures_total") == 1
    assert h.sample("airlock_gateway_audit_events_total", kind="decision") == 0
    assert h.decisions("python", "deny", "audit_failed") == 1
    assert h.decisions("python", "allow", "allowed") == 0
    assert h.decisions_total() == 1


def test_audit_failure_on_decide_is_also_a_deny(make) -> None:
    h = make(audit=FakeAudit(fail_kinds=("decision",)))
    decision = asyncio.run(h.gateway.decide(call_input(rpc="Decide")))
    assert (decision.allowed, decision.refusal, decision.reasons[0].code) == (False, "unavailable", "audit_failed")
    assert h.sample("airlock_gateway_audit_write_failures_total") == 1


# -- granted tools -------------------------------------------------------------


def test_granted_tools_lists_only_registered_tools(make) -> None:
    h = make(policy=FakePolicy(["python", "ghost", "patch"], revision="rev-9"))
    names, revision = asyncio.run(h.gateway.granted_tools(ALICE))
    assert (names, revision) == (["python", "patch"], "rev-9")
    ((path, doc),) = h.policy.calls
    assert path == GRANTED_PATH
    assert doc == {"principal": {"id": "alice", "profile": "default", "authn": "token", "roles": ["agent"]}}


@pytest.mark.parametrize("result", [None, {"python": True}, ["python", 3], "python"])
def test_granted_tools_malformed(make, result) -> None:
    h = make(policy=FakePolicy(result))
    with pytest.raises(PolicyError) as info:
        asyncio.run(h.gateway.granted_tools(ALICE))
    assert info.value.code == "policy_malformed"


def test_granted_tools_policy_failure_propagates(make) -> None:
    h = make(policy=FakePolicy(error=PolicyError("down", code="policy_unreachable")))
    with pytest.raises(PolicyError) as info:
        asyncio.run(h.gateway.granted_tools(ALICE))
    assert info.value.code == "policy_unreachable"


# -- parse_answer ----------------------------------------------------------------


def test_parse_decision_allow() -> None:
    answer = parse_answer(allow_doc(mode="egress", egress_allowlist=["a.example:443", "b.example:443"]))
    assert answer.allowed is True
    assert answer.reasons == (Reason("allowed", "granted"),)
    assert answer.obligations == Obligations(Limits(**ALLOW_LIMITS), "egress", ("a.example:443", "b.example:443"))


def test_parse_decision_deny_may_omit_limits_and_network() -> None:
    doc = {
        "allow": False,
        "reasons": [{"code": "b", "message": "two"}, {"code": "a", "message": "one", "extra": 1}],
        "obligations": {},
    }
    answer = parse_answer(doc)
    assert answer.allowed is False
    assert answer.reasons == (Reason("b", "two"), Reason("a", "one"))
    assert answer.obligations == Obligations(Limits(), "none", ())


@pytest.mark.parametrize("doc", MALFORMED_DECISIONS)
def test_parse_decision_malformed(doc) -> None:
    with pytest.raises(PolicyError) as info:
        parse_answer(doc)
    assert info.value.code == "policy_malformed"
