"""Sessions through the whole stack (issue 12): the shipped policy decides
the sandbox (session for python and shell in the default profile, ephemeral
for untrusted), the gateway passes the authenticated principal to the
executor, records session starts and ends in its hash chain, names the
sandbox in every execution event, serves ListSessions and EndSession with
per-principal visibility, and the CLI prints where a call ran."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import Stack

from airlock.common.client import GatewayClient, GatewayUnavailable
from airlock.common.stackfile import read_stack
from airlock.v1 import call_pb2

pytestmark = pytest.mark.integration


def _client(stack: Stack, principal: str | None = None) -> GatewayClient:
    """As root: the principal's token from the stack (the CLI drops to the
    agent user; a test may read it directly)."""
    info = read_stack(stack.home / "stack.json")
    token = info.token_file(principal).read_text().strip()
    return GatewayClient(info.gateway, token, timeout_s=60)


def _cli(stack: Stack, *args: str) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(
        [sys.executable, "-m", "airlock.cli", "--home", str(stack.home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _events(stack: Stack, kind: str, sandbox_id: str, timeout_s: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [
            e
            for e in stack.audit_events()
            if e["kind"] == kind and e.get("session", {}).get("sandbox_id") == sandbox_id
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_the_shipped_policy_decides_session_for_default_and_ephemeral_for_untrusted(stack: Stack) -> None:
    code, [agent] = _cli(stack, "decide", "--session", "s-decide", "python", '{"code": "print(1)"}')
    assert code == 0
    assert agent["obligations"]["sandbox"] == {"mode": "session", "idle_ttl_ms": 600_000, "max_lifetime_ms": 3_600_000}
    code, [no_session] = _cli(stack, "decide", "python", '{"code": "print(1)"}')
    assert no_session["obligations"]["sandbox"]["mode"] == "ephemeral"
    with _client(stack, "dev-untrusted") as untrusted:
        decided = untrusted.invoke("c-untrusted", "function_call", "python", '{"code": "print(1)"}', "s-decide")
    assert decided.allowed
    assert decided.run is not None
    assert decided.run.sandbox.mode == call_pb2.SANDBOX_MODE_EPHEMERAL  # the untrusted profile has no sessions


def test_a_session_through_the_gateway_persists_and_is_audited(stack: Stack) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    code, [first] = _cli(
        stack, "call", "--session", session, "python", "{\"code\": \"open('/work/f','w').write('x')\"}"
    )
    assert code == 0, first
    assert first["sandbox"] == "session"
    assert first["session_started"] is True
    assert isinstance(first["pool_hit"], bool)
    assert isinstance(first["claim_ms"], int)
    code, [second] = _cli(stack, "call", "--session", session, "shell", '{"command": "cat /work/f"}')
    assert (code, second["stdout"], second["sandbox_id"]) == (0, "x", first["sandbox_id"])
    assert second["session_calls"] == 2
    sandbox_id = first["sandbox_id"]
    [started] = _events(stack, "session_started", sandbox_id)
    assert started["principal"] == "dev-agent"
    assert started["session_id"] == session
    executions = [e for e in stack.audit_events(second["decision_id"]) if e["kind"] == "execution"]
    assert executions[0]["execution"]["sandbox"]["mode"] == "SANDBOX_MODE_SESSION"
    assert executions[0]["execution"]["sandbox"]["sandbox_id"] == sandbox_id
    assert executions[0]["execution"]["sandbox"]["container_id"]
    decision = next(e for e in stack.audit_events(second["decision_id"]) if e["kind"] == "decision")
    assert decision["input"]["session"]["sandbox"]["exists"] is True
    assert decision["input"]["session"]["sandbox"]["calls"] == 1

    code, [ended] = _cli(stack, "sessions", "end", "--session", session)
    assert [e["sandbox_id"] for e in ended["ended"]] == [sandbox_id]
    [request] = _events(stack, "session_end", sandbox_id)
    assert request["principal"] == "dev-agent"
    [over] = _events(stack, "session_ended", sandbox_id)
    assert over["reasons"][0]["code"] == "ended"
    assert stack.metric("gateway", "airlock_gateway_session_stream_up") == 1


def test_agents_see_and_end_only_their_own_sessions(stack: Stack) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    with _client(stack) as agent, _client(stack, "dev-untrusted") as other, _client(stack, "dev-operator") as operator:
        ran = agent.invoke("c-own", "function_call", "python", '{"code": "print(1)"}', session)
        assert ran.run is not None
        sandbox_id = ran.run.sandbox.sandbox_id
        assert sandbox_id in [s.sandbox_id for s in agent.list_sessions()]
        assert sandbox_id not in [s.sandbox_id for s in other.list_sessions()]
        with pytest.raises(GatewayUnavailable, match="PERMISSION_DENIED"):
            other.list_sessions(everyone=True)
        # Another agent naming the sandbox, or the session id, ends nothing.
        assert other.end_session(sandbox_id=sandbox_id) == []
        assert other.end_session(session_id=session) == []
        assert sandbox_id in [s.sandbox_id for s in operator.list_sessions(everyone=True)]
        assert [s.sandbox_id for s in operator.end_session(sandbox_id=sandbox_id)] == [sandbox_id]
        assert sandbox_id not in [s.sandbox_id for s in agent.list_sessions()]
    [request] = _events(stack, "session_end", sandbox_id)
    assert request["principal"] == "dev-operator"


def test_the_readme_session_example_runs(stack: Stack) -> None:
    """The README's session commands, as written, against this stack."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Sessions and the warm pool") :]
    block = section[section.index("```sh\n") + len("```sh\n") :]
    lines = [line.split("  #")[0].strip() for line in block[: block.index("```")].splitlines()]
    session = f"s-{uuid.uuid4().hex[:8]}"
    outputs = []
    for line in lines:
        argv = shlex.split(line.replace(" s1", f" {session}"))
        assert argv[0] == "bin/airlock"
        code, out = _cli(stack, *argv[1:])
        assert code == 0, (line, out)
        outputs.append(out)
    write, read, listed, ended = outputs
    assert write[0]["sandbox"] == read[0]["sandbox"] == "session"
    assert read[0]["stdout"] == "1,2"
    assert session in [s["session_id"] for s in listed]
    assert [e["session_id"] for e in ended[0]["ended"]] == [session]
