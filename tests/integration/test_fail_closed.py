"""Fail closed on every policy failure, against a real OPA and the real
gateway daemon: unreachable, slow, erroring, undefined and malformed each
deny with their own reason code, are audited and counted, and never reach
the executor."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import Stack, auth, decision_from_error, make_gateway_config, scrape, start_daemon, stop_daemon, tool_call

from airlock.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
BROKEN = Path(__file__).resolve().parents[1] / "data" / "broken_policies"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "process exited during startup"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


@pytest.fixture(scope="module")
def broken_opa(opa_bin: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [opa_bin, "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error", str(BROKEN)]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def start_gateway(tmp: Path, stack: Stack, opa_url: str, decision_path: str) -> tuple[subprocess.Popen[bytes], Any]:
    # The real executor of the session stack: the test proves it is never
    # contacted (it would refuse this gateway's uid anyway).
    config = make_gateway_config(
        tmp, stack, opa={"url": opa_url, "decision_path": decision_path, "timeout_ms": 250, "token_file": None}
    )
    return start_daemon("gateway", config, tmp)


@pytest.mark.parametrize(
    ("decision_path", "reason"),
    [
        ("broken/undefined", "policy_undefined"),
        ("broken/does/not/exist", "policy_undefined"),
        ("broken/malformed", "policy_malformed"),
        ("broken/half_right", "policy_malformed"),
        ("broken/conflict", "policy_http_error"),
        ("broken/slow", "policy_timeout"),
        ("UNREACHABLE", "policy_unreachable"),
    ],
)
def test_policy_failure_denies_with_its_own_reason(
    stack: Stack, broken_opa: str, tmp_path: Path, decision_path: str, reason: str
) -> None:
    opa_url = broken_opa
    if decision_path == "UNREACHABLE":
        opa_url, decision_path = f"http://127.0.0.1:{_free_port()}", "airlock/decision"
    proc, gw = start_gateway(tmp_path, stack, opa_url, decision_path)
    executor_before = stack.metric("executor", "airlock_executor_requests_total")
    try:
        with grpc.insecure_channel(gw["listen"]) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Invoke(
                    gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(1)"}')),
                    metadata=auth(stack.token),
                    timeout=30,
                )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        decision = decision_from_error(info.value)
        assert [r.code for r in decision.reasons] == [reason]
        assert scrape(gw["metrics"], "airlock_gateway_decisions_total", {"decision": "deny", "reason": reason}) == 1
        events = [json.loads(line) for line in Path(gw["audit"]).read_text().splitlines()]
        events = [e for e in events if e["kind"] not in ("checkpoint", "pruned")]
        assert [(e["kind"], e["decision"], e["reasons"][0]["code"]) for e in events] == [("decision", "deny", reason)]
        assert events[0]["decision_id"] == decision.decision_id
        assert stack.metric("executor", "airlock_executor_requests_total") == executor_before
    finally:
        assert stop_daemon(proc) == 0
