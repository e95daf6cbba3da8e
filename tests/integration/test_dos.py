"""No input stops the gateway (issue 10, items 1 and 5), on a real stack:
the malformed arguments that used to hang every later call, a flood of
connections, and one principal flooding decisions or holding every run slot
while another principal works."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import Stack, auth, tool_call

from airlock.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration

MALFORMED = [
    '{"code": "print(1)", "x": NaN}',
    '{"code": "print(1)", "x": Infinity}',
    '{"code": "print(1)", "x": 1e999}',
    '{"code": "print(1)", "x": 1' + "0" * 320 + "}",
    '{"code": "\\ud800"}',
    '{"code": "print(1)", "x": ' + "[" * 200 + "]" * 200 + "}",
]


def _health(stack: Stack) -> int:
    with grpc.insecure_channel(stack.gateway) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service="airlock.v1.GatewayService"), timeout=5)
            .status
        )


@pytest.mark.parametrize("tool", ["python", "no_such_tool"])
def test_malformed_arguments_are_refused_and_every_later_call_still_works(stack: Stack, tool: str) -> None:
    """The reported attack: after `airlock call python '{..., "x": NaN}'`
    every later call of every principal hung. Each is now refused as
    arguments_malformed, audited, and a plain call right after works."""
    for i, arguments in enumerate(MALFORMED):
        proc = subprocess.run(
            [sys.executable, "-m", "airlock.cli", "--home", str(stack.home), "call", tool, arguments],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert proc.returncode == 3, proc.stdout + proc.stderr
        out = json.loads(proc.stdout)
        assert out["reasons"][0]["code"] == "arguments_malformed", (i, out)
        assert stack.audit_events(out["decision_id"]), "the refusal is audited"
    for rpc in ("Invoke", "Decide"):
        with grpc.insecure_channel(stack.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for token in (stack.token, stack.untrusted_token):
                call = tool_call("python", '{"code": "print(3)"}', call_id=f"after-{rpc}")
                if rpc == "Invoke":
                    got = stub.Invoke(gateway_pb2.InvokeRequest(call=call), metadata=auth(token), timeout=15)
                    assert got.stdout == b"3\n"
                else:
                    stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=auth(token), timeout=15)
    assert _health(stack) == health_pb2.HealthCheckResponse.SERVING


def test_observe_with_malformed_items_is_refused_and_the_gateway_keeps_serving(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for item in MALFORMED:
            with pytest.raises(grpc.RpcError) as info:
                stub.Observe(
                    gateway_pb2.ObserveRequest(
                        item_type="web_search_call", item_id="ws", tool="web_search", item_json=item
                    ),
                    metadata=auth(stack.token),
                    timeout=10,
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "item_malformed" in (info.value.details() or "")
        ok = stub.Observe(
            gateway_pb2.ObserveRequest(item_type="web_search_call", item_id="ws", tool="web_search", item_json="{}"),
            metadata=auth(stack.token),
            timeout=10,
        )
        assert ok.event_id


def test_oversized_identifiers_do_not_become_oversized_audit_lines(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        call = tool_call("python", '{"code": "1"}', call_id="c" * 3_000_000)
        for metadata in (auth(stack.token), ()):  # authenticated and not
            with pytest.raises(grpc.RpcError) as info:
                stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=metadata, timeout=15)
            assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED)
    longest = max(len(line) for line in stack.audit_path.read_bytes().splitlines())
    assert longest < 64 * 1024, f"an audit line of {longest} bytes"


def _open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_a_connection_flood_does_not_exhaust_the_gateway(stack: Stack) -> None:
    """Thousands of idle TCP connections (20,600 exhausted the gateway's
    descriptors before): beyond the cap they are refused, the gateway's fd
    count stays bounded, and a normal call works during and after."""
    host, port = stack.gateway.rsplit(":", 1)
    pid = int(stack.info["pids"]["gateway"])
    held: list[socket.socket] = []
    try:
        for _ in range(3000):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect((host, int(port)))
            except OSError:
                s.close()
                continue
            held.append(s)
        time.sleep(1)
        assert _open_fds(pid) < 1024 + 400, f"gateway holds {_open_fds(pid)} descriptors"
    finally:
        for s in held:
            s.close()
    time.sleep(1)
    with grpc.insecure_channel(stack.gateway) as channel:
        got = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
            gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(5)"}', call_id="after-flood")),
            metadata=auth(stack.token),
            timeout=30,
        )
    assert got.stdout == b"5\n"


def test_one_principals_decide_flood_does_not_deny_another(stack: Stack) -> None:
    """Before: a flood of Decide calls made 8 of 14 legitimate decisions
    fail with policy_timeout. Now the flooder is capped and the policy
    engine's slots are shared fairly."""
    stop = time.monotonic() + 8

    def flood() -> int:
        n = 0
        with grpc.insecure_channel(stack.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            while time.monotonic() < stop:
                with contextlib.suppress(grpc.RpcError):
                    stub.Decide(
                        gateway_pb2.DecideRequest(call=tool_call("python", '{"code": "1"}', call_id="flood")),
                        metadata=auth(stack.token),
                        timeout=10,
                    )
                n += 1
        return n

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        floods = [pool.submit(flood) for _ in range(48)]
        time.sleep(1)
        codes: list[str] = []
        waits: list[int] = []
        with grpc.insecure_channel(stack.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for i in range(14):
                t0 = time.monotonic()
                got = stub.Decide(
                    gateway_pb2.DecideRequest(call=tool_call("python", '{"code": "1"}', call_id=f"legit-{i}")),
                    metadata=auth(stack.untrusted_token),
                    timeout=15,
                )
                codes.append(got.decision.reasons[0].code)
                waits.append(round((time.monotonic() - t0) * 1000))
                time.sleep(0.2)
        sent = sum(f.result() for f in floods)
    print(f"flood sent {sent} Decide calls; the other principal's 14 decisions: {codes}, ms: {waits}")
    # The slots are shared fairly, but OPA's CPU is not: on a 2-core machine
    # that also runs the 48 flooding threads, one evaluation now and then
    # passes its 250 ms deadline. Before the fix 8 of 14 did.
    assert codes.count("allowed") >= 13, codes
    assert set(codes) <= {"allowed", "policy_timeout"}, codes


def test_one_principal_holding_run_slots_does_not_starve_another(stack: Stack) -> None:
    """Before: one principal holding all 16 executor slots delayed another's
    call from ~1 s to 10.9 s. A principal now holds at most half the slots."""
    hog_calls = 16
    sleeper = '{"code": "import time; time.sleep(20)"}'

    def hog(i: int) -> float:
        with grpc.insecure_channel(stack.gateway) as channel:
            gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
                gateway_pb2.InvokeRequest(call=tool_call("python", sleeper, call_id=f"hog-{i}")),
                metadata=auth(stack.token),
                timeout=120,
            )
        return time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(hog_calls) as pool:
        hogs = [pool.submit(hog, i) for i in range(hog_calls)]
        time.sleep(4)  # the hog's first share is running
        with grpc.insecure_channel(stack.gateway) as channel:
            got = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
                gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(7)"}', call_id="polite")),
                metadata=auth(stack.untrusted_token),
                timeout=120,
            )
        polite_done = time.monotonic()
        ends = sorted(f.result() for f in hogs)
    assert got.stdout == b"7\n"
    assert polite_done < ends[0], "the other principal's call finished before any of the hog's runs"
    running = stack.metric("executor", "airlock_executor_running_containers")
    assert running == 0


