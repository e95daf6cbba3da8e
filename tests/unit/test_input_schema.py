"""policies/schema/input.schema.json, the documented shape of the policy input:
it is a valid draft 2020-12 schema, every example validates, broken inputs do
not, and -- the point of it -- every input the real gateway builds validates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from airlock.common.wire import InputFile
from airlock.gateway import load_registry
from airlock.gateway._audit import render
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._mask import Masker
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, Principal, RunOutcome, RunSpec
from airlock.gateway._policy import PolicyResult
from airlock.v1 import audit_pb2

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "policies" / "schema"
SCHEMA_PATH = SCHEMA_DIR / "input.schema.json"
#: One example per folder (examples/<name>/input.json): `opa test policies`
#: loads every JSON file under policies/ as data at its folder's path, so two
#: example files in one folder would collide there (merge error).
EXAMPLES = sorted((SCHEMA_DIR / "examples").glob("*/input.json"))


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def errors_of(validator: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


# -- the schema itself ---------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://airlock.dev/schemas/policy-input/v1"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_property_is_documented() -> None:
    """The schema is documentation for policy authors: each property says what it is."""
    missing: list[str] = []

    def walk(node: Any, at: str) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if not (isinstance(sub, dict) and sub.get("description")):
                    missing.append(f"{at}/properties/{name}")
            for key, sub in node.items():
                walk(sub, f"{at}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{at}/{i}")

    walk(load_schema(), "#")
    assert missing == []


def test_nothing_under_policies_schema_is_loaded_into_the_bundle() -> None:
    # The bundle takes only .rego and data.{json,yaml,yml} from policies/
    # (airlock/cli/_bundle.py); anything named like that here would become
    # policy data.
    names = {p.name for p in SCHEMA_DIR.rglob("*")}
    assert not names & {"data.json", "data.yaml", "data.yml"}
    assert not list(SCHEMA_DIR.rglob("*.rego"))
    # `opa test policies` (scripts/test) does load every JSON file below
    # policies/ as data at its folder's path: one file per folder, and no
    # top-level "examples" key in the schema, or they would collide.
    folders = [p.parent for p in SCHEMA_DIR.rglob("*.json")]
    assert len(folders) == len(set(folders))
    assert "examples" not in load_schema()


# -- the examples ----------------------------------------------------------------


def test_there_are_examples_of_each_kind() -> None:
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES]
    assert len(docs) >= 4
    item_types = {d["call"]["item_type"] for d in docs}
    assert {"function_call", "custom_tool_call", "shell_call"} <= item_types
    assert any(d["call"]["arguments_errors"] for d in docs)
    assert any(d["tool"] is None for d in docs)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_validates(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert errors_of(validator, doc) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_is_internally_consistent(path: Path) -> None:
    """What the gateway would have computed: the errors of the arguments
    against the tool's schema, and tool.name == call.tool. For a dynamic
    tool: the entry is its base's and its own schema checks the arguments."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    tool, call = doc["tool"], doc["call"]
    if tool is None:
        assert call["arguments_errors"] == []
        return
    definition = doc.get("tool_definition")
    if definition is not None:
        assert tool["name"] == definition["base"]
        assert definition["name"] == call["tool"]
        schema = definition["parameters"]
    else:
        assert tool["name"] == call["tool"]
        schema = tool["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    params = jsonschema.Draft202012Validator(schema)
    expected = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in sorted(params.iter_errors(call["arguments"]), key=lambda e: list(e.absolute_path))
    ]
    assert call["arguments_errors"] == expected
    if call["item_type"] == "custom_tool_call":
        assert call["arguments_bytes"] == len(call["arguments"]["input"].encode())


# -- broken inputs ---------------------------------------------------------------


def _base() -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / "examples" / "python_allowed" / "input.json").read_text(encoding="utf-8"))


