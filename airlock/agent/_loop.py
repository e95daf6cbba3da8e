"""The agent loop on the Responses API: ask the model, send every
client-executed call it emits (function, custom tool, local shell, legacy
local shell, apply_patch) through the gateway, answer each with the output
item of its type echoing its ``call_id`` (``_items.py``), record every hosted
item (web search, file search, code interpreter, MCP, hosted shell) in the
gateway's audit log, chain with ``previous_response_id``, repeat until the
model answers in text. A refusal is an output the model reads (the loop goes
on); the gateway, not this loop, decides what runs, so even a call to a tool
that was never declared is sent there to be refused and audited.

With ``stream=True`` the response is streamed and a call is acted on only
when its ``response.output_item.done`` event arrives (it then starts at once,
in the pool, while the rest of the stream is read); argument deltas are never
acted on. The final response comes from ``response.completed``; hosted items
are recorded from it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from openai import omit
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInputItemParam,
    ResponseInputParam,
    ResponseOutputItemDoneEvent,
)

from airlock.agent._errors import LoopLimitError, StreamError, UnsupportedItemError
from airlock.agent._items import (
    UNSUPPORTED_CALL_ITEMS,
    CallRecord,
    ClientCall,
    ItemContext,
    call_cost,
    call_key,
    execute_item,
    hosted_tool,
    is_client_call,
)
from airlock.agent._tools import ComputerShape, Declaration, declare
from airlock.agent._workspace import Workspace
from airlock.common.client import GatewayUnavailable, ToolGateway
from airlock.common.names import DEFINE_TOOL

if TYPE_CHECKING:
    from pathlib import Path

    import openai
    from openai.types.responses import ToolParam

log = logging.getLogger("airlock.agent")

DEFAULT_MAX_TURNS = 8
DEFAULT_MAX_TOOL_CALLS = 32
DEFAULT_PARALLEL = 4
#: Hosted items are recorded with at most this much of their JSON: an image
#: generation result can be megabytes, and the gateway keeps only a bound.
OBSERVE_MAX_CHARS = 256 * 1024


@dataclass(frozen=True)
class ObservedItem:
    """A hosted item the provider ran, as recorded by the gateway."""

    turn: int
    item_type: str
    item_id: str
    tool: str
    event_id: str


@dataclass(frozen=True)
class AgentResult:
    text: str
    """The final response's ``output_text``."""
    calls: tuple[CallRecord, ...]
    response_id: str
    session_id: str
    turns: int
    observed: tuple[ObservedItem, ...] = ()
    """Hosted items, each recorded in the audit log."""


def execute_calls(ctx: ItemContext, calls: Sequence[ClientCall], *, parallel: int) -> list[CallRecord]:
    """Runs one response's calls, up to ``parallel`` at a time; the records
    (and so the output items) keep the order the calls arrived in."""
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(calls))), thread_name_prefix="airlock-call") as pool:
        return list(pool.map(lambda call: execute_item(ctx, call), calls))


@dataclass(frozen=True)
class _Turn:
    """What one model turn needs besides the request."""

    gateway: ToolGateway
    decl: Declaration
    turn: int
    max_turns: int
    max_tool_calls: int
    calls_so_far: int
    parallel: int
    session_id: str | None
    workspace: Workspace | None

    def items(self, session_id: str) -> ItemContext:
        return ItemContext(self.gateway, session_id, self.decl, self.turn, self.workspace)


@dataclass(frozen=True)
class _Request:
    model: str
    input: str | ResponseInputParam
    tools: list[ToolParam]
    previous: str | None


@dataclass(frozen=True)
class _TurnResult:
    response: Response
    session: str
    records: list[CallRecord]
    observed: list[ObservedItem]


def _check_limits(t: _Turn, n_calls: int) -> None:
    """``n_calls`` counts gateway calls: a shell_call costs one per command."""
    if t.turn >= t.max_turns:
        raise LoopLimitError(f"the model still wants tools after {t.turn} turns (max_turns={t.max_turns})")
    total = t.calls_so_far + n_calls
    if total > t.max_tool_calls:
        raise LoopLimitError(f"{total} tool calls would exceed max_tool_calls={t.max_tool_calls}")


def _check_unsupported(response: Response) -> None:
    unsupported = [item.type for item in response.output if item.type in UNSUPPORTED_CALL_ITEMS]
    if unsupported:
        raise UnsupportedItemError(f"response {response.id} has items this agent cannot execute: {unsupported}")


