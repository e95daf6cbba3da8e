"""Policy roll-out on a real stack started with --dev (every edit is
published; without --dev only `airlock policy publish` publishes, see
test_trust_domains.py): the bundle is signed and OPA rejects a tampered one;
editing a policy or the registry takes effect without a restart, atomically;
and a change that does not build is never published."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from helpers import Stack, auth, new_home, start_stack, stop_stack, tool_call

from airlock.v1 import call_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, Path]]:
    src = tmp_path_factory.mktemp("src")
    policies = src / "policies"
    shutil.copytree(REPO / "policies", policies)
    registry = src / "tool_registry.yaml"
    shutil.copy(REPO / "deploy" / "tool_registry.yaml", registry)
    stack = start_stack(new_home("lifecycle"), "--dev", "--policies", str(policies), "--registry", str(registry))
    yield stack, policies, registry
    code, out = stop_stack(stack)
    assert code == 0, out


def decide(stack: Stack, tool: str, args: str = '{"code": "print(1)"}') -> call_pb2.Decision:
    with grpc.insecure_channel(stack.gateway) as channel:
        return (
            gateway_pb2_grpc.GatewayServiceStub(channel)
            .Decide(gateway_pb2.DecideRequest(call=tool_call(tool, args)), metadata=auth(stack.token), timeout=10)
            .decision
        )


def test_tampered_bundle_is_rejected_and_the_last_good_one_keeps_deciding(live: tuple[Stack, Path, Path]) -> None:
    stack, _, _ = live
    bundle = stack.layout.bundle
    before = decide(stack, "web_fetch", '{"url": "https://en.wikipedia.org/"}')
    assert before.verdict == call_pb2.VERDICT_DENY
    # Grant web_fetch inside the bundle but keep the old signature.
    out = io.BytesIO()
    modified = False
    with tarfile.open(bundle) as src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            if member.name.endswith("data.json") and b'"tools"' in data and b"grants" in data:
                doc = json.loads(data)
                doc["airlock"]["grants"]["profiles"]["default"]["tools"].append("web_fetch")
                doc["airlock"]["grants"]["profiles"]["default"]["network"] = True
                data = json.dumps(doc).encode()
                modified = True
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    assert modified, "the test did not find the grants in the bundle"
    tampered = out.getvalue()
    assert tampered != bundle.read_bytes()
    bundle.write_bytes(tampered)
    time.sleep(6)  # three or more OPA polls
    after = decide(stack, "web_fetch", '{"url": "https://en.wikipedia.org/"}')
    assert after.verdict == call_pb2.VERDICT_DENY
    assert after.policy_revision == before.policy_revision


def test_policy_edit_takes_effect_without_restart_and_atomically(live: tuple[Stack, Path, Path]) -> None:
    stack, policies, _ = live
    first = decide(stack, "shell", '{"command": "id"}')
    assert first.verdict == call_pb2.VERDICT_ALLOW
    grants = policies / "airlock" / "grants" / "data.yaml"
    doc = yaml.safe_load(grants.read_text())
    doc["profiles"]["default"]["tools"] = [t for t in doc["profiles"]["default"]["tools"] if t != "shell"]
    grants.write_text(yaml.safe_dump(doc))
    verdict_by_revision: dict[str, set[int]] = {}
    deadline = time.monotonic() + 30
    last = first
    while time.monotonic() < deadline:
        last = decide(stack, "shell", '{"command": "id"}')
        verdict_by_revision.setdefault(last.policy_revision, set()).add(last.verdict)
        if last.verdict == call_pb2.VERDICT_DENY:
            break
        time.sleep(0.05)
    assert last.verdict == call_pb2.VERDICT_DENY, "the edit never took effect"
    assert [r.code for r in last.reasons] == ["tool_not_granted"]
    assert last.policy_revision != first.policy_revision
    # Atomic: every revision seen gave one verdict -- no decision was made
    # against a half-loaded policy.
    assert all(len(v) == 1 for v in verdict_by_revision.values()), verdict_by_revision


def test_registry_edit_reaches_policy_and_gateway_without_restart(live: tuple[Stack, Path, Path]) -> None:
    stack, _, registry = live
    doc = yaml.safe_load(registry.read_text())
    doc["tools"]["python"]["limits"]["timeout"] = "4s"
    doc["tools"]["python"]["description"] = "Run Python (edited)."
    registry.write_text(yaml.safe_dump(doc, sort_keys=False))
    deadline = time.monotonic() + 30
    timeout_ms = 0
    description = ""
    while time.monotonic() < deadline:
        timeout_ms = decide(stack, "python").obligations.limits.timeout_ms
        with grpc.insecure_channel(stack.gateway) as channel:
            listed = gateway_pb2_grpc.GatewayServiceStub(channel).ListTools(
                gateway_pb2.ListToolsRequest(), metadata=auth(stack.token), timeout=10
            )
        description = next(t.description for t in listed.tools if t.name == "python")
        if timeout_ms == 4000 and description == "Run Python (edited).":
            break
        time.sleep(0.2)
    assert timeout_ms == 4000
    assert description == "Run Python (edited)."


def test_a_change_that_does_not_build_is_not_published(live: tuple[Stack, Path, Path]) -> None:
    stack, policies, _ = live
    before = decide(stack, "python")
    broken = policies / "airlock" / "broken.rego"
    broken.write_text("package airlock\n\nthis is not rego\n")
    try:
        time.sleep(4)
        after = decide(stack, "python")
        assert after.verdict == before.verdict == call_pb2.VERDICT_ALLOW
        assert after.policy_revision == before.policy_revision
    finally:
        broken.unlink()


def test_a_dynamic_tool_is_rechecked_by_the_current_policy(live: tuple[Stack, Path, Path]) -> None:
    """Admitted under one revision, refused under the next: a definition an
    older policy admitted does not run once the current one refuses it."""
    stack, policies, _ = live
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    definition = {
        "name": "double_it",
        "description": "Print twice n.",
        "parameters": json.dumps(schema),
        "source": "print(ARGS['n'] * 2)\n",
        "base": "python",
        "network": False,
    }

    def call(tool: str, arguments: dict[str, object]) -> call_pb2.Decision:
        c = tool_call(tool, json.dumps(arguments))
        c.session_id = "recheck"
        with grpc.insecure_channel(stack.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            return stub.Decide(gateway_pb2.DecideRequest(call=c), metadata=auth(stack.token), timeout=10).decision

    with grpc.insecure_channel(stack.gateway) as channel:
        c = tool_call("define_tool", json.dumps(definition))
        c.session_id = "recheck"
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        defined = stub.Invoke(gateway_pb2.InvokeRequest(call=c), metadata=auth(stack.token), timeout=30)
    assert json.loads(defined.stdout)["defined"] == "double_it"
    before = call("double_it", {"n": 21})
    assert before.verdict == call_pb2.VERDICT_ALLOW

    grants = policies / "airlock" / "grants" / "data.yaml"
    doc = yaml.safe_load(grants.read_text())
    doc["profiles"]["default"]["tool_definitions"]["bases"] = []
    grants.write_text(yaml.safe_dump(doc))
    deadline = time.monotonic() + 30
    after = before
    while time.monotonic() < deadline and after.verdict == call_pb2.VERDICT_ALLOW:
        time.sleep(0.1)
        after = call("double_it", {"n": 21})
    assert after.verdict == call_pb2.VERDICT_DENY, "the policy change never took effect"
    assert after.policy_revision != before.policy_revision
    assert [r.code for r in after.reasons] == ["base_not_allowed"]