def _set(pointer: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = pointer.strip("/").split("/")
        node = doc
        for part in parents:
            node = node[part]
        node[last] = value

    return apply


def _drop(pointer: str) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = pointer.strip("/").split("/")
        node = doc
        for part in parents:
            node = node[part]
        del node[last]

    return apply


def _unknown_tool_with_errors(doc: dict[str, Any]) -> None:
    doc["tool"] = None
    doc["call"]["arguments_errors"] = ["code: 42 is not of type 'string'"]


def _custom_call_without_input(doc: dict[str, Any]) -> None:
    doc["call"]["item_type"] = "custom_tool_call"
    doc["call"]["arguments"] = {"text": "free text"}


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "missing principal": _drop("/principal"),
    "principal null": _set("/principal", None),
    "principal without id": _drop("/principal/id"),
    "principal with an extra key": _set("/principal/roles", ["admin"]),
    "unknown authn": _set("/principal/authn", "password"),
    "unknown top-level key": _set("/extra", True),
    "missing tool key": _drop("/tool"),
    "tool is a name, not an entry": _set("/tool", "python"),
    "tool entry with an unknown key": _set("/tool/owner", "me"),
    "tool entry without argv": _drop("/tool/argv"),
    "tool entry with empty argv": _set("/tool/argv", []),
    "tool entry with an unknown runtime": _set("/tool/runtime", "kata"),
    "tool limit in YAML units": _set("/tool/limits/memory_bytes", "256Mi"),
    "tool limit of zero": _set("/tool/limits/pids", 0),
    "tool limit with an unknown key": _set("/tool/limits/swap_bytes", 1),
    "tool env value not a string": _set("/tool/env", {"N": 1}),
    "missing call": _drop("/call"),
    "bad item_type": _set("/call/item_type", "function"),
    "item_type as the proto enum name": _set("/call/item_type", "ITEM_TYPE_FUNCTION_CALL"),
    "empty call_id": _set("/call/call_id", ""),
    "empty tool name": _set("/call/tool", ""),
    "arguments as the raw string": _set("/call/arguments", '{"code": "print(1)"}'),
    "arguments as a list": _set("/call/arguments", []),
    "arguments_errors not a list": _set("/call/arguments_errors", "code: 42 is not of type 'string'"),
    "arguments_errors of objects": _set("/call/arguments_errors", [{"path": "code"}]),
    "negative arguments_bytes": _set("/call/arguments_bytes", -1),
    "arguments_bytes as a string": _set("/call/arguments_bytes", "22"),
    "session_id null": _set("/call/session_id", None),
    "call with an unknown key": _set("/call/principal", "someone-else"),
    "call without session_id": _drop("/call/session_id"),
    "custom call arguments without input": _custom_call_without_input,
    "unregistered tool with arguments_errors": _unknown_tool_with_errors,
    "missing counters": _drop("/counters"),
    "negative session_calls": _set("/counters/session_calls", -1),
    "negative principal_tool_calls": _set("/counters/principal_tool_calls", -3),
    "fractional counter": _set("/counters/session_tool_calls", 1.5),
    "zero window": _set("/counters/window_seconds", 0),
    "counters with an unknown key": _set("/counters/tenant_calls", 1),
    "counters without window_seconds": _drop("/counters/window_seconds"),
    "missing request": _drop("/request"),
    "unknown rpc": _set("/request/rpc", "ListTools"),
    "decision_id not a uuid": _set("/request/decision_id", "decision-1"),
    "decision_id not version 4": _set("/request/decision_id", "9b1deb4d-3b7d-1bad-9bdd-2b0d7b3dcb6d"),
    "time with an offset": _set("/request/time", "2026-11-28T03:00:00.000000+00:00"),
    "time not a date": _set("/request/time", "yesterday"),
    "request with an unknown key": _set("/request/ip", "10.0.0.1"),
}


def test_base_of_the_broken_table_is_valid(validator: jsonschema.Draft202012Validator) -> None:
    assert errors_of(validator, _base()) == []


@pytest.mark.parametrize("breaker", BROKEN.values(), ids=BROKEN.keys())
def test_broken_input_does_not_validate(
    validator: jsonschema.Draft202012Validator, breaker: Callable[[dict[str, Any]], None]
) -> None:
    doc = _base()
    breaker(doc)
    assert errors_of(validator, doc) != []


@pytest.mark.parametrize("value", [[], "input", 1, None])
def test_the_document_must_be_an_object(validator: jsonschema.Draft202012Validator, value: Any) -> None:
    assert errors_of(validator, value) != []


# -- the real input: what Gateway._policy_input builds -----------------------------

REGISTRY = {
    "version": 1,
    "tools": {
        "python": {
            "description": "Run Python.",
            "image": "sandbox-python:test",
            "argv": ["python3", "-I", "-c", "{code}"],
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}},
                "required": ["code"],
                "additionalProperties": False,
            },
            "limits": {"memory": "128Mi", "cpus": 0.5, "pids": 32, "timeout": "3s", "output": "64Ki", "tmpfs": "16Mi"},
        },
        "patch": {
            "description": "Apply a patch (free text).",
            "item_type": "custom_tool_call",
            "image": "sandbox-python:test",
            "argv": ["apply", "{input}"],
            "runtime": "runsc",
            "env": {"LANG": "C.UTF-8"},
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]},
            "limits": {"timeout": "5s"},
        },
        "shell": {
            "description": "The built-in shell item.",
            "item_type": "shell_call",
            "image": "sandbox-python:test",
            "argv": ["run-actions", "{commands}"],
            "parameters": {
                "type": "object",
                "properties": {"commands": {"type": "array", "items": {"type": "string"}}},
                "required": ["commands"],
            },
        },
        "fetch": {
            "description": "Fetch a URL.",
            "image": "sandbox-python:test",
            "argv": ["fetch", "{url}"],
            "allowed_network": True,
            "egress_allowlist": ["*.example.org:443", "api.example.org"],
            # Shows in the input's tool entry, which the schema must describe.
            "egress_http": {
                "*.example.org:443": {"rules": [{"methods": ["GET"], "paths": ["/**"], "max_body": "1k"}]},
                "api.example.org": {"secrets": [{"name": "api_key", "header": "X-Api-Key"}]},
            },
            "parameters": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
        },
    },
}
LIMITS = {
    "memory_bytes": 128 * 1024**2,
    "cpu_millis": 500,
    "pids": 32,
    "timeout_ms": 3000,
    "output_bytes": 65536,
    "tmpfs_bytes": 16 * 1024**2,
}
DEV = Principal("dev-agent", "default", "token")
MTLS = Principal("cert-agent", "untrusted", "mtls")
BOTH = Principal("cert-agent", "default", "mtls+token")


