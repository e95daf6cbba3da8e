"""Unit tier for the streamed agent loop (``run(..., stream=True)``): a fake
client yields real SDK event objects. A call is acted on only at
``response.output_item.done`` (never on an arguments delta), starts while
the rest of the stream is still being read, and its output goes back in the
order the calls arrived; a stream that fails or ends without
``response.completed`` raises ``StreamError``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.responses import cli
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter
from test_agent_loop import OUTPUT_ITEM, FakeGateway, fcall, message, response

from airlock import agent
from airlock.agent._cli import EXIT_OK, EXIT_UNAVAILABLE
from airlock.cli._main import _parser

EVENT: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


class Events:
    """Builds one response's event sequence with running sequence numbers."""

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.seq = 0

    def ev(self, kind: str, **fields: Any) -> ResponseStreamEvent:
        event = EVENT.validate_python({"type": kind, "sequence_number": self.seq, **fields})
        self.seq += 1
        return event

    def created(self) -> ResponseStreamEvent:
        return self.ev("response.created", response=response(self.rid, []).model_dump() | {"status": "in_progress"})

    def added(self, index: int, item: dict[str, Any]) -> ResponseStreamEvent:
        empty = item | {"arguments": "", "status": "in_progress"} if item["type"] == "function_call" else item
        return self.ev("response.output_item.added", output_index=index, item=empty)

    def delta(self, index: int, item: dict[str, Any], chunk: str) -> ResponseStreamEvent:
        return self.ev("response.function_call_arguments.delta", output_index=index, item_id=item["id"], delta=chunk)

    def args_done(self, index: int, item: dict[str, Any]) -> ResponseStreamEvent:
        return self.ev(
            "response.function_call_arguments.done",
            output_index=index,
            item_id=item["id"],
            arguments=item["arguments"],
        )

    def done(self, index: int, item: dict[str, Any]) -> ResponseStreamEvent:
        return self.ev("response.output_item.done", output_index=index, item=item)

    def completed(self, output: list[dict[str, Any]]) -> ResponseStreamEvent:
        return self.ev("response.completed", response=response(self.rid, output).model_dump())


