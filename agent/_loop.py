"""The agent loop on the Responses API: ask the model, send every
client-executed call it emits through the gateway, answer each call with an
output item echoing its ``call_id``, chain with ``previous_response_id``,
repeat until the model answers in text. A refusal is an output the model reads
(the loop goes on); the gateway, not this loop, decides what runs, so even a
call to a tool that was never declared is sent there to be refused and
audited.

With ``stream=True`` the response is streamed and a function call is acted on
only when its ``response.output_item.done`` event arrives (it then starts at
once, in the pool, while the rest of the stream is read); argument deltas are
never acted on. The final response comes from ``response.completed``."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from openai import omit
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseInputParam,
    ResponseOutputItemDoneEvent,
)
from openai.types.responses.response_input_param import FunctionCallOutput

from agent._errors import LoopLimitError, StreamError, UnsupportedItemError
from agent._gateway import ToolGateway, ToolResult
from agent._tools import tools_for_responses

if TYPE_CHECKING:
    import openai
    from openai.types.responses import FunctionToolParam

DEFAULT_MAX_TURNS = 8
DEFAULT_MAX_TOOL_CALLS = 32
DEFAULT_PARALLEL = 4
#: Client-executed items this slice cannot answer yet. They can only appear
#: if a matching tool was declared, which this slice never does; seeing one
#: means something is wrong, so the loop stops rather than leave it unanswered.
_UNSUPPORTED_CALL_ITEMS = frozenset(
    {"custom_tool_call", "shell_call", "local_shell_call", "apply_patch_call", "computer_call"}
)


@dataclass(frozen=True)
class CallRecord:
    """One function call the model made and what became of it."""

    turn: int
    call_id: str
    tool: str
    arguments: str
    declared: bool
    """Whether the tool was in the ``tools`` array (False: the model made it up)."""
    result: ToolResult
    output: str
    """The output string sent back to the model."""


@dataclass(frozen=True)
class AgentResult:
    text: str
    """The final response's ``output_text``."""
    calls: tuple[CallRecord, ...]
    response_id: str
    session_id: str
    turns: int


def output_text_for(result: ToolResult) -> str:
    """The ``output`` string the model reads for one call."""
    if not result.allowed:
        return json.dumps(
            {
                "error": "refused by policy",
                "decision_id": result.decision_id,
                "reasons": [{"code": r.code, "message": r.message} for r in result.reasons],
            }
        )
    doc: dict[str, object] = {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "outcome": result.outcome,
    }
    if result.output_truncated:
        doc["output_truncated"] = True
    if result.error:
        doc["error"] = result.error
    return json.dumps(doc)


def function_call_output(call_id: str, result: ToolResult) -> FunctionCallOutput:
    return {"type": "function_call_output", "call_id": call_id, "output": output_text_for(result)}


def _execute_one(
    gateway: ToolGateway, call: ResponseFunctionToolCall, *, session_id: str, declared: frozenset[str], turn: int
) -> CallRecord:
    # The raw arguments string goes to the gateway untouched: it is what
    # the policy judges and the audit log records.
    result = gateway.invoke(call.call_id, "function_call", call.name, call.arguments, session_id)
    return CallRecord(
        turn=turn,
        call_id=call.call_id,
        tool=call.name,
        arguments=call.arguments,
        declared=call.name in declared,
        result=result,
        output=output_text_for(result),
    )


def execute_calls(
    gateway: ToolGateway,
    calls: list[ResponseFunctionToolCall],
    *,
    session_id: str,
    declared: frozenset[str],
    turn: int,
    parallel: int,
) -> list[CallRecord]:
    """Runs one response's calls, up to ``parallel`` at a time; the records
    (and so the output items) keep the order the calls arrived in."""

    def one(call: ResponseFunctionToolCall) -> CallRecord:
        return _execute_one(gateway, call, session_id=session_id, declared=declared, turn=turn)

    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(calls))), thread_name_prefix="airlock-call") as pool:
        return list(pool.map(one, calls))