def _client_calls(response: Response) -> list[ClientCall]:
    return [cast("ClientCall", item) for item in response.output if is_client_call(item)]


def _observe(t: _Turn, response: Response, session: str) -> list[ObservedItem]:
    """Records each hosted item of a finished response (there is nothing to
    answer). A failure raises ``GatewayUnavailable``: no unrecorded hosted run."""
    observed = []
    for item in response.output:
        tool = hosted_tool(item)
        if tool is None:
            continue
        item_id = str(getattr(item, "id", "") or "")
        status = str(getattr(item, "status", "") or "")
        item_json = item.model_dump_json(exclude_none=True)[:OBSERVE_MAX_CHARS]
        event_id = t.gateway.observe(
            item.type, item_id, tool=tool, status=status, item_json=item_json, session_id=session
        )
        observed.append(ObservedItem(t.turn, item.type, item_id, tool, event_id))
    return observed


def _plain_turn(client: openai.OpenAI, req: _Request, t: _Turn) -> _TurnResult:
    """One non-streamed response: every check passes before any call runs."""
    response = client.responses.create(
        model=req.model,
        input=req.input,
        tools=req.tools or omit,
        previous_response_id=req.previous if req.previous is not None else omit,
    )
    session = t.session_id or response.id
    _check_unsupported(response)
    observed = _observe(t, response, session)
    calls = _client_calls(response)
    if not calls:
        return _TurnResult(response, session, [], observed)
    _check_limits(t, sum(map(call_cost, calls)))
    return _TurnResult(response, session, execute_calls(t.items(session), calls, parallel=t.parallel), observed)


def _raise_if_terminal(event: object) -> None:
    """``response.failed``, ``response.incomplete`` and ``error`` end a turn."""
    if isinstance(event, (ResponseFailedEvent, ResponseIncompleteEvent)):
        r = event.response
        why = r.error.message if r.error else (r.incomplete_details.reason if r.incomplete_details else None)
        raise StreamError(f"response {r.id} ended with {event.type}: {why or r.status}", code="stream_failed")
    if isinstance(event, ResponseErrorEvent):
        raise StreamError(f"stream error event: {event.code or 'error'}: {event.message}", code="stream_failed")


def _check_completed(final: Response | None, created_id: str | None, streamed: list[ClientCall]) -> Response:
    if final is None:
        raise StreamError(
            f"the stream ended without response.completed (response {created_id})", code="stream_incomplete"
        )
    if created_id is not None and final.id != created_id:
        raise StreamError(f"response.completed is for {final.id}, the stream created {created_id}")
    _check_unsupported(final)
    if sorted(map(call_key, _client_calls(final))) != sorted(map(call_key, streamed)):
        raise StreamError(
            f"response {final.id}: the completed response's calls differ from the items streamed",
            code="stream_mismatch",
        )
    return final