class StreamingResponses:
    """``create(stream=True)`` returns the next scripted generator of events."""

    def __init__(self, script: list[Iterator[ResponseStreamEvent]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.closed = 0

    def create(self, **kwargs: Any) -> Iterator[ResponseStreamEvent]:
        self.requests.append(kwargs)
        assert kwargs.get("stream") is True
        events = self.script.pop(0)

        def wrapped() -> Iterator[ResponseStreamEvent]:
            try:
                yield from events
            finally:
                self.closed += 1

        return wrapped()


class StreamingClient:
    def __init__(self, script: list[Iterator[ResponseStreamEvent]]) -> None:
        self.responses = StreamingResponses(script)


def wait_for(pred: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def call_turn(
    rid: str, gw: FakeGateway, calls: list[dict[str, Any]], *, split: int = 3
) -> Iterator[ResponseStreamEvent]:
    """One response streaming ``calls``: each item added with empty arguments,
    its arguments in deltas (the first prefix is not valid JSON), then done.
    Asserts nothing reached the gateway for an item before its .done event,
    and waits, before completing, until the first call has started."""
    e = Events(rid)
    yield e.created()
    for index, item in enumerate(calls):
        yield e.added(index, item)
        args = item["arguments"]
        for start in range(0, len(args), split):
            yield e.delta(index, item, args[start : start + split])
            assert item["call_id"] not in [c[0] for c in gw.invoked], "a delta must never start a call"
        yield e.args_done(index, item)
        time.sleep(0.02)
        assert item["call_id"] not in [c[0] for c in gw.invoked], "the arguments .done event must not start a call"
        yield e.done(index, item)
    # The first call runs while the stream is still open.
    assert wait_for(lambda: bool(gw.invoked)), "a call should start at output_item.done, before response.completed"
    yield e.completed(calls)


def text_turn(rid: str, text: str) -> Iterator[ResponseStreamEvent]:
    e = Events(rid)
    msg = message(text)
    yield e.created()
    yield e.added(0, msg | {"content": [], "status": "in_progress"})
    yield e.ev(
        "response.output_text.delta",
        output_index=0,
        content_index=0,
        item_id=msg["id"],
        delta=text,
        logprobs=[],
    )
    yield e.done(0, msg)
    yield e.completed([msg])


def test_streamed_calls_start_at_item_done_keep_order_and_chain() -> None:
    arguments = '{"code":  "print(1)" }'  # odd spacing: must reach the gateway byte for byte
    assert not _is_json(arguments[:3])
    gw = FakeGateway()
    calls = [fcall("slow", "python", arguments), fcall("fast", "python", "{}"), fcall("evil", "rm_rf", "{}")]
    client = StreamingClient([call_turn("resp_1", gw, calls), text_turn("resp_2", "done")])
    seen: list[str] = []
    result = agent.run(client, "m", "hi", gw, parallel=3, on_call=lambda r: seen.append(r.call_id), stream=True)  # type: ignore[arg-type]

    assert result.text == "done"
    assert result.session_id == "resp_1"
    assert result.response_id == "resp_2"
    assert result.turns == 2
    # Exactly one invoke per call, with the final arguments string.
    assert sorted(gw.invoked) == sorted(
        [
            ("slow", "function_call", "python", arguments, "resp_1"),
            ("fast", "function_call", "python", "{}", "resp_1"),
            ("evil", "function_call", "rm_rf", "{}", "resp_1"),
        ]
    )
    assert [r.call_id for r in result.calls] == ["slow", "fast", "evil"] == seen
    assert [r.declared for r in result.calls] == [True, True, False]

    first, second = client.responses.requests
    assert first["input"] == "hi"
    assert [t["name"] for t in first["tools"]] == ["python"]
    assert second["previous_response_id"] == "resp_1"
    items = second["input"]
    for item in items:
        OUTPUT_ITEM.validate_python(item)
    assert [i["call_id"] for i in items] == ["slow", "fast", "evil"]
    assert json.loads(items[0]["output"])["stdout"] == "out-slow\n"
    assert json.loads(items[2]["output"])["error"] == "refused by policy"
    assert client.responses.closed == 2


def test_outputs_follow_arrival_order_not_finish_order() -> None:
    gw = FakeGateway()
    # "slow" arrives first and finishes last.
    calls = [fcall("slow", "python", "{}"), fcall("b", "python", "{}"), fcall("c", "python", "{}")]
    client = StreamingClient([call_turn("r1", gw, calls), text_turn("r2", "x")])
    agent.run(client, "m", "hi", gw, parallel=4, stream=True)  # type: ignore[arg-type]
    assert [i["call_id"] for i in client.responses.requests[1]["input"]] == ["slow", "b", "c"]
    assert gw.peak >= 2


def _is_json(s: str) -> bool:
    try:
        json.loads(s)
    except ValueError:
        return False
    return True


def test_stream_without_completed_raises_after_started_calls_finish() -> None:
    gw = FakeGateway()
    item = fcall("a", "python", "{}")

    def cut() -> Iterator[ResponseStreamEvent]:
        e = Events("r1")
        yield e.created()
        yield e.added(0, item)
        yield e.done(0, item)

    client = StreamingClient([cut()])
    with pytest.raises(agent.StreamError, match=r"without response\.completed") as info:
        agent.run(client, "m", "hi", gw, stream=True)  # type: ignore[arg-type]
    assert isinstance(info.value, agent.AgentError)
    assert info.value.code == "stream_incomplete"
    assert gw.active == 0, "started calls are waited for"
    assert client.responses.closed == 1


@pytest.mark.parametrize(
    ("kind", "fields", "match"),
    [
        ("response.failed", {"error": {"code": "server_error", "message": "boom"}, "status": "failed"}, "boom"),
        (
            "response.incomplete",
            {"incomplete_details": {"reason": "max_output_tokens"}, "status": "incomplete"},
            "max_output_tokens",
        ),
        ("error", None, "rate limited"),
    ],
)
def test_failed_stream_raises(kind: str, fields: dict[str, Any] | None, match: str) -> None:
    def failing() -> Iterator[ResponseStreamEvent]:
        e = Events("r1")
        yield e.created()
        if fields is None:
            yield e.ev("error", code="rate_limit", message="rate limited", param=None)
        else:
            yield e.ev(kind, response=response("r1", []).model_dump() | fields)
        yield e.completed([message("never read")])

    with pytest.raises(agent.StreamError, match=match) as info:
        agent.run(StreamingClient([failing()]), "m", "hi", FakeGateway(), stream=True)  # type: ignore[arg-type]
    assert info.value.code == "stream_failed"


def test_completed_response_must_match_the_streamed_calls() -> None:
    gw = FakeGateway()
    streamed = fcall("a", "python", '{"code": "1"}')

    def tampered() -> Iterator[ResponseStreamEvent]:
        e = Events("r1")
        yield e.created()
        yield e.done(0, streamed)
        yield e.completed([streamed | {"arguments": '{"code": "2"}'}])

    with pytest.raises(agent.StreamError) as info:
        agent.run(StreamingClient([tampered()]), "m", "hi", gw, stream=True)  # type: ignore[arg-type]
    assert info.value.code == "stream_mismatch"
    assert [c[3] for c in gw.invoked] == ['{"code": "1"}']


def test_call_before_response_created_is_refused() -> None:
    item = fcall("a", "python", "{}")

    def early() -> Iterator[ResponseStreamEvent]:
        e = Events("r1")
        yield e.done(0, item)
        yield e.completed([item])

    gw = FakeGateway()
    with pytest.raises(agent.StreamError, match=r"before response\.created"):
        agent.run(StreamingClient([early()]), "m", "hi", gw, stream=True)  # type: ignore[arg-type]
    assert gw.invoked == []


def test_max_turns_in_streaming_runs_no_call_of_the_last_turn() -> None:
    gw = FakeGateway()
    script = [call_turn("r0", gw, [fcall("c0", "python", "{}")])]
    e = Events("r1")
    last = fcall("c1", "python", "{}")
    script.append(iter([e.created(), e.done(0, last), e.completed([last])]))
    with pytest.raises(agent.LoopLimitError, match="max_turns=2"):
        agent.run(StreamingClient(script), "m", "hi", gw, max_turns=2, stream=True)  # type: ignore[arg-type]
    assert [c[0] for c in gw.invoked] == ["c0"]


def test_max_tool_calls_in_streaming_does_not_run_the_excess_call() -> None:
    gw = FakeGateway()
    items = [fcall(x, "python", "{}") for x in ("a", "b", "c")]
    e = Events("r0")
    events = [e.created(), *(e.done(i, item) for i, item in enumerate(items)), e.completed(items)]
    with pytest.raises(agent.LoopLimitError, match="max_tool_calls=2"):
        agent.run(StreamingClient([iter(events)]), "m", "hi", gw, max_tool_calls=2, stream=True)  # type: ignore[arg-type]
    assert sorted(c[0] for c in gw.invoked) == ["a", "b"]


def test_a_streamed_computer_call_without_a_screenshot_stops_the_loop() -> None:
    item = {
        "type": "computer_call",
        "id": "cu_1",
        "call_id": "x",
        "action": {"type": "screenshot"},
        "pending_safety_checks": [],
        "status": "completed",
    }
    e = Events("r0")
    events = iter([e.created(), e.done(0, item), e.completed([item])])
    with pytest.raises(agent.ComputerUseError):
        agent.run(StreamingClient([events]), "m", "hi", FakeGateway(), stream=True)  # type: ignore[arg-type]


def test_cli_stream_flag_is_parsed_and_passed_through() -> None:
    assert _parser().parse_args(["agent", "run", "--stream", "hi"]).stream is True
    assert _parser().parse_args(["agent", "run", "hi"]).stream is False

    gw = FakeGateway()
    client = StreamingClient([call_turn("r1", gw, [fcall("a", "python", "{}")]), text_turn("r2", "fine")])
    code, printed, errors = cli(gw, "hi", client, stream=True)
    assert code == EXIT_OK, errors
    assert "call_id=a" in printed
    assert printed.rstrip().endswith("fine")

    e = Events("r1")
    broken = StreamingClient([iter([e.created()])])
    code, printed, errors = cli(FakeGateway(), "hi", broken, stream=True)
    assert code == EXIT_UNAVAILABLE
    assert "stream_incomplete" in errors
