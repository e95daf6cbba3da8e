"""The agent loop on the Responses API (non-streaming): ask the model, send
every client-executed call it emits through the gateway, answer each call
with an output item echoing its ``call_id``, chain with
``previous_response_id``, repeat until the model answers in text. A refusal
is an output the model reads (the loop goes on); the gateway, not this loop,
decides what runs, so even a call to a tool that was never declared is sent
there to be refused and audited."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from openai import omit
from openai.types.responses import ResponseFunctionToolCall, ResponseInputParam
from openai.types.responses.response_input_param import FunctionCallOutput

from agent._errors import LoopLimitError, UnsupportedItemError
from agent._gateway import ToolGateway, ToolResult
from agent._tools import tools_for_responses

if TYPE_CHECKING:
    import openai

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

    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(calls))), thread_name_prefix="airlock-call") as pool:
        return list(pool.map(one, calls))


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
) -> AgentResult:
    """Runs the loop to a final text answer.

    ``session_id`` (default: the first response's id) is sent with every call
    so the gateway's budget rules count per session. Raises ``LoopLimitError``
    when the model still wants tools after ``max_turns`` responses or would
    exceed ``max_tool_calls``; the calls of the offending response are then
    not run."""
    tools = tools_for_responses(gateway.list_tools())
    declared = frozenset(t["name"] for t in tools)
    records: list[CallRecord] = []
    next_input: str | ResponseInputParam = prompt
    previous: str | None = None
    session = session_id
    turn = 0
    while True:
        response = client.responses.create(
            model=model,
            input=next_input,
            tools=tools or omit,
            previous_response_id=previous if previous is not None else omit,
        )
        turn += 1
        if session is None:
            session = response.id
        unsupported = [item.type for item in response.output if item.type in _UNSUPPORTED_CALL_ITEMS]
        if unsupported:
            raise UnsupportedItemError(f"response {response.id} has items this agent cannot execute: {unsupported}")
        calls = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
        if not calls:
            return AgentResult(response.output_text, tuple(records), response.id, session, turn)
        if turn >= max_turns:
            raise LoopLimitError(f"the model still wants tools after {turn} turns (max_turns={max_turns})")
        if len(records) + len(calls) > max_tool_calls:
            raise LoopLimitError(f"{len(records) + len(calls)} tool calls would exceed max_tool_calls={max_tool_calls}")
        done = execute_calls(gateway, calls, session_id=session, declared=declared, turn=turn, parallel=parallel)
        records.extend(done)
        if on_call is not None:
            for record in done:
                on_call(record)
        next_input = [function_call_output(r.call_id, r.result) for r in done]
        previous = response.id