def _streamed_turn(client: openai.OpenAI, req: _Request, t: _Turn) -> _TurnResult:
    """One streamed response. Each call starts (in the pool) when its
    ``response.output_item.done`` arrives, never on an arguments delta.
    Returns the ``response.completed`` response, the session id, the records
    in the order the calls arrived, and the hosted items recorded.

    Raises ``StreamError`` when the stream fails or ends without
    ``response.completed``, or when the completed response's calls are not
    exactly the ones streamed; ``LoopLimitError`` as soon as a call arrives on
    the last allowed turn or past ``max_tool_calls`` (that call is not run,
    but calls of the same response that arrived earlier may already have
    run); ``UnsupportedItemError`` for a client-executed item this agent
    cannot answer. Calls already started are waited for before raising;
    queued ones are cancelled."""
    events = client.responses.create(
        model=req.model,
        input=req.input,
        tools=req.tools or omit,
        previous_response_id=req.previous if req.previous is not None else omit,
        stream=True,
    )
    started: list[tuple[ClientCall, Future[CallRecord]]] = []
    cost = 0
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
                if item.type in UNSUPPORTED_CALL_ITEMS:
                    raise UnsupportedItemError(
                        f"response {created_id} streamed an item this agent cannot execute: {item.type}"
                    )
                if not is_client_call(item):
                    continue  # hosted items are recorded from the completed response
                call = cast("ClientCall", item)
                cost += call_cost(call)
                _check_limits(t, cost)
                session = t.session_id or created_id
                if session is None:
                    raise StreamError(f"call {call.call_id} streamed before response.created")
                started.append((call, pool.submit(execute_item, t.items(session), call)))
            # Anything else (argument and text deltas, .added items, ...) is not acted on.
        final = _check_completed(final, created_id, [call for call, _ in started])
        records = [future.result() for _, future in started]
        session = t.session_id or final.id
        observed = _observe(t, final, session)
        ok = True
        return _TurnResult(final, session, records, observed)
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
    workspace: Path | Workspace | None = None,
    hosted_tools: Sequence[ToolParam] = (),
    end_session: bool = True,
    computer: ComputerShape = "computer",
) -> AgentResult:
    """Runs the loop to a final text answer.

    ``session_id`` (default: the first response's id) is sent with every call
    so the gateway's budget rules count per session, and a policy may run
    the session's calls in one sandbox (files under /work persist from one
    call to the next). With ``end_session`` (the default) that sandbox is
    ended when the run returns or raises; pass False to continue the session
    in a later run with the same ``session_id``. Raises ``LoopLimitError``
    when the model still wants tools after ``max_turns`` responses or would
    exceed ``max_tool_calls`` gateway calls (a shell_call costs one per
    command); the calls of the offending response are then not run
    (streaming: calls of it that arrived before the limit was hit may have
    run).

    ``computer`` is the shape a granted computer-use tool is declared in:
    ``computer`` (a batch of actions per call) or ``computer_use_preview``
    (one action, with the display size). Each computer_call is decided as a
    whole and answered with the screenshot after it
    (docs/computer-use.md); one whose pending safety checks the policy does
    not acknowledge raises ``ComputerUseError``.

    ``workspace`` is the directory apply_patch edits (a ``Workspace`` to
    protect more files than ``DEFAULT_PROTECTED``); without one the
    apply_patch tool is not declared. ``hosted_tools`` are hosted tool
    configurations (e.g. ``{"type": "file_search", "vector_store_ids": [...]}``),
    each declared only when the gateway lists a grant of its kind; a granted
    ``web_search`` is declared without one.

    ``stream=True`` streams each response (``stream=True`` on
    ``responses.create``) and starts each call as soon as its
    ``response.output_item.done`` arrives, never on argument deltas; outputs
    still go back in the order the calls arrived. Raises ``StreamError`` when
    a stream fails or ends without ``response.completed``."""
    if workspace is not None and not isinstance(workspace, Workspace):
        workspace = Workspace(workspace)
    decl = declare(gateway.list_tools(), hosted=hosted_tools, apply_patch=workspace is not None, computer=computer)
    records: list[CallRecord] = []
    observed: list[ObservedItem] = []
    next_input: str | ResponseInputParam = prompt
    previous: str | None = None
    session = session_id
    turn = 0
    one_turn = _streamed_turn if stream else _plain_turn
    try:
        while True:
            turn += 1
            spent = sum(max(1, len(r.results)) for r in records)
            t = _Turn(gateway, decl, turn, max_turns, max_tool_calls, spent, parallel, session, workspace)
            step = one_turn(client, _Request(model, next_input, decl.tools, previous), t)
            session = step.session
            observed.extend(step.observed)
            if not step.records:
                response = step.response
                return AgentResult(response.output_text, tuple(records), response.id, session, turn, tuple(observed))
            records.extend(step.records)
            if any(r.tool == DEFINE_TOOL and r.result.allowed for r in step.records):
                # A tool the model just defined is declared from the next turn
                # on (ListTools lists the session's dynamic tools).
                listed = gateway.list_tools(session_id=session or "")
                decl = declare(listed, hosted=hosted_tools, apply_patch=workspace is not None, computer=computer)
            if on_call is not None:
                for record in step.records:
                    on_call(record)
            next_input = [item for r in step.records for item in (_output_item(r), *r.notes)]
            previous = step.response.id
    finally:
        if end_session and session:
            _end_session(gateway, session)


def _end_session(gateway: ToolGateway, session: str) -> None:
    """Best effort: the sandbox's idle TTL ends it anyway, and a failure
    here must not hide the run's own result or error."""
    try:
        gateway.end_session(session_id=session)
    except GatewayUnavailable as exc:
        log.warning("could not end session %s's sandboxes: %s (its idle TTL will)", session, exc)


def _output_item(record: CallRecord) -> ResponseInputItemParam:
    assert record.output_item is not None, "execute_item always sets the output item"
    return record.output_item
