"""The core path on real components: agent call -> gateway -> OPA ->
executor -> hardened container, and every refusal before the executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from helpers import Stack, auth, decision_from_error, tool_call

from airlock.v1 import call_pb2, executor_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airlock.cli", *args],
        env={**os.environ, "AIRLOCK_HOME": str(stack.home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _runs(stack: Stack) -> float:
    """Every RPC the executor has received, authenticated or not."""
    return stack.metric("executor", "airlock_executor_requests_total")


def test_cli_call_allowed_runs_in_a_fresh_container(stack: Stack) -> None:
    before = _runs(stack)
    proc = _cli(stack, "call", "python", '{"code": "print(2+2)"}')
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["decision"] == "allow"
    assert out["stdout"] == "4\n"
    assert out["stderr"] == ""
    assert out["exit_code"] == 0
    assert out["outcome"] == "ok"
    assert isinstance(out["duration_ms"], int)
    uuid.UUID(out["decision_id"])
    assert _runs(stack) == before + 1
    events = stack.audit_events(out["decision_id"])
    assert [e["kind"] for e in events] == ["decision", "execution"]
    assert events[0]["principal"] == "dev-agent"
    assert events[0]["decision"] == "allow"
    assert events[0]["policy_revision"] == stack.info["policy_revision"]
    assert events[1]["execution"]["outcome"] == "ok"


def test_cli_exit_status_is_nonzero_when_the_tool_fails(stack: Stack) -> None:
    proc = _cli(stack, "call", "python", '{"code": "import sys; print(\'x\', file=sys.stderr); sys.exit(3)"}')
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["decision"] == "allow"
    assert out["exit_code"] == 3
    assert out["outcome"] == "nonzero_exit"
    assert out["stderr"] == "x\n"


@pytest.mark.parametrize("tool", ["web_fetch", "no_such_tool"])
def test_ungranted_or_unknown_tool_is_denied_and_never_reaches_the_executor(
    stack: Stack, gateway_stub: gateway_pb2_grpc.GatewayServiceStub, tool: str
) -> None:
    before = _runs(stack)
    denied_before = stack.metric(
        "gateway", "airlock_gateway_decisions_total", {"decision": "deny", "reason": "tool_not_granted"}
    )
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Invoke(
            gateway_pb2.InvokeRequest(call=tool_call(tool, '{"url": "https://en.wikipedia.org/"}')),
            metadata=auth(stack.token),
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    decision = decision_from_error(info.value)
    assert decision.verdict == call_pb2.VERDICT_DENY
    assert [r.code for r in decision.reasons] == ["tool_not_granted"]
    assert decision.reasons[0].message == f'tool "{tool}" is not available to principal "dev-agent"'
    uuid.UUID(decision.decision_id)
    assert decision.decision_id in info.value.details()
    assert _runs(stack) == before
    events = stack.audit_events(decision.decision_id)
    assert [(e["kind"], e["decision"], e["reasons"][0]["code"]) for e in events] == [
        ("decision", "deny", "tool_not_granted")
    ]
    denied_after = stack.metric(
        "gateway", "airlock_gateway_decisions_total", {"decision": "deny", "reason": "tool_not_granted"}
    )
    assert denied_after == denied_before + 1


def test_cli_call_denied_prints_the_decision_and_exits_3(stack: Stack) -> None:
    proc = _cli(stack, "call", "web_fetch", '{"url": "https://en.wikipedia.org/"}')
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    assert out["decision"] == "deny"
    assert out["status"] == "PERMISSION_DENIED"
    assert out["reasons"][0]["code"] == "tool_not_granted"
    uuid.UUID(out["decision_id"])


BIG = json.dumps({"code": "x" * (64 * 1024 + 1)})


@pytest.mark.parametrize(
    ("case", "tool", "arguments", "call_id", "token", "status", "reason"),
    [
        (
            "malformed_json",
            "python",
            '{"code": ',
            "c1",
            "agent",
            grpc.StatusCode.INVALID_ARGUMENT,
            "arguments_malformed",
        ),
        (
            "json_not_object",
            "python",
            '["print(1)"]',
            "c2",
            "agent",
            grpc.StatusCode.INVALID_ARGUMENT,
            "arguments_malformed",
        ),
        ("too_large", "python", BIG, "c3", "agent", grpc.StatusCode.INVALID_ARGUMENT, "arguments_too_large"),
        (
            "missing_call_id",
            "python",
            '{"code": "1"}',
            "",
            "agent",
            grpc.StatusCode.INVALID_ARGUMENT,
            "call_id_missing",
        ),
        ("missing_token", "python", '{"code": "1"}', "c4", None, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"),
        (
            "wrong_token",
            "python",
            '{"code": "1"}',
            "c5",
            "wrong-token-0123456789",
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated",
        ),
        (
            "schema_violation",
            "python",
            '{"code": 42}',
            "c6",
            "agent",
            grpc.StatusCode.PERMISSION_DENIED,
            "arguments_invalid",
        ),
    ],
)
def test_bad_input_is_refused_audited_counted_and_never_executed(
    stack: Stack,
    gateway_stub: gateway_pb2_grpc.GatewayServiceStub,
    case: str,
    tool: str,
    arguments: str,
    call_id: str,
    token: str | None,
    status: grpc.StatusCode,
    reason: str,
) -> None:
    before = _runs(stack)
    labels = {"decision": "deny", "reason": reason}
    counted_before = stack.metric("gateway", "airlock_gateway_decisions_total", labels)
    metadata = () if token is None else auth(stack.token if token == "agent" else token)
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Invoke(
            gateway_pb2.InvokeRequest(call=tool_call(tool, arguments, call_id=call_id)), metadata=metadata, timeout=30
        )
    assert info.value.code() == status, case
    decision = decision_from_error(info.value)
    assert decision.reasons[0].code == reason
    assert reason in info.value.details()
    assert _runs(stack) == before, "bad input reached the executor"
    events = stack.audit_events(decision.decision_id)
    assert len(events) == 1
    assert events[0]["decision"] == "deny"
    assert events[0]["reasons"][0]["code"] == reason
    assert stack.metric("gateway", "airlock_gateway_decisions_total", labels) == counted_before + 1


def test_identity_comes_from_the_token_not_the_request(
    stack: Stack, gateway_stub: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    # The untrusted agent's profile does not grant "shell"; nothing in the
    # request can claim another identity (ToolCall has no principal field).
    assert "principal" not in call_pb2.ToolCall.DESCRIPTOR.fields_by_name
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.Invoke(
            gateway_pb2.InvokeRequest(call=tool_call("shell", '{"command": "id"}')),
            metadata=(*auth(stack.untrusted_token), ("x-principal", "dev-agent")),
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert decision_from_error(info.value).principal == "dev-untrusted"


def test_decide_only_returns_obligations_and_runs_nothing(
    stack: Stack, gateway_stub: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    before = _runs(stack)
    resp = gateway_stub.Decide(
        gateway_pb2.DecideRequest(call=tool_call("python", '{"code": "print(1)"}')),
        metadata=auth(stack.token),
        timeout=10,
    )
    d = resp.decision
    assert d.verdict == call_pb2.VERDICT_ALLOW
    assert d.policy_revision == stack.info["policy_revision"]
    assert d.obligations.limits.memory_bytes == 256 * 1024 * 1024
    assert d.obligations.limits.timeout_ms == 10_000
    assert d.obligations.network.mode == call_pb2.NETWORK_MODE_NONE
    denied = gateway_stub.Decide(
        gateway_pb2.DecideRequest(call=tool_call("web_fetch", '{"url": "x"}')), metadata=auth(stack.token), timeout=10
    )
    assert denied.decision.verdict == call_pb2.VERDICT_DENY
    assert _runs(stack) == before
    assert [e["rpc"] for e in stack.audit_events(d.decision_id)] == ["Decide"]


def test_list_tools_follows_the_principals_grants(
    stack: Stack, gateway_stub: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    default = gateway_stub.ListTools(gateway_pb2.ListToolsRequest(), metadata=auth(stack.token), timeout=10)
    assert default.principal == "dev-agent"
    assert [(t.name, t.item_type) for t in default.tools] == [
        ("apply_patch", call_pb2.ITEM_TYPE_APPLY_PATCH_CALL),
        ("computer", call_pb2.ITEM_TYPE_COMPUTER_CALL),  # the desktop sandbox (docs/computer-use.md)
        ("define_tool", call_pb2.ITEM_TYPE_FUNCTION_CALL),  # the gateway's built-in (docs/dynamic-tools.md)
        ("python", call_pb2.ITEM_TYPE_FUNCTION_CALL),
        ("python_files", call_pb2.ITEM_TYPE_FUNCTION_CALL),
        ("python_script", call_pb2.ITEM_TYPE_CUSTOM_TOOL_CALL),
        ("shell", call_pb2.ITEM_TYPE_FUNCTION_CALL),
        ("shell_builtin", call_pb2.ITEM_TYPE_SHELL_CALL),
        ("web_search", call_pb2.ITEM_TYPE_WEB_SEARCH_CALL),
    ]
    schema = json.loads(default.tools[3].parameters_json_schema)
    assert schema["required"] == ["code"]
    untrusted = gateway_stub.ListTools(gateway_pb2.ListToolsRequest(), metadata=auth(stack.untrusted_token), timeout=10)
    assert [t.name for t in untrusted.tools] == ["python"]
    with pytest.raises(grpc.RpcError) as info:
        gateway_stub.ListTools(gateway_pb2.ListToolsRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_health_and_reflection(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "airlock.v1.GatewayService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(channel)
        assert "airlock.v1.GatewayService" in db.get_services()
        # A client with no local protos can rebuild the service from the server.
        service = descriptor_pool.DescriptorPool(db).FindServiceByName("airlock.v1.GatewayService")
        methods = sorted(m.name for m in service.methods)
        assert methods == [
            "Decide",
            "EndSession",
            "GetToolDefinition",
            "Invoke",
            "ListSessions",
            "ListToolDefinitions",
            "ListTools",
            "Observe",
            "PromoteToolDefinition",
            "RetireToolDefinition",
        ]


def test_a_generic_grpc_client_can_invoke_with_only_the_protos(stack: Stack) -> None:
    # What any gRPC client does with proto/: build the request by name and
    # send it over a plain channel.
    with grpc.insecure_channel(stack.gateway) as channel:
        invoke = channel.unary_unary(
            "/airlock.v1.GatewayService/Invoke",
            request_serializer=gateway_pb2.InvokeRequest.SerializeToString,
            response_deserializer=gateway_pb2.InvokeResponse.FromString,
        )
        resp = invoke(
            gateway_pb2.InvokeRequest(call=tool_call("shell", '{"command": "echo hi; id -u"}')),
            metadata=auth(stack.token),
            timeout=60,
        )
    assert resp.result.outcome == executor_pb2.OUTCOME_OK
    assert resp.stdout == b"hi\n65534\n"


def test_concurrent_calls_each_get_their_own_container(stack: Stack) -> None:
    def one(i: int) -> bytes:
        with grpc.insecure_channel(stack.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            code = f"import os; open('/work/mark', 'w').write('{i}'); "
            code += "print(os.listdir('/work'), open('/work/mark').read())"
            resp = stub.Invoke(
                gateway_pb2.InvokeRequest(call=tool_call("python", json.dumps({"code": code}), call_id=f"c{i}")),
                metadata=auth(stack.token),
                timeout=120,
            )
            return bytes(resp.stdout)

    with ThreadPoolExecutor(6) as pool:
        outputs = list(pool.map(one, range(6)))
    assert outputs == [f"['mark'] {i}\n".encode() for i in range(6)]


def _running(client: Any, needle: str) -> str | None:
    # sparse: no inspect per container, so one removed meanwhile is no 404.
    for container in client.containers.list(filters={"label": "airlock.managed=true"}, sparse=True):
        try:
            processes = container.top().get("Processes") or []
        except docker.errors.APIError:  # ended meanwhile
            continue
        if any(needle in " ".join(p) for p in processes):
            return str(container.id)
    return None


def test_client_cancel_is_audited_and_the_container_removed(stack: Stack) -> None:
    call_id = f"cancel_{uuid.uuid4().hex[:8]}"
    client = docker.from_env()
    try:
        with grpc.insecure_channel(stack.gateway) as channel:
            future = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke.future(
                gateway_pb2.InvokeRequest(call=tool_call("shell", '{"command": "sleep 25"}', call_id=call_id)),
                metadata=auth(stack.token),
                timeout=60,
            )
            deadline = time.monotonic() + 30
            # A pool container or a fresh one: the one running this call's sleep.
            while (running := _running(client, "sleep 25")) is None:
                assert time.monotonic() < deadline, "the sandbox never started"
                time.sleep(0.05)
            future.cancel()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            events = [e for e in stack.audit_events() if e["call_id"] == call_id]
            gone = not client.containers.list(all=True, filters={"id": running}, sparse=True)
            if len(events) == 2 and gone:
                break
            time.sleep(0.1)
    finally:
        client.close()
    assert [e["kind"] for e in events] == ["decision", "execution"]
    assert events[1]["execution"]["outcome"] == "killed"
    assert events[1]["execution"]["error"] == "client cancelled or disconnected"
    assert gone
