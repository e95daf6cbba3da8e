"""Fail closed on every policy failure, against a real OPA and the real
gateway daemon: unreachable, slow, erroring, undefined and malformed each
deny with their own reason code, are audited and counted, and never reach
the executor."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from helpers import Stack, auth, decision_from_error, scrape, tool_call

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


class Gateway:
    def __init__(self, address: str, metrics: str, audit: Path, proc: subprocess.Popen[bytes]) -> None:
        self.address, self.metrics, self.audit, self.proc = address, metrics, audit, proc


def start_gateway(tmp: Path, stack: Stack, opa_url: str, decision_path: str, timeout_ms: int = 250) -> Gateway:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "listen": "127.0.0.1:0",
                "metrics_listen": "127.0.0.1:0",
                "registry": str(Path(__file__).resolve().parents[2] / "deploy" / "tool_registry.yaml"),
                "opa": {"url": opa_url, "decision_path": decision_path, "timeout_ms": timeout_ms},
                # The real executor of the session stack: the test proves it is never contacted.
                "executor": {"socket": stack.info["executor_socket"], "token_file": str(stack.home / "executor.token")},
                "audit": {"path": str(tmp / "audit.jsonl")},
                "agents": [{"id": "dev-agent", "profile": "default", "token_file": str(stack.home / "agent.token")}],
            }
        )
    )
    ready = tmp / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(cfg), "--ready-file", str(ready)]
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, "gateway exited during startup"
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    return Gateway(info["listen"], info["metrics"], tmp / "audit.jsonl", proc)


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
    gw = start_gateway(tmp_path, stack, opa_url, decision_path)
    executor_before = stack.metric("executor", "airlock_executor_requests_total")
    try:
        with grpc.insecure_channel(gw.address) as channel:
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
        assert scrape(gw.metrics, "airlock_gateway_decisions_total", {"decision": "deny", "reason": reason}) == 1
        events = [json.loads(line) for line in gw.audit.read_text().splitlines()]
        assert [(e["kind"], e["decision"], e["reasons"][0]["code"]) for e in events] == [("decision", "deny", reason)]
        assert events[0]["decision_id"] == decision.decision_id
        assert stack.metric("executor", "airlock_executor_requests_total") == executor_before
    finally:
        gw.proc.terminate()
        assert gw.proc.wait(30) == 0