class CapturingPolicy:
    """A stand-in for OPA that records every input it is asked and answers
    like a minimal policy: allow a registered tool whose item type matches
    and whose arguments are valid."""

    def __init__(self) -> None:
        self.inputs: list[dict[str, Any]] = []

    async def evaluate(self, path: str, input_doc: Any) -> PolicyResult:
        # Round-trip through JSON, as the OPA client sends it.
        doc = json.loads(json.dumps(input_doc))
        self.inputs.append(doc)
        tool, call = doc.get("tool"), doc.get("call", {})
        if tool is None:
            reason = {"code": "tool_not_granted", "message": "no such tool"}
        elif tool["item_type"] != call["item_type"]:
            reason = {"code": "item_type_mismatch", "message": "wrong item"}
        elif call["arguments_errors"]:
            reason = {"code": "arguments_invalid", "message": call["arguments_errors"][0]}
        else:
            allowed = {"code": "allowed", "message": "ok"}
            return PolicyResult(
                {"allow": True, "reasons": [allowed], "obligations": {"limits": dict(LIMITS)}}, "rev-test"
            )
        return PolicyResult({"allow": False, "reasons": [reason], "obligations": {}}, "rev-test")

    async def close(self) -> None:
        pass


class ListAudit:
    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        copied = audit_pb2.AuditEvent()
        copied.CopyFrom(event)
        self.events.append(copied)

    def close(self) -> None:
        pass


class OkExecutor:
    def __init__(self) -> None:
        self.plans: list[RunSpec] = []

    async def run(self, plan: RunSpec, inputs: Sequence[InputFile] = ()) -> RunOutcome:
        self.plans.append(plan)
        return RunOutcome("ok", 0, b"", b"", False, 5)


#: (rpc, principal, item_type, tool, raw arguments, session_id, expected verdict)
CALLS: list[tuple[str, Principal, str, str, str, str, str]] = [
    ("Invoke", DEV, "function_call", "python", '{"code": "print(2+2)"}', "sess-1", "allow"),
    ("Invoke", DEV, "function_call", "python", '{"code": "print(3)"}', "sess-1", "allow"),
    ("Decide", DEV, "function_call", "python", '{"code": "print(4)"}', "", "allow"),
    ("Invoke", DEV, "function_call", "python", '{"code": "print(5)"}', "", "allow"),
    ("Invoke", DEV, "function_call", "web_search", '{"query": "opa"}', "sess-1", "deny"),
    ("Decide", DEV, "function_call", "python", '{"code": 42, "extra": true}', "sess-1", "deny"),
    ("Invoke", DEV, "function_call", "python", "", "", "deny"),
    ("Invoke", BOTH, "custom_tool_call", "patch", "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", "", "allow"),
    ("Decide", DEV, "custom_tool_call", "python", "print(1)", "sess-2", "deny"),
    ("Invoke", DEV, "shell_call", "shell", '{"commands": ["ls", "pwd"], "timeout_ms": 1000}', "sess-1", "allow"),
    ("Invoke", MTLS, "function_call", "fetch", '{"url": "https://www.example.org/", "token": 12345}', "", "allow"),
    ("Decide", MTLS, "local_shell_call", "local_shell", '{"command": ["ls"]}', "", "deny"),
    ("Decide", DEV, "apply_patch_call", "apply_patch", '{"operation": {"type": "create_file"}}', "s", "deny"),
]


@pytest.fixture
def gateway_parts(tmp_path: Path) -> tuple[Gateway, CapturingPolicy, ListAudit]:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    policy, audit = CapturingPolicy(), ListAudit()
    gateway = Gateway(
        registry=registry,
        policy=policy,
        executor=OkExecutor(),
        audit=audit,
        metrics=GatewayMetrics(CollectorRegistry(), registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 4096),
    )
    return gateway, policy, audit