@dataclass(frozen=True)
class _Turn:
    """What one model turn needs besides the request."""

    gateway: ToolGateway
    declared: frozenset[str]
    turn: int
    max_turns: int
    max_tool_calls: int
    calls_so_far: int
    parallel: int
    session_id: str | None


@dataclass(frozen=True)
class _Request:
    model: str
    input: str | ResponseInputParam
    tools: list[FunctionToolParam]
    previous: str | None


def _check_limits(t: _Turn, n_calls: int) -> None:
    if t.turn >= t.max_turns:
        raise LoopLimitError(f"the model still wants tools after {t.turn} turns (max_turns={t.max_turns})")
    total = t.calls_so_far + n_calls
    if total > t.max_tool_calls:
        raise LoopLimitError(f"{total} tool calls would exceed max_tool_calls={t.max_tool_calls}")


def _check_unsupported(response: Response) -> None:
    unsupported = [item.type for item in response.output if item.type in _UNSUPPORTED_CALL_ITEMS]
    if unsupported:
        raise UnsupportedItemError(f"response {response.id} has items this agent cannot execute: {unsupported}")


def _plain_turn(client: openai.OpenAI, req: _Request, t: _Turn) -> tuple[Response, str, list[CallRecord]]:
    """One non-streamed response: every check passes before any call runs."""
    response = client.responses.create(
        model=req.model,
        input=req.input,
        tools=req.tools or omit,
        previous_response_id=req.previous if req.previous is not None else omit,
    )
    session = t.session_id or response.id
    _check_unsupported(response)
    calls = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
    if not calls:
        return response, session, []
    _check_limits(t, len(calls))
    done = execute_calls(t.gateway, calls, session_id=session, declared=t.declared, turn=t.turn, parallel=t.parallel)
    return response, session, done


def _raise_if_terminal(event: object) -> None:
    """``response.failed``, ``response.incomplete`` and ``error`` end a turn."""
    if isinstance(event, (ResponseFailedEvent, ResponseIncompleteEvent)):
        r = event.response
        why = r.error.message if r.error else (r.incomplete_details.reason if r.incomplete_details else None)
        raise StreamError(f"response {r.id} ended with {event.type}: {why or r.status}", code="stream_failed")
    if isinstance(event, ResponseErrorEvent):
        raise StreamError(f"stream error event: {event.code or 'error'}: {event.message}", code="stream_failed")


def _call_key(call: ResponseFunctionToolCall) -> tuple[str, str, str]:
    return (call.call_id, call.name, call.arguments)


def _check_completed(
    final: Response | None, created_id: str | None, streamed: list[ResponseFunctionToolCall]
) -> Response:
    if final is None:
        raise StreamError(
            f"the stream ended without response.completed (response {created_id})", code="stream_incomplete"
        )
    if created_id is not None and final.id != created_id:
        raise StreamError(f"response.completed is for {final.id}, the stream created {created_id}")
    _check_unsupported(final)
    final_calls = [item for item in final.output if isinstance(item, ResponseFunctionToolCall)]
    if sorted(map(_call_key, final_calls)) != sorted(map(_call_key, streamed)):
        raise StreamError(
            f"response {final.id}: the completed response's function calls differ from the items streamed",
            code="stream_mismatch",
        )
    return final


