"""Property-based: no input stops the gateway (issue 10).

Hypothesis throws arbitrary JSON-ish arguments and strings at a real
gateway (real OPA, real executor): Decide and Observe 10,000 examples each
(AIRLOCK_PROPERTY_EXAMPLES to change it), Invoke a few hundred (most refused
before any container starts). Every call must

- answer within its deadline, with OK or one of the documented statuses;
- have exactly one decision event in the audit log (Observe: one
  observation event), found by the id the answer carries;

and a normal call must still work afterwards.
"""

from __future__ import annotations

import json
import os
import string
from collections import Counter
from typing import Any

import grpc
import pytest
from helpers import Stack, auth, decision_from_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlock.v1 import call_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("AIRLOCK_PROPERTY_EXAMPLES", "10000"))
INVOKE_EXAMPLES = max(50, EXAMPLES // 40)
DEADLINE_S = 10.0
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every CI run; findings reproduce
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Valid gRPC strings (no surrogates); anything else is the transport's to refuse.
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5), max_leaves=30
)
#: Fragments the strict parser must refuse, spliced into otherwise fine JSON.
NASTY = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "1" + "0" * 400,
    '"\\ud800"',
    '"\\udfff x"',
    "[" * 300 + "]" * 300,
    '{"a": 1, "a": 2}',
    "\\u0000",
    "'single'",
    "",
    "{",
]


@st.composite
def raw_arguments(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["object", "object", "code", "code", "json", "nasty", "text"]))
    if kind == "json":
        return json.dumps(draw(json_values))
    if kind == "object":
        return json.dumps(draw(st.dictionaries(text, json_values, max_size=6)))
    if kind == "code":  # what a real call looks like, with arbitrary code and extras
        return json.dumps({"code": draw(text), **draw(st.dictionaries(text, json_values, max_size=2))})
    if kind == "nasty":
        inner = draw(st.sampled_from(NASTY))
        return f'{{"code": "print(1)", "x": {inner}}}'
    return draw(text)


ITEM_TYPES = [v.number for v in call_pb2.ItemType.DESCRIPTOR.values] + [999]
tools = st.sampled_from(["python", "shell", "python_script", "shell_builtin", "apply_patch", "web_search"]) | text