def test_gateway_metrics_endpoint_stays_up(stack: Stack) -> None:
    with urllib.request.urlopen(stack.info["metrics"]["gateway"], timeout=5) as resp:
        assert b"airlock_gateway_audit_healthy 1.0" in resp.read()


def _held_streams(host: str, port: int, connections: int, streams: int) -> list[socket.socket]:
    """Connections whose gRPC streams send headers and a message prefix
    claiming 1 MiB, then nothing: requests that never finish."""
    import h2.config  # noqa: PLC0415 - test-only dependency
    import h2.connection  # noqa: PLC0415

    held = []
    for _ in range(connections):
        sock = socket.create_connection((host, port), timeout=5)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        for _ in range(streams):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/airlock.v1.GatewayService/Decide"),
                    (":authority", f"{host}:{port}"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            conn.send_data(sid, b"\x00\x00\x10\x00\x00")
        sock.sendall(conn.data_to_send())
        held.append(sock)
    return held


def test_never_finished_streams_do_not_refuse_everyone_else(stack: Stack) -> None:
    """Before: 4 connections x 64 streams that never finished their request
    held gRPC's whole server-wide RPC cap (256), and every call of every
    principal, health checks included, got RESOURCE_EXHAUSTED. Streams per
    connection are capped now and the server-wide cap sits above what all
    allowed connections can hold."""
    host, port = stack.gateway.rsplit(":", 1)
    held = _held_streams(host, int(port), connections=40, streams=64)
    try:
        time.sleep(1)
        assert _health(stack) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(stack.gateway) as channel:
            got = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
                gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(9)"}', call_id="beside-slow")),
                metadata=auth(stack.untrusted_token),
                timeout=30,
            )
        assert got.stdout == b"9\n"
    finally:
        for sock in held:
            sock.close()


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_partial_requests_to_the_metrics_port_cannot_grow_the_gateway(stack: Stack) -> None:
    """Before: the metrics endpoint started a thread per connection; partial
    requests from any local user took the gateway to 10,000 threads and its
    decisions into policy_timeout. Now at most a few requests are served at
    once and stalled ones are cut off."""
    pid = int(stack.info["pids"]["gateway"])
    url = urllib.parse.urlsplit(stack.info["metrics"]["gateway"])
    before = _threads(pid)
    held = []
    try:
        for _ in range(500):
            s = socket.create_connection((url.hostname, url.port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            held.append(s)
        time.sleep(1)
        grown = _threads(pid) - before
        assert grown <= 20, f"the gateway grew {grown} threads"
        with grpc.insecure_channel(stack.gateway) as channel:
            got = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
                gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(8)"}', call_id="beside-metrics")),
                metadata=auth(stack.token),
                timeout=30,
            )
        assert got.stdout == b"8\n"
    finally:
        for s in held:
            s.close()
