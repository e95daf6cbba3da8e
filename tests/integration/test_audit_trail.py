"""The audit trail on a real stack: secrets never reach the file, the chain
and its signed checkpoints verify with `airlock audit verify` and the public
key alone, and a gateway killed with SIGKILL mid-load loses no event whose
response reached a client (what it leaves is an unsigned tail, not a
problem). The gateway exports the last signed checkpoint's seq for an outside
witness, and refuses to start on audit files whose head record is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from helpers import (
    Stack,
    auth,
    make_gateway_config,
    new_home,
    scrape,
    start_daemon,
    start_stack,
    stop_daemon,
    stop_stack,
    tool_call,
)

from airlock.common import auditlog
from airlock.v1 import call_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
SECRET = "sk-live-0123456789abcdefXYZ"


def _verify(stack: Stack, *paths: Path, public_key: bool = True) -> subprocess.CompletedProcess[str]:
    key = ["--public-key", str(stack.layout.audit_public_key)] if public_key else []
    return subprocess.run(
        [sys.executable, "-m", "airlock.cli", "audit", "verify", *map(str, paths), *key],
        env={**os.environ, "AIRLOCK_HOME": str(stack.home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_secrets_in_arguments_never_reach_the_audit_file(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        resp = stub.Invoke(
            gateway_pb2.InvokeRequest(
                call=tool_call("python", json.dumps({"code": f"api_key = '{SECRET}'; print(len(api_key))"}), "mask1")
            ),
            metadata=auth(stack.token),
            timeout=60,
        )
        # Bad input is recorded as received -- masked too.
        with pytest.raises(grpc.RpcError):
            stub.Invoke(
                gateway_pb2.InvokeRequest(call=tool_call("python", f'{{"token": "{SECRET}", ', "mask2")),
                metadata=auth(stack.token),
                timeout=60,
            )
    assert resp.stdout == f"{len(SECRET)}\n".encode()  # the tool itself got the real value
    raw = stack.audit_path.read_bytes()
    assert SECRET.encode() not in raw
    events = [e for e in stack.audit_events() if e["call_id"] in ("mask1", "mask2") and e["kind"] == "decision"]
    assert len(events) == 2
    # Pointers into the event: the sink masks every field, not only the input.
    assert events[0]["masked"] == ["/input/call/arguments/code"]
    assert "**masked**" in events[0]["input"]["call"]["arguments"]["code"]
    assert events[1]["masked"] == ["/input/call/arguments_raw"]


def test_the_stacks_audit_log_verifies_with_the_public_key_alone(stack: Stack) -> None:
    events = stack.audit_events()
    assert events[0]["kind"] == "checkpoint"
    assert events[0]["checkpoint"]["reason"] == "start"
    proc = _verify(stack, stack.audit_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("ok: ")
    assert "signatures checked with key" in proc.stdout
    unsigned = _verify(stack, stack.audit_path, public_key=False)
    assert unsigned.returncode == 0, unsigned.stdout + unsigned.stderr
    assert "signatures not checked" in unsigned.stdout
    # And two one-byte edits are both found.
    tampered = stack.home / "tampered.jsonl"
    lines = stack.audit_path.read_text().splitlines(keepends=True)
    assert len(lines) >= 3
    lines[1] = lines[1].replace('"timestamp": "', '"timestamp": "X', 1)
    lines[2] = lines[2].replace('"timestamp": "', '"timestamp": "X', 1)
    tampered.write_text("".join(lines))
    bad = _verify(stack, tampered)
    assert bad.returncode == 1
    assert "tampered.jsonl:2 (seq 2): edited" in bad.stdout
    assert "tampered.jsonl:3 (seq 3): edited" in bad.stdout


def test_sigkill_mid_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    s = start_stack(new_home("sigkill"))
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        with grpc.insecure_channel(s.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for i in range(200):
                if stop.is_set():
                    return
                call_id = f"w{worker}-{i}"
                try:
                    if i % 10 == 0:
                        stub.Invoke(
                            gateway_pb2.InvokeRequest(call=tool_call("python", '{"code": "print(1)"}', call_id)),
                            metadata=auth(s.token),
                            timeout=30,
                        )
                    else:
                        stub.Decide(
                            gateway_pb2.DecideRequest(call=tool_call("python", '{"code": "print(1)"}', call_id)),
                            metadata=auth(s.token),
                            timeout=30,
                        )
                except grpc.RpcError:
                    return  # the gateway is gone: this call was never acknowledged
                with lock:
                    acknowledged.append(call_id)

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client, w) for w in range(8)]
            deadline = time.monotonic() + 60
            while len(acknowledged) < 150 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(int(s.info["pids"]["gateway"]), signal.SIGKILL)
            stop.set()
            for f in futures:
                f.result()
    finally:
        stop_stack(s)
    assert len(acknowledged) >= 150
    on_disk = {e["call_id"] for e in s.audit_events() if e["kind"] == "decision"}
    missing = [c for c in acknowledged if c not in on_disk]
    assert missing == [], f"{len(missing)} acknowledged calls have no audit event, e.g. {missing[:3]}"
    # What a kill leaves is at most an unsigned tail: a notice, not a problem.
    proc = _verify(s, s.audit_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nSIGKILL test: {len(acknowledged)} acknowledged calls, {len(on_disk)} decision events on disk")


def test_decision_events_carry_opa_decision_log_fields(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway) as channel:
        resp = gateway_pb2_grpc.GatewayServiceStub(channel).Decide(
            gateway_pb2.DecideRequest(call=tool_call("python", '{"code": "print(1)"}', "fields1")),
            metadata=auth(stack.token),
            timeout=30,
        )
    assert resp.decision.verdict == call_pb2.VERDICT_ALLOW
    (event,) = stack.audit_events(resp.decision.decision_id)
    assert event["path"] == "airlock/decision"
    assert event["input"]["principal"]["id"] == "dev-agent"
    assert event["input"]["call"]["tool"] == "python"
    assert event["result"]["allow"] is True
    assert event["labels"] == {"component": "gateway", "version": "0.1.0"}
    (bundle,) = event["bundles"].values()
    assert bundle["revision"] == stack.info["policy_revision"]
    assert event["timestamp"].endswith("Z")


def test_the_gateway_exports_the_seq_of_its_last_signed_checkpoint(stack: Stack) -> None:
    """The gauge an outside Prometheus keeps the history of: the head
    record's seq, which only the gateway's key advances."""
    head_file = auditlog.head_path(stack.audit_path)

    def head_seq() -> int:
        head = auditlog.read_head(head_file)
        assert head is not None
        return head.seq

    before = head_seq()
    exported = stack.metric("gateway", "airlock_gateway_audit_last_signed_seq")
    after = head_seq()
    assert 1 <= before <= exported <= after
    assert exported <= stack.metric("gateway", "airlock_gateway_audit_last_seq")


def test_a_gateway_whose_head_record_was_deleted_refuses_to_start(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "gw"
    config = make_gateway_config(folder, stack)
    proc, info = start_daemon("gateway", config, folder)
    try:
        assert scrape(info["metrics"], "airlock_gateway_audit_last_signed_seq") == 1  # the start checkpoint
    finally:
        assert stop_daemon(proc) == 0
    audit_path = Path(config["audit"]["path"])
    # Nothing happened after the start checkpoint, so there was nothing to close.
    assert [e["checkpoint"]["reason"] for e in map(json.loads, audit_path.read_text().splitlines())] == ["start"]
    auditlog.head_path(audit_path).unlink()
    refused = subprocess.run(
        [sys.executable, "-m", "airlock.gateway", "serve", "--config", str(folder / "gateway.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 3, refused.stdout + refused.stderr
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("gateway: audit log: ")]
    assert "audit files audit.jsonl in" in line
    assert "have no head record audit.jsonl.head" in line
    assert "move audit.jsonl, its rotated files and audit.jsonl.head out of" in line
    assert len(audit_path.read_text().splitlines()) == 1  # nothing was added to the old chain