def mostly(common: Any, *rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` three times in four, so most examples get past the input
    checks to the policy (and some to the executor)."""
    return st.one_of(st.just(common), st.just(common), st.just(common), *rare)


@st.composite
def tool_calls(draw: st.DrawFn) -> call_pb2.ToolCall:
    return call_pb2.ToolCall(
        call_id=draw(mostly("c1", st.just(""), text, st.text(min_size=300, max_size=400))),
        item_type=draw(mostly(call_pb2.ITEM_TYPE_FUNCTION_CALL, st.sampled_from(ITEM_TYPES))),
        tool=draw(mostly("python", tools)),
        arguments=draw(raw_arguments()),
        session_id=draw(text),
        requested_limits=call_pb2.Limits(timeout_ms=draw(st.integers(0, 2**31 - 1))),
    )


class Recorder:
    """Ids the gateway answered with, by status."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.statuses: Counter[str] = Counter()


def _decide_or_invoke(stub: Any, rpc: str, call: call_pb2.ToolCall, token: str, rec: Recorder) -> None:
    try:
        if rpc == "Decide":
            resp = stub.Decide(gateway_pb2.DecideRequest(call=call), metadata=auth(token), timeout=DEADLINE_S)
            decision = resp.decision
        else:
            resp = stub.Invoke(gateway_pb2.InvokeRequest(call=call), metadata=auth(token), timeout=60)
            decision = resp.decision
        rec.statuses["OK"] += 1
    except grpc.RpcError as exc:
        assert exc.code() in DOCUMENTED, f"{exc.code()} {exc.details()}"  # noqa: PT017 - any status is data here
        rec.statuses[exc.code().name] += 1
        decision = decision_from_error(exc)
    assert decision.decision_id
    assert decision.reasons, "every decision has a reason"
    rec.ids.append(decision.decision_id)


def _events_by_id(stack: Stack, kind: str) -> Counter[str]:
    return Counter(e["decision_id"] for e in stack.audit_events() if e["kind"] == kind)


def _a_normal_call_works(stack: Stack) -> None:
    with grpc.insecure_channel(stack.gateway) as channel:
        resp = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
            gateway_pb2.InvokeRequest(
                call=call_pb2.ToolCall(
                    call_id="after-properties",
                    item_type=call_pb2.ITEM_TYPE_FUNCTION_CALL,
                    tool="python",
                    arguments='{"code": "print(21*2)"}',
                )
            ),
            metadata=auth(stack.token),
            timeout=60,
        )
    assert resp.stdout == b"42\n"


@pytest.mark.parametrize("rpc", ["Decide", "Invoke"])
def test_any_call_gets_a_documented_answer_and_exactly_one_decision_event(stack: Stack, rpc: str) -> None:
    rec = Recorder()
    # Invoke examples are capped: the few that are valid Python calls start a container.
    examples = EXAMPLES if rpc == "Decide" else INVOKE_EXAMPLES
    with grpc.insecure_channel(stack.gateway, options=[("grpc.max_send_message_length", 8 << 20)]) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        tokens = [stack.token, stack.untrusted_token]

        @settings(SETTINGS, max_examples=examples)
        @given(call=tool_calls(), who=st.sampled_from([0, 1]))
        def check(call: call_pb2.ToolCall, who: int) -> None:
            _decide_or_invoke(stub, rpc, call, tokens[who], rec)

        check()
    print(f"{rpc}: {len(rec.ids)} calls, answers {dict(rec.statuses)}")
    assert len(rec.ids) >= examples * 0.9
    events = _events_by_id(stack, "decision")
    missing = [i for i in rec.ids if events[i] != 1]
    assert missing == [], f"{len(missing)} calls without exactly one decision event, e.g. {missing[:3]}"
    _a_normal_call_works(stack)


observe_item_types = (
    st.sampled_from(
        [
            "web_search_call",
            "file_search_call",
            "code_interpreter_call",
            "mcp_call",
            "image_generation_call",
            "shell_call",
        ]
    )
    | text
)


def test_any_observation_gets_a_documented_answer_and_exactly_one_event(stack: Stack) -> None:
    rec = Recorder()
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)

        @SETTINGS
        @given(
            item_type=mostly("web_search_call", observe_item_types),
            item_id=text,
            tool=text,
            status=text,
            item_json=raw_arguments(),
            session_id=text,
        )
        def check(item_type: str, item_id: str, tool: str, status: str, item_json: str, session_id: str) -> None:
            request = gateway_pb2.ObserveRequest(
                item_type=item_type,
                item_id=item_id,
                tool=tool,
                status=status,
                item_json=item_json,
                session_id=session_id,
            )
            try:
                event_id = stub.Observe(request, metadata=auth(stack.token), timeout=DEADLINE_S).event_id
                rec.statuses["OK"] += 1
            except grpc.RpcError as exc:
                assert exc.code() in DOCUMENTED, f"{exc.code()} {exc.details()}"  # noqa: PT017 - any status is data
                rec.statuses[exc.code().name] += 1
                details = exc.details() or ""
                assert "event_id=" in details, details
                event_id = details.rsplit("event_id=", 1)[1].strip()
            assert set(event_id) <= set(string.hexdigits + "-")
            rec.ids.append(event_id)

        check()
    print(f"Observe: {len(rec.ids)} calls, answers {dict(rec.statuses)}")
    events = _events_by_id(stack, "observation")
    missing = [i for i in rec.ids if events[i] != 1]
    assert missing == [], f"{len(missing)} observations without exactly one event, e.g. {missing[:3]}"
    _a_normal_call_works(stack)
