"""``airlock agent run``: the loop against a running stack, printing each
call, its decision and the final answer. The CLI parser lives in
``airlock.cli``; this is what its ``agent run`` branch calls."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from agent._errors import GatewayError, LoopLimitError, StreamError, UnsupportedItemError
from agent._gateway import Gateway
from agent._items import CallRecord
from agent._loop import run

if TYPE_CHECKING:
    from pathlib import Path

    import openai

EXIT_OK = 0
EXIT_LOOP_LIMIT = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 4


def describe(record: CallRecord) -> str:
    head = f"[turn {record.turn}] {record.tool}({record.arguments}) call_id={record.call_id}"
    if record.item_type != "function_call":
        head += f" [{record.item_type}]"
    if not record.declared:
        head += " (tool was not declared)"
    # One line per gateway call: a shell_call has one per command.
    lines = [head]
    for r in record.results or (record.result,):
        codes = ",".join(x.code for x in r.reasons)
        if not r.allowed:
            lines.append(f"  DENY {codes} decision={r.decision_id}")
        else:
            lines.append(f"  ALLOW decision={r.decision_id} -> {r.outcome} exit_code={r.exit_code}")
    return "\n".join(lines)


def run_cli(
    gateway: Gateway,
    prompt: str,
    *,
    client: openai.OpenAI | None = None,
    model: str,
    max_turns: int,
    max_tool_calls: int,
    parallel: int,
    session_id: str | None,
    stream: bool = False,
    workspace: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    import openai  # noqa: PLC0415 - the SDK is only needed once a run starts

    # Looked up per call, not bound as defaults: sys.stdout may be replaced.
    out = out or sys.stdout
    err = err or sys.stderr

    if client is None:
        try:
            client = openai.OpenAI()  # OPENAI_API_KEY, OPENAI_BASE_URL
        except openai.OpenAIError as exc:
            err.write(f"airlock: {exc}\n")
            return EXIT_USAGE

    def show(record: CallRecord) -> None:
        out.write(describe(record) + "\n")
        out.flush()

    try:
        result = run(
            client,
            model,
            prompt,
            gateway,
            max_turns=max_turns,
            max_tool_calls=max_tool_calls,
            parallel=parallel,
            session_id=session_id,
            on_call=show,
            stream=stream,
            workspace=workspace,
        )
    except LoopLimitError as exc:
        err.write(f"airlock: {exc.code}: {exc}\n")
        return EXIT_LOOP_LIMIT
    except (GatewayError, UnsupportedItemError, StreamError) as exc:
        err.write(f"airlock: {exc.code}: {exc}\n")
        return EXIT_UNAVAILABLE
    except openai.OpenAIError as exc:
        err.write(f"airlock: model API: {exc}\n")
        return EXIT_UNAVAILABLE
    for seen in result.observed:
        out.write(
            f"[turn {seen.turn}] hosted {seen.item_type} {seen.item_id}: observed (audit event {seen.event_id})\n"
        )
    out.write(f"--- final answer (session {result.session_id}, {result.turns} turns) ---\n{result.text}\n")
    return EXIT_OK
