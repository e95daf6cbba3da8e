"""Several gateways, one budget: two gateway processes on the session
stack's OPA and executor share their call counters in one real Redis
(tests/fixtures/redis.py). Under concurrent load across both, the allowed
calls never exceed the budget; with Redis down every call is denied
budget_unavailable (audited and counted), and calls come back when it does;
and an agent's uid can neither read the gateway's Redis password nor run a
command without it."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fixtures.redis import RedisServer
from helpers import (
    Stack,
    auth,
    decision_from_error,
    make_gateway_config,
    new_home,
    run_as,
    scrape,
    start_daemon,
    stop_daemon,
    tool_call,
)

from airlock.gateway._budget_redis import redis_keys
from airlock.v1 import call_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
#: The shipped "untrusted" profile's budget.session_tool_calls.
SESSION_TOOL_BUDGET = 20
PRINT_1 = json.dumps({"code": "print(1)"})


class Gw:
    def __init__(self, proc: subprocess.Popen[bytes], ready: dict[str, Any], folder: Path) -> None:
        self.proc = proc
        self.ready = ready
        self.folder = folder

    @property
    def target(self) -> str:
        return str(self.ready["listen"])

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return scrape(self.ready["metrics"], name, labels)

    def audit_events(self) -> list[dict[str, Any]]:
        text = (self.folder / "audit" / "audit.jsonl").read_text()
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.split("\n") if line.strip()]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("shared-budgets") / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateways(stack: Stack, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Gw]]:
    """Two gateways, the same policy and agent (dev-untrusted, profile
    untrusted), one Redis."""
    digest = hashlib.sha256(stack.untrusted_token.encode()).hexdigest()
    started: list[Gw] = []
    try:
        for name in ("gw-a", "gw-b"):
            folder = tmp_path_factory.mktemp(name)
            config = make_gateway_config(
                folder,
                stack,
                agents=[{"id": "dev-untrusted", "profile": "untrusted", "token_sha256": digest}],
                budget={"store": "redis", "redis": redis_server.budget_config(timeout_ms=250)},
                # Two cores, three gateways and a burst of sandboxes: OPA's
                # answers may be slow here, and this test is about budgets.
                opa={"timeout_ms": 10_000},
            )
            proc, ready = start_daemon("gateway", config, folder)
            started.append(Gw(proc, ready, folder))
        yield started
    finally:
        for gw in started:
            assert stop_daemon(gw.proc) == 0


def invoke(stack: Stack, gw: Gw, session: str, call_id: str) -> call_pb2.Decision:
    call = tool_call("python", PRINT_1, call_id=call_id)
    call.session_id = session
    with grpc.insecure_channel(gw.target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            resp = stub.Invoke(gateway_pb2.InvokeRequest(call=call), metadata=auth(stack.untrusted_token), timeout=120)
        except grpc.RpcError as exc:
            refused = exc
        else:
            return resp.decision
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED, refused
    return decision_from_error(refused)


def decide(stack: Stack, gw: Gw, session: str, call_id: str) -> call_pb2.Decision:
    call = tool_call("python", PRINT_1, call_id=call_id)
    call.session_id = session
    with grpc.insecure_channel(gw.target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        resp = stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=auth(stack.untrusted_token), timeout=30)
    return resp.decision


def test_two_gateways_enforce_one_budget_under_concurrent_load(
    stack: Stack, gateways: list[Gw], redis_server: RedisServer
) -> None:
    session = f"shared-{uuid.uuid4().hex[:8]}"
    calls = 2 * SESSION_TOOL_BUDGET
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(invoke, stack, gateways[i % 2], session, f"load-{i}") for i in range(calls)]
        decisions = [f.result() for f in futures]
    allowed = [d for d in decisions if d.verdict == call_pb2.VERDICT_ALLOW]
    denied = [d.reasons[0].code for d in decisions if d.verdict != call_pb2.VERDICT_ALLOW]
    # Never more than the budget, however the calls interleave across the two.
    assert len(allowed) <= SESSION_TOOL_BUDGET
    assert set(denied) == {"budget_exceeded"}, denied
    # Every reservation is atomic and an allowed call keeps its count, so
    # the first twenty reservations are exactly the ones allowed.
    assert len(allowed) == SESSION_TOOL_BUDGET
    # Both gateways took part.
    for gw in gateways:
        events = [e for e in gw.audit_events() if e.get("call_id", "").startswith("load-") and e["kind"] == "decision"]
        assert events, "a gateway decided no call"
    # Redis holds exactly the allowed calls: the denied ones are released
    # (in the background, so give the last releases a moment).
    session_tool_key = redis_keys(redis_server.key_prefix, "dev-untrusted", session, "python")[3]
    with redis_server.admin() as admin:
        deadline = time.monotonic() + 5
        while admin.zcard(session_tool_key) != SESSION_TOOL_BUDGET and time.monotonic() < deadline:
            time.sleep(0.05)
        assert admin.zcard(session_tool_key) == SESSION_TOOL_BUDGET
    # The counters say the same from either side (Decide only reads).
    for gw in gateways:
        again = decide(stack, gw, session, "after")
        assert again.verdict != call_pb2.VERDICT_ALLOW
        assert [r.code for r in again.reasons] == ["budget_exceeded"]


def test_redis_down_denies_budget_unavailable_and_calls_come_back(
    stack: Stack, gateways: list[Gw], redis_server: RedisServer
) -> None:
    session = f"outage-{uuid.uuid4().hex[:8]}"
    assert decide(stack, gateways[0], session, "before").verdict == call_pb2.VERDICT_ALLOW
    failed_before = [gw.metric("airlock_gateway_fail_closed_total", {"cause": "budget_unavailable"}) for gw in gateways]
    redis_server.stop()
    try:
        for n, gw in enumerate(gateways):
            started = time.monotonic()
            refused = invoke(stack, gw, session, f"down-invoke-{n}")
            assert time.monotonic() - started < 5
            assert refused.verdict != call_pb2.VERDICT_ALLOW
            assert [r.code for r in refused.reasons] == ["budget_unavailable"]
            read = decide(stack, gw, session, f"down-decide-{n}")
            assert [r.code for r in read.reasons] == ["budget_unavailable"]
            # Audited like any deny.
            events = {e["call_id"]: e for e in gw.audit_events() if e["kind"] == "decision"}
            for call_id in (f"down-invoke-{n}", f"down-decide-{n}"):
                assert events[call_id]["decision"] == "deny"
                assert [r["code"] for r in events[call_id]["reasons"]] == ["budget_unavailable"]
                assert events[call_id]["decision_id"]
            # And counted.
            fail_closed = gw.metric("airlock_gateway_fail_closed_total", {"cause": "budget_unavailable"})
            assert fail_closed == failed_before[n] + 2
            assert gw.metric("airlock_gateway_budget_store_errors_total", {"operation": "reserve"}) >= 1
            assert gw.metric("airlock_gateway_budget_store_errors_total", {"operation": "snapshot"}) >= 1
    finally:
        redis_server.start()
    for n, gw in enumerate(gateways):
        deadline = time.monotonic() + 15
        while True:
            back = decide(stack, gw, session, f"back-{n}")
            if back.verdict == call_pb2.VERDICT_ALLOW or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert back.verdict == call_pb2.VERDICT_ALLOW, [r.code for r in back.reasons]
    assert invoke(stack, gateways[1], session, "back-invoke").verdict == call_pb2.VERDICT_ALLOW


def test_the_agent_uid_cannot_use_redis(redis_server: RedisServer) -> None:
    # The password as `airlock up` would lay it out: the gateway's own file,
    # 0600, in the gateway's folder; Redis's socket in a folder of its own.
    home = new_home("redis-trust")
    try:
        gateway = pwd.getpwnam("airlock-gateway")
        password = home / "redis.password"
        shutil.copyfile(redis_server.password_file, password)
        password.chmod(0o600)
        os.chown(password, gateway.pw_uid, gateway.pw_gid)
        probe = run_as(
            "airlock-agent",
            """
            import json, os, socket, sys
            out = {}
            try:
                open(os.environ["PASSWORD"]).read()
                out["password"] = "read"
            except PermissionError:
                out["password"] = "denied"
            try:
                socket.socket(socket.AF_UNIX).connect(os.environ["SOCKET"])
                out["socket"] = "connected"
            except PermissionError:
                out["socket"] = "denied"
            s = socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=5)
            answers = []
            for line in (b"PING", b"ZCARD airlock:budget:x", b"AUTH airlock-gateway guess", b"AUTH default x",
                         b"EVAL \\"return 1\\" 0", b"FLUSHALL"):
                s.sendall(line + b"\\r\\n")
                answers.append(s.recv(200).decode().split(" ")[0])
            out["answers"] = answers
            print(json.dumps(out))
            """,
            PASSWORD=str(password),
            SOCKET=str(redis_server.socket_path),
            PORT=str(redis_server.port),
        )
        assert probe.returncode == 0, probe.stderr
        result = json.loads(probe.stdout)
        assert result["password"] == "denied"
        assert result["socket"] == "denied"
        assert result["answers"] == ["-NOAUTH", "-NOAUTH", "-WRONGPASS", "-WRONGPASS", "-NOAUTH", "-NOAUTH"]
        # And the gateway's uid does read it (what the gateway needs).
        own = run_as("airlock-gateway", "import os; print(len(open(os.environ['PASSWORD']).read().strip()))",
                     PASSWORD=str(password))  # fmt: skip
        assert own.returncode == 0, own.stderr
        assert own.stdout.strip() == str(len(redis_server.password))
    finally:
        shutil.rmtree(home, ignore_errors=True)