async def _run_all(gateway: Gateway) -> list[str]:
    verdicts = []
    for i, (rpc, principal, item_type, tool, raw, session, _) in enumerate(CALLS):
        inp = CallInput(Call(f"call_{i}", item_type, tool, raw, session), principal, rpc)
        decision = (await gateway.invoke(inp)).decision if rpc == "Invoke" else await gateway.decide(inp)
        verdicts.append(decision.verdict)
    return verdicts


def ints(value: Any) -> Any:
    """Integral floats back to ints (protobuf Struct numbers are doubles)."""
    if isinstance(value, dict):
        return {k: ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ints(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def test_every_input_the_gateway_sends_validates(
    gateway_parts: tuple[Gateway, CapturingPolicy, ListAudit], validator: jsonschema.Draft202012Validator
) -> None:
    gateway, policy, _ = gateway_parts
    verdicts = asyncio.run(_run_all(gateway))
    assert verdicts == [c[-1] for c in CALLS], "the fake policy's verdicts are part of the scenario"
    assert len(policy.inputs) == len(CALLS), "every call passed the input checks and reached the policy"
    failures = {doc["call"]["call_id"]: errors_of(validator, doc) for doc in policy.inputs}
    assert {k: v for k, v in failures.items() if v} == {}
    # The scenario covered what it meant to.
    by_id = {doc["call"]["call_id"]: doc for doc in policy.inputs}
    assert by_id["call_4"]["tool"] is None
    assert by_id["call_5"]["call"]["arguments_errors"]
    assert by_id["call_6"]["call"]["arguments"] == {}
    assert by_id["call_7"]["call"]["arguments"] == {"input": CALLS[7][4]}
    assert {d["principal"]["authn"] for d in policy.inputs} == {"token", "mtls", "mtls+token"}
    assert {d["request"]["rpc"] for d in policy.inputs} == {"Invoke", "Decide"}


def test_counters_count_earlier_allowed_invokes(gateway_parts: tuple[Gateway, CapturingPolicy, ListAudit]) -> None:
    """What the schema's descriptions of `counters` promise."""
    gateway, policy, _ = gateway_parts
    asyncio.run(_run_all(gateway))
    counters = {doc["call"]["call_id"]: doc["counters"] for doc in policy.inputs}
    assert counters["call_0"] == {
        "window_seconds": 3600,
        "principal_calls": 0,
        "session_calls": 0,
        "session_tool_calls": 0,
        "principal_tool_calls": 0,
    }
    # call_0 (Invoke, allowed) counts; this call does not count itself.
    assert counters["call_1"]["session_calls"] == 1
    assert counters["call_1"]["session_tool_calls"] == 1
    assert counters["call_1"]["principal_tool_calls"] == 1
    assert counters["call_1"]["principal_calls"] == 1
    # call_2 is a Decide: it does not count; call_3 has no session id.
    assert counters["call_3"]["session_calls"] == 0
    assert counters["call_3"]["principal_tool_calls"] == 2
    # Denied calls do not count: two allowed python invokes in sess-1, then
    # the allowed shell call sees them.
    assert counters["call_9"]["session_calls"] == 2
    assert counters["call_9"]["session_tool_calls"] == 0


def test_the_audited_copy_of_the_input_validates(
    gateway_parts: tuple[Gateway, CapturingPolicy, ListAudit], validator: jsonschema.Draft202012Validator
) -> None:
    """The decision event's `input` is the policy input, masked by the sink
    as it renders the line (gateway/_audit.render); masking replaces string
    values only, so the shape holds (once Struct's doubles are ints again).
    The audit copy names the tool instead of repeating its registry entry;
    the entry is put back before validating."""
    gateway, _, audit = gateway_parts
    asyncio.run(_run_all(gateway))
    decisions = [e for e in audit.events if e.kind == "decision"]
    assert len(decisions) == len(CALLS)
    masked_any = False
    for event in decisions:
        assert event.path
        line = json.loads(render(event, Masker()))
        doc = ints(line["input"])
        if doc["tool"] is not None:
            assert doc["tool"] == {"name": doc["call"]["tool"]}
            doc["tool"] = gateway.registry.tool_data(doc["call"]["tool"])
        masked_any = masked_any or bool(line["masked"])
        assert errors_of(validator, doc) == [], event.call_id
    assert masked_any, "the fetch call's 'token' argument should have been masked"


def test_an_input_without_counters_is_refused_by_the_schema(validator: jsonschema.Draft202012Validator) -> None:
    # Guards the brief's contract: counters are part of every input, so a
    # gateway that stopped sending them would fail the tests above.
    doc = _base()
    del doc["counters"]
    assert any("'counters' is a required property" in e for e in errors_of(validator, doc))
