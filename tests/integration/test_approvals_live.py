"""Integration tier for approvals (docs/approvals.md): a gateway of the
test's own (real OPA with the shipped policy, real executor on Docker) with
an approver principal; the agent loop on the real openai SDK against the
scripted Responses server; `airlock approvals` run as a command with the
approver's token. The shipped policy asks for `git push` in the default
profile."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fixtures.responses import fcall, message
from fixtures.responses_server import ScriptedResponses, serving
from helpers import Stack, make_gateway_config, private_copy, start_daemon, stop_daemon

from airlock import agent

pytestmark = pytest.mark.integration

PUSH = '{"command": "git push origin main 2>&1 || echo pushed-nothing"}'


class Gw:
    """A gateway to test against: the stack's own (``home``: `airlock
    approvals --principal P` reads P's token and, as root, runs as P's
    agent user) or one this module starts (``--gateway``, ``--token-file``)."""

    def __init__(
        self, address: str, audit: Path, agent_token: str, *, home: Path | None = None, approver: Path | None = None
    ) -> None:
        self.address = address
        self.audit = audit
        self.agent_token = agent_token
        self.home = home
        self.approver = approver

    def events(self) -> list[dict[str, Any]]:
        text = self.audit.read_text()
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.strip()]

    def approvals(self, *args: str, principal: str = "dev-approver") -> tuple[int, list[dict[str, Any]], str]:
        """`airlock approvals ...` as a command; its JSON lines."""
        if self.home is not None:
            where = ["--principal", principal]
            home = ["--home", str(self.home)]
        else:
            assert self.approver is not None
            where = ["--as-root", "--gateway", self.address, "--token-file", str(self.approver)]
            home = []
        done = subprocess.run(
            [sys.executable, "-m", "airlock.cli", *home, "approvals", *args, *where],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        return done.returncode, lines, done.stdout + done.stderr


def _gateway(stack: Stack, folder: Path, **approvals: Any) -> Iterator[Gw]:
    token = secrets.token_urlsafe(24)
    approver = private_copy(token, folder / "approver.token")
    config = make_gateway_config(
        folder,
        stack,
        agents=[
            {"id": "dev-agent", "profile": "default", "token_sha256": hashlib.sha256(stack.token.encode()).hexdigest()},
            {
                "id": "alice",
                "profile": "default",
                "roles": ["approver"],
                "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            },
        ],
        approvals=approvals,
    )
    proc, info = start_daemon("gateway", config, folder)
    try:
        yield Gw(info["listen"], Path(info["audit"]), stack.token, approver=approver)
    finally:
        assert stop_daemon(proc) == 0


@pytest.fixture
def gw(stack: Stack) -> Gw:
    """The stack's gateway: its executor runs the approved calls."""
    return Gw(stack.gateway, stack.audit_path, stack.token, home=stack.home)


@pytest.fixture(scope="module")
def short_gw(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    """A gateway of ours whose approvals live 1.5 s (nothing runs on it)."""
    yield from _gateway(stack, tmp_path_factory.mktemp("approvals-short"), ttl_ms=1500)


class ApprovingScript(ScriptedResponses):
    """Plays an approver between the model's turns: when the agent's first
    output (the call awaits approval) comes in, the approver approves it
    with the command line before the model retries."""

    def __init__(self, turns: list[list[dict[str, Any]]], gw: Gw) -> None:
        super().__init__(turns)
        self.gw = gw
        self.approved: list[dict[str, Any]] = []

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        if len(self.requests) == 1:
            output = json.loads(body["input"][0]["output"])
            code, lines, out = self.gw.approvals("approve", output["approval_id"], "--note", "ok to push")
            assert code == 0, out
            self.approved.extend(lines)
        return super().respond(body)


def test_approval_round_trip_through_the_agent_loop(gw: Gw) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [f"call_push{i}_{tag}" for i in range(3)]
    script = ApprovingScript(
        [*([fcall(call_id, "shell", PUSH)] for call_id in ids), [message("ok")]],
        gw,
    )
    with serving(script):
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script.port}/v1", max_retries=0)
        with agent.GatewayClient(gw.address, gw.agent_token) as gateway:
            result = agent.run(client, "test-model", "push it", gateway, parallel=1)
    assert result.text == "ok"
    outputs = [json.loads(body["input"][0]["output"]) for body in script.requests[1:]]
    # 1: held; the model is told it awaits approval.
    first = outputs[0]
    assert first["error"] == "awaiting approval"
    approval_id = first["approval_id"]
    assert approval_id.startswith("apr_")
    assert [r["code"] for r in first["reasons"]] == ["approval_required"]
    (granted,) = script.approved
    assert (granted["id"], granted["state"], granted["approver"]) == (approval_id, "granted", "dev-approver")
    # 2: the retry runs, once.
    assert outputs[1]["outcome"] == "ok"
    assert "pushed-nothing" in outputs[1]["stdout"] or outputs[1]["exit_code"] == 0
    # 3: a second retry asks again, with a new approval.
    assert outputs[2]["error"] == "awaiting approval"
    assert outputs[2]["approval_id"] not in ("", approval_id)

    events = [e for e in gw.events() if e.get("approval", {}).get("id") == approval_id or e["call_id"] in ids]
    kinds = [(e["kind"], e["call_id"]) for e in events]
    assert kinds == [
        ("decision", ids[0]),
        ("approval_requested", ids[0]),
        ("approval_granted", ids[0]),
        ("decision", ids[1]),
        ("approval_used", ids[0]),
        ("execution", ids[1]),
        ("decision", ids[2]),
        ("approval_requested", ids[2]),
    ]
    by_kind = {e["kind"]: e for e in events}
    assert by_kind["approval_granted"]["principal"] == "dev-approver"
    assert by_kind["approval_granted"]["approval"]["note"] == "ok to push"
    assert by_kind["approval_used"]["approval"]["approver"] == "dev-approver"
    assert by_kind["approval_used"]["principal"] == "dev-agent"
    decisions = [e for e in events if e["kind"] == "decision"]
    assert [d["decision"] for d in decisions] == ["ask", "allow", "ask"]
    assert [d["reasons"][0]["code"] for d in decisions] == ["approval_pending", "approval_granted", "approval_pending"]
    push_sha = hashlib.sha256(PUSH.encode()).hexdigest()
    assert by_kind["approval_requested"]["approval"]["arguments_sha256"] == push_sha


def _invoke(gw: Gw, arguments: str, session: str) -> agent.ToolResult:
    with agent.GatewayClient(gw.address, gw.agent_token) as gateway:
        return gateway.invoke(f"call_{uuid.uuid4().hex[:8]}", "function_call", "shell", arguments, session)


def test_an_agent_token_cannot_approve_not_even_its_own_call(gw: Gw) -> None:
    held = _invoke(gw, PUSH, f"s-{uuid.uuid4().hex[:8]}")
    assert held.status == "FAILED_PRECONDITION"
    approval_id = held.decision.approval_id if held.decision else ""
    code, lines, out = gw.approvals("approve", approval_id, principal="dev-agent")
    assert code == 3, out
    assert lines == [
        {
            "refused": True,
            "status": "PERMISSION_DENIED",
            "reason": "forbidden",
            "message": "principal 'dev-agent' does not have the approver role",
        }
    ]
    code, lines, _ = gw.approvals("ls", principal="dev-agent")
    assert (code, lines[0]["reason"]) == (3, "forbidden")
    # Still pending, and shown to the approver exactly as sent, with its hash.
    code, lines, _ = gw.approvals("show", approval_id, "--json")
    assert code == 0
    assert lines[0]["state"] == "pending"
    assert lines[0]["arguments"] == PUSH
    assert lines[0]["arguments_sha256"] == hashlib.sha256(PUSH.encode()).hexdigest()


def test_an_approval_replayed_with_other_arguments_asks_again(gw: Gw) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    held = _invoke(gw, PUSH, session)
    approval_id = held.decision.approval_id if held.decision else ""
    assert gw.approvals("approve", approval_id)[0] == 0
    other = _invoke(gw, '{"command": "git push --force origin main"}', session)
    assert other.status == "FAILED_PRECONDITION"
    assert other.reasons[0].code == "approval_pending"
    assert other.decision is not None
    assert other.decision.approval_id not in ("", approval_id)
    # Another session is another call too.
    elsewhere = _invoke(gw, PUSH, session + "-b")
    assert elsewhere.status == "FAILED_PRECONDITION"
    # The approved call itself still runs, once.
    assert _invoke(gw, PUSH, session).allowed
    code, lines, _ = gw.approvals("show", approval_id, "--json")
    assert (code, lines[0]["state"]) == (0, "used")


def test_an_approval_expires(short_gw: Gw) -> None:
    session = f"s-{uuid.uuid4().hex[:8]}"
    held = _invoke(short_gw, PUSH, session)
    approval_id = held.decision.approval_id if held.decision else ""
    deadline = time.monotonic() + 15
    while not any(e["kind"] == "approval_expired" and e["approval"]["id"] == approval_id for e in short_gw.events()):
        assert time.monotonic() < deadline, "no approval_expired event"
        time.sleep(0.2)
    code, lines, _ = short_gw.approvals("approve", approval_id)
    assert (code, lines[0]["reason"], lines[0]["status"]) == (3, "approval_not_pending", "FAILED_PRECONDITION")
    # Asked again after expiry: a new approval.
    again = _invoke(short_gw, PUSH, session)
    assert again.decision is not None
    assert again.decision.approval_id not in ("", approval_id)


def test_the_approver_sees_what_the_audit_log_masks(gw: Gw) -> None:
    # The audit masker hides a PASSWORD= value; the approver must see it,
    # since it runs on the approval.
    hidden = 'PASSWORD="$(git push --force origin HEAD:main)" git push origin feature'
    raw = json.dumps({"command": hidden})
    held = _invoke(gw, raw, f"s-{uuid.uuid4().hex[:8]}")
    approval_id = held.decision.approval_id if held.decision else ""
    code, _, out = gw.approvals("show", approval_id)
    assert code == 0, out
    assert "$(git push --force origin HEAD:main)" in out
    assert hashlib.sha256(raw.encode()).hexdigest() in out
    asked = [e for e in gw.events() if e.get("decision_id") == held.decision_id and e["kind"] == "decision"]
    assert len(asked) == 1
    assert "$(git push --force" not in json.dumps(asked)  # the audit log still masks it