def _streamed_turn(client: openai.OpenAI, req: _Request, t: _Turn) -> tuple[Response, str, list[CallRecord]]:
    """One streamed response. Each function call starts (in the pool) when its
    ``response.output_item.done`` arrives, never on an arguments delta.
    Returns the ``response.completed`` response, the session id and the
    records in the order the calls arrived.

    Raises ``StreamError`` when the stream fails or ends without
    ``response.completed``, or when the completed response's function calls
    are not exactly the ones streamed; ``LoopLimitError`` as soon as a call
    arrives on the last allowed turn or past ``max_tool_calls`` (that call is
    not run, but calls of the same response that arrived earlier may already
    have run); ``UnsupportedItemError`` for a client-executed item this slice
    cannot answer. Calls already started are waited for before raising;
    queued ones are cancelled."""
    events = client.responses.create(
        model=req.model,
        input=req.input,
        tools=req.tools or omit,
        previous_response_id=req.previous if req.previous is not None else omit,
        stream=True,
    )
    started: list[tuple[ResponseFunctionToolCall, Future[CallRecord]]] = []
    created_id: str | None = None
    final: Response | None = None
    pool = ThreadPoolExecutor(max_workers=max(1, t.parallel), thread_name_prefix="airlock-call")
    ok = False
    try:
        for event in events:
            _raise_if_terminal(event)
            if isinstance(event, ResponseCreatedEvent):
                created_id = event.response.id
            elif isinstance(event, ResponseCompletedEvent):
                final = event.response
                break
            elif isinstance(event, ResponseOutputItemDoneEvent):
                item = event.item
                if item.type in _UNSUPPORTED_CALL_ITEMS:
                    raise UnsupportedItemError(
                        f"response {created_id} streamed an item this agent cannot execute: {item.type}"
                    )
                if not isinstance(item, ResponseFunctionToolCall):
                    continue
                _check_limits(t, len(started) + 1)
                session = t.session_id or created_id
                if session is None:
                    raise StreamError(f"function call {item.call_id} streamed before response.created")
                started.append(
                    (
                        item,
                        pool.submit(
                            _execute_one, t.gateway, item, session_id=session, declared=t.declared, turn=t.turn
                        ),
                    )
                )
            # Anything else (argument and text deltas, .added items, ...) is not acted on.
        final = _check_completed(final, created_id, [call for call, _ in started])
        records = [future.result() for _, future in started]
        ok = True
        return final, t.session_id or final.id, records
    finally:
        events.close()
        pool.shutdown(wait=True, cancel_futures=not ok)


def run(
    client: openai.OpenAI,
    model: str,
    prompt: str,
    gateway: ToolGateway,
    *,
    max_turns: int = DEFAULT_MAX_TURNS,
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
    parallel: int = DEFAULT_PARALLEL,
    session_id: str | None = None,
    on_call: Callable[[CallRecord], None] | None = None,
    stream: bool = False,
) -> AgentResult:
    """Runs the loop to a final text answer.

    ``session_id`` (default: the first response's id) is sent with every call
    so the gateway's budget rules count per session. Raises ``LoopLimitError``
    when the model still wants tools after ``max_turns`` responses or would
    exceed ``max_tool_calls``; the calls of the offending response are then
    not run (streaming: calls of it that arrived before the limit was hit may
    have run).

    ``stream=True`` streams each response (``stream=True`` on
    ``responses.create``) and starts each function call as soon as its
    ``response.output_item.done`` arrives, never on argument deltas; outputs
    still go back in the order the calls arrived. Raises ``StreamError`` when
    a stream fails or ends without ``response.completed``."""
    tools = tools_for_responses(gateway.list_tools())
    declared = frozenset(t["name"] for t in tools)
    records: list[CallRecord] = []
    next_input: str | ResponseInputParam = prompt
    previous: str | None = None
    session = session_id
    turn = 0
    one_turn = _streamed_turn if stream else _plain_turn
    while True:
        turn += 1
        t = _Turn(gateway, declared, turn, max_turns, max_tool_calls, len(records), parallel, session)
        response, session, done = one_turn(client, _Request(model, next_input, tools, previous), t)
        if not done:
            return AgentResult(response.output_text, tuple(records), response.id, session, turn)
        records.extend(done)
        if on_call is not None:
            for record in done:
                on_call(record)
        next_input = [function_call_output(r.call_id, r.result) for r in done]
        previous = response.id
