"""``airlock agent run``: the loop against a running stack, printing each
call, its decision and the final answer. The CLI parser lives in
``airlock.cli``; this is what its ``agent run`` branch calls. Everything the
model or the API wrote goes through ``escape_controls`` before it reaches
the terminal (``_terminal.py``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from airlock.agent._errors import ComputerUseError, LoopLimitError, StreamError, UnsupportedItemError
from airlock.agent._items import CallRecord, approval_pending
from airlock.agent._loop import run
from airlock.agent._terminal import escape_controls
from airlock.agent._tools import ComputerShape
from airlock.common.client import GatewayClient, GatewayUnavailable

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    import openai

EXIT_OK = 0
EXIT_LOOP_LIMIT = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 4


def describe(record: CallRecord) -> str:
    """The call and its decision(s), a few lines, every line escaped: the
    tool name, arguments, call id and reason messages are the model's text."""
    head = f"[turn {record.turn}] {record.tool}({record.arguments}) call_id={record.call_id}"
    if record.item_type != "function_call":
        head += f" [{record.item_type}]"
    if not record.declared:
        head += " (tool was not declared)"
    # One line per gateway call: a shell_call has one per command.
    lines = [head]
    for r in record.results or (record.result,):
        codes = ",".join(x.code for x in r.reasons)
        approval = approval_pending(r)
        if approval:
            # Held for a human: not a deny; the model may retry it later.
            lines.append(f"  ASK {codes} approval={approval} decision={r.decision_id}")
            lines.extend(f"    {x.code}: {x.message}" for x in r.reasons)
        elif not r.allowed:
            lines.append(f"  DENY {codes} decision={r.decision_id}")
            lines.extend(f"    {x.code}: {x.message}" for x in r.reasons)
        else:
            lines.append(f"  ALLOW decision={r.decision_id} -> {r.outcome} exit_code={r.exit_code}")
    # An allowed patch the agent still did not apply (its own checks, a failed run).
    item = record.output_item
    if record.result.allowed and item is not None and item.get("status") == "failed":
        lines.append(f"  NOT APPLIED: {record.output}")
    return "\n".join(escape_controls(line) for line in lines)


def run_cli(
    gateway: GatewayClient,
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
    computer: ComputerShape = "computer",
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
            err.write(f"airlock: {escape_controls(str(exc))}\n")
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
            computer=computer,
        )
    # Error messages quote the API and the model (stream error events, item types).
    except (LoopLimitError, ComputerUseError) as exc:
        # The run stopped before an answer: a limit, or a computer_call
        # that cannot go on (pending safety checks the policy did not
        # acknowledge).
        err.write(f"airlock: {exc.code}: {escape_controls(str(exc))}\n")
        return EXIT_LOOP_LIMIT
    except (GatewayUnavailable, UnsupportedItemError, StreamError) as exc:
        err.write(f"airlock: {exc.code}: {escape_controls(str(exc))}\n")
        return EXIT_UNAVAILABLE
    except openai.OpenAIError as exc:
        err.write(f"airlock: model API: {escape_controls(str(exc))}\n")
        return EXIT_UNAVAILABLE
    for seen in result.observed:
        line = f"[turn {seen.turn}] hosted {seen.item_type} {seen.item_id}: observed (audit event {seen.event_id})"
        out.write(escape_controls(line) + "\n")
    head = f"--- final answer (session {result.session_id}, {result.turns} turns) ---"
    out.write(f"{escape_controls(head)}\n{escape_controls(result.text, keep_newlines=True)}\n")
    return EXIT_OK


def run_args(gateway: GatewayClient, args: argparse.Namespace) -> int:
    """run_cli with the options both command lines share (``airlock agent
    run`` and ``python -m airlock.agent run``)."""
    return run_cli(
        gateway,
        args.prompt,
        model=args.model,
        max_turns=args.max_turns,
        max_tool_calls=args.max_tool_calls,
        parallel=args.parallel,
        session_id=args.session,
        stream=args.stream,
        workspace=getattr(args, "workspace", None),
        computer=args.computer,
    )
