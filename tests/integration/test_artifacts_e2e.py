"""Integration tier, the real stack (gateway with its artifact store, OPA,
the executor on Docker) and the real openai SDK against the scripted
Responses server: issue 14's two-step analysis through ``agent.run``.

Call 1 (``python_files``, no inputs) writes /outputs/summary.csv; its output item lists the
artifact; the model passes the id to call 2 (``python_files``), which reads
/inputs/summary.csv and prints a figure from it. The artifact is the
principal's (another principal cannot use it), the execution events carry
it by reference (sha256 and size, never the content), and a call naming
more inputs than the profile allows is refused by the policy."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import grpc
import openai
import pytest
from fixtures.responses import fcall, message
from fixtures.responses_server import ScriptedResponses, serving
from helpers import Stack

from airlock import agent
from airlock.v1 import artifacts_pb2, artifacts_pb2_grpc

pytestmark = pytest.mark.integration

CSV = "region,sales\nnorth,120\nsouth,80\neast,45\n"
# The rows are joined in the sandbox, so the file's lines are nowhere in the
# call's arguments (which the audit log records).
WRITE = (
    "import csv\n"
    "rows = [('region', 'sales'), ('north', 120), ('south', 80), ('east', 45)]\n"
    "csv.writer(open('/outputs/summary.csv', 'w', newline=''), lineterminator='\\n').writerows(rows)\n"
    "print('written')\n"
)
READ = (
    "import csv, os\n"
    "rows = list(csv.DictReader(open('/inputs/summary.csv')))\n"
    "print(sum(int(r['sales']) for r in rows))\n"
    "print(oct(os.stat('/inputs/summary.csv').st_mode & 0o777), os.access('/inputs/summary.csv', os.W_OK))\n"
)


class TwoSteps(ScriptedResponses):
    """Turn 2 is written from what the loop sent back for turn 1: the model
    passes the artifact id it was given, as a real one would."""

    def __init__(self, read_id: str, write_id: str) -> None:
        super().__init__(
            [
                [fcall(write_id, "python_files", json.dumps({"code": WRITE, "inputs": []}))],
                [],
                [message("The total is 245.")],
            ]
        )
        self.read_id = read_id

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        if len(self.requests) == 1:
            output = json.loads(body["input"][0]["output"])
            ids = [a["id"] for a in output.get("artifacts", [])]
            self.turns[0] = [fcall(self.read_id, "python_files", json.dumps({"code": READ, "inputs": ids}))]
        return super().respond(body)


def test_two_step_analysis_through_the_agent_loop(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:10]
    write_id, read_id = f"call_write_{tag}", f"call_read_{tag}"
    script = TwoSteps(read_id, write_id)
    with serving(script), agent.GatewayClient(stack.gateway, stack.token) as gateway:
        client = openai.OpenAI(api_key="test", base_url=f"http://127.0.0.1:{script.port}/v1", max_retries=0)
        result = agent.run(client, "test-model", "Sum the sales.", gateway)
    assert result.text == "The total is 245."

    first = json.loads(script.requests[1]["input"][0]["output"])
    assert first["stdout"] == "written\n"
    (art,) = first["artifacts"]
    assert art["name"] == "summary.csv"
    assert art["size"] == len(CSV)
    assert art["sha256"] == hashlib.sha256(CSV.encode()).hexdigest()
    assert art["media_type"] == "text/csv"
    assert art["id"].startswith("art_")

    second = json.loads(script.requests[2]["input"][0]["output"])
    assert second["outcome"] == "ok", second
    # The figure, and the file read-only for the call.
    assert second["stdout"] == "245\n0o444 False\n"

    records = {r.call_id: r for r in result.calls}
    write_decision = records[write_id].result.decision_id
    read_decision = records[read_id].result.decision_id
    (written,) = [e for e in stack.audit_events(write_decision) if e["kind"] == "execution"]
    assert [(a["name"], a["sha256"]) for a in written["execution"]["artifacts"]] == [("summary.csv", art["sha256"])]
    (read,) = [e for e in stack.audit_events(read_decision) if e["kind"] == "execution"]
    assert [(a["id"], int(a["size"])) for a in read["execution"]["inputs"]] == [(art["id"], len(CSV))]
    # By reference only: the content is nowhere in the log.
    assert "north,120" not in stack.audit_path.read_text()


def _invoke(stack: Stack, token: str, tool: str, arguments: dict[str, Any]) -> agent.ToolResult:
    with agent.GatewayClient(stack.gateway, token) as gateway:
        return gateway.invoke(f"call_{uuid.uuid4().hex[:12]}", "function_call", tool, json.dumps(arguments), "")


def _put(stack: Stack, token: str, name: str, data: bytes) -> str:
    """An artifact put through ArtifactService as the token's principal."""
    header = artifacts_pb2.PutArtifactHeader(name=name)
    parts = [artifacts_pb2.PutArtifactRequest(header=header), artifacts_pb2.PutArtifactRequest(chunk=data)]
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        resp = stub.PutArtifact(iter(parts), metadata=(("authorization", f"Bearer {token}"),), timeout=30)
    return str(resp.artifact.id)


def test_another_principals_artifact_is_not_found(stack: Stack) -> None:
    theirs = _put(stack, stack.untrusted_token, "theirs.txt", b"not yours")
    other = _invoke(stack, stack.token, "python_files", {"code": "print(1)", "inputs": [theirs]})
    assert other.allowed
    assert other.outcome == "error"
    assert other.error.startswith("artifact_not_found: "), other.error
    assert "not yours" not in other.stdout + other.stderr
    # Its owner's own artifact, made by a call, is usable by a later call.
    made = _invoke(
        stack, stack.token, "python_files", {"code": "open('/outputs/mine.txt', 'w').write('secret')", "inputs": []}
    )
    (art,) = made.artifacts
    code = "print(open('/inputs/mine.txt').read())"
    mine = _invoke(stack, stack.token, "python_files", {"code": code, "inputs": [art.id]})
    assert mine.stdout == "secret\n"


def test_inputs_too_many_is_a_policy_deny(stack: Stack) -> None:
    ids = [f"art_{uuid.uuid4().hex}" for _ in range(9)]
    refused = _invoke(stack, stack.token, "python_files", {"code": "print(1)", "inputs": ids})
    assert not refused.allowed
    assert "inputs_too_many" in [r.code for r in refused.reasons]


def test_plain_python_collects_nothing(stack: Stack) -> None:
    # Only tools that declare outputs pay for collecting them.
    # (A warm pool container has /outputs; a cold one-shot container, on a
    # pool miss, has none: either way nothing comes back.)
    code = "try:\n    open('/outputs/x.txt', 'w').write('x')\nexcept OSError:\n    pass\nprint('ok')"
    plain = _invoke(stack, stack.token, "python", {"code": code})
    assert plain.outcome == "ok", plain.stderr
    assert plain.stdout == "ok\n"
    assert plain.artifacts == ()
