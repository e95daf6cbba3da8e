"""One model item -> the gateway call(s) it needs -> the output item the
model reads, echoing its ``call_id``. The loop (``_loop.py``) decides when an
item runs; this module decides how, and owns the shapes sent back (checked
against ``openai.types.responses``' input param types).

- ``function_call`` / ``custom_tool_call``: one Invoke; the output is the
  run's JSON summary (or the refusal) as a string.
- ``shell_call`` (local environment): one Invoke per command, in order, each
  with the action's ``timeout_ms`` as a requested limit; one
  ``shell_call_output`` entry per command, outcome ``exit`` or ``timeout``,
  cut to ``max_output_length`` characters. A refused command gets
  ``exit_code: 1`` and the refusal in stderr, as openai-agents-python does.
- ``local_shell_call``: one Invoke with the action's argv.
- ``apply_patch_call``: the workspace design. The agent owns a workspace
  directory (``_workspace.py``); it reads the target file (confined to the
  workspace, never a protected file such as ``.git/config``), sends
  operation + current text to the gateway, a sandboxed tool computes the new
  text from the model's V4A diff, and the agent writes it back (or deletes
  the file) only when the run succeeded completely. ``create_file`` never
  replaces an existing file. The sandbox never sees the workspace and the
  agent never parses the diff. Whatever path the model sends, the outcome is
  an output item (``failed`` with the reason), never an exception.

A hosted item (run by the provider) is not executed here: ``hosted_tool``
names it for ``Observe``."""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from openai.types.responses import (
    ResponseApplyPatchToolCall,
    ResponseComputerToolCall,
    ResponseCustomToolCall,
    ResponseFunctionShellToolCall,
    ResponseFunctionToolCall,
)
from openai.types.responses.response_output_item import LocalShellCall

from airlock.agent._errors import ComputerUseError
from airlock.agent._workspace import MAX_ORIGINAL_BYTES, PathRefusal, Workspace
from airlock.common.client import ToolGateway, ToolResult

if TYPE_CHECKING:
    from openai.types.responses import ResponseInputItemParam, ResponseOutputItem
    from openai.types.responses.response_custom_tool_call_output_param import ResponseCustomToolCallOutputParam
    from openai.types.responses.response_function_shell_call_output_content_param import (
        ResponseFunctionShellCallOutputContentParam,
    )
    from openai.types.responses.response_input_param import (
        ApplyPatchCallOutput,
        ComputerCallOutput,
        FunctionCallOutput,
        LocalShellCallOutput,
        ShellCallOutput,
    )

    from airlock.agent._tools import Declaration

ClientCall = (
    ResponseFunctionToolCall
    | ResponseCustomToolCall
    | ResponseFunctionShellToolCall
    | LocalShellCall
    | ResponseApplyPatchToolCall
    | ResponseComputerToolCall
)
#: Hosted item type -> the hosted tool it belongs to (the audit event's tool).
_HOSTED = {
    "web_search_call": "web_search",
    "file_search_call": "file_search",
    "code_interpreter_call": "code_interpreter",
    "mcp_call": "mcp",
    "image_generation_call": "image_generation",
}
#: Client-executed items we do not run: nothing declares them, so seeing one
#: means something is wrong, and the loop stops rather than leave it unanswered.
UNSUPPORTED_CALL_ITEMS: frozenset[str] = frozenset()
#: What a refused computer call's follow-up screenshot asks for.
_SCREENSHOT_ONLY = json.dumps({"actions": [{"type": "screenshot"}]})


@dataclass(frozen=True)
class CallRecord:
    """One client-executed call the model made and what became of it."""

    turn: int
    call_id: str
    tool: str
    """The tool name the gateway was asked about."""
    arguments: str
    """The raw arguments: a function's JSON string, a custom tool's text,
    the JSON of a shell/local-shell action or of an apply_patch operation."""
    declared: bool
    """Whether the tool was in the ``tools`` array (False: the model made it up)."""
    result: ToolResult
    """The gateway's answer; for a shell_call with several commands, the
    first refusal if any, else the last command's."""
    output: str
    """The output text sent back (for shell_call, the JSON of its entries)."""
    item_type: str = "function_call"
    results: tuple[ToolResult, ...] = ()
    """One per gateway call (one per command for shell_call)."""
    output_item: ResponseInputItemParam | None = None
    """The output item sent back to the model."""
    notes: tuple[ResponseInputItemParam, ...] = ()
    """Items sent after the output item (a refused computer call's refusal,
    which its screenshot output cannot carry)."""


def is_client_call(item: ResponseOutputItem) -> bool:
    """An item we execute (a shell_call only when its environment is local)."""
    if isinstance(item, ResponseFunctionShellToolCall):
        return item.environment is None or item.environment.type == "local"
    return isinstance(
        item,
        (
            ResponseFunctionToolCall,
            ResponseCustomToolCall,
            LocalShellCall,
            ResponseApplyPatchToolCall,
            ResponseComputerToolCall,
        ),
    )


def hosted_tool(item: ResponseOutputItem) -> str | None:
    """The hosted tool an item belongs to, or None when it is not hosted."""
    if isinstance(item, ResponseFunctionShellToolCall):
        return None if is_client_call(item) else "shell"
    return _HOSTED.get(item.type)


def call_cost(item: ClientCall) -> int:
    """Gateway calls an item takes, for ``max_tool_calls``."""
    if isinstance(item, ResponseFunctionShellToolCall):
        return max(1, len(item.action.commands))
    return 1


def call_key(item: ClientCall) -> tuple[str, str, str]:
    """What must agree between a streamed item and the completed response."""
    payload: object
    if isinstance(item, ResponseFunctionToolCall):
        payload = [item.name, item.arguments]
    elif isinstance(item, ResponseCustomToolCall):
        payload = [item.name, item.input]
    elif isinstance(item, ResponseApplyPatchToolCall):
        payload = item.operation.model_dump(mode="json")
    elif isinstance(item, ResponseComputerToolCall):
        payload = computer_arguments(item)
    else:
        payload = item.action.model_dump(mode="json")
    return (item.type, item.call_id, json.dumps(payload, sort_keys=True))


#: Told to the model for a call held for a human's approval (fixed
#: wording: the reason's message is the gateway's, the id is all it needs).
AWAITING_APPROVAL = (
    "This call needs a human's approval before it runs, and nobody has approved it yet. "
    "It has not run. You may retry exactly the same call later (same arguments): once an approver "
    "has approved it, the retry runs once. Do not try to get around this with another command."
)


def approval_pending(result: ToolResult) -> str:
    """The approval id holding a call (Invoke answered approval_pending), or ""."""
    if result.allowed or not result.reasons or result.reasons[0].code != "approval_pending":
        return ""
    return result.decision.approval_id if result.decision is not None else ""


def output_text_for(result: ToolResult) -> str:
    """The ``output`` string the model reads for one call."""
    approval = approval_pending(result)
    if approval:
        return json.dumps(
            {
                "error": "awaiting approval",
                "approval_id": approval,
                "decision_id": result.decision_id,
                "message": AWAITING_APPROVAL,
                "reasons": [{"code": r.code, "message": r.message} for r in result.reasons[1:]],
            }
        )
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
    if result.artifacts:
        # What the run left under /outputs: the model passes an id back in
        # a later call's inputs to read the file at /inputs/<name>.
        doc["artifacts"] = [
            {"id": a.id, "name": a.name, "sha256": a.sha256, "size": a.size, "media_type": a.media_type}
            for a in result.artifacts
        ]
    skipped = result.run.skipped_outputs if result.run is not None else ()
    if skipped:
        doc["skipped_outputs"] = [{"name": s.name, "reason": s.reason} for s in skipped]
    return json.dumps(doc)


def refusal_text(result: ToolResult) -> str:
    """A refusal in one line, for outputs that are not JSON (shell stderr)."""
    reasons = "; ".join(f"{r.code}: {r.message}" for r in result.reasons)
    approval = approval_pending(result)
    if approval:
        return f"awaiting approval {approval}: {AWAITING_APPROVAL} ({reasons}) decision_id={result.decision_id}"
    return f"refused by policy ({reasons}) decision_id={result.decision_id}"


def function_call_output(call_id: str, result: ToolResult) -> FunctionCallOutput:
    return {"type": "function_call_output", "call_id": call_id, "output": output_text_for(result)}


def shell_output_entry(
    result: ToolResult, max_output_length: int | None
) -> ResponseFunctionShellCallOutputContentParam:
    """One command's entry of a ``shell_call_output``."""
    if not result.allowed:
        return {"stdout": "", "stderr": refusal_text(result), "outcome": {"type": "exit", "exit_code": 1}}
    stdout, stderr = result.stdout, result.stderr
    # What the shell itself would not say: the sandbox killed it, or cut it.
    if result.outcome not in ("ok", "nonzero_exit", "timeout"):
        stderr += f"\n[airlock: {result.outcome}{': ' + result.error if result.error else ''}]"
    if result.output_truncated:
        stderr += "\n[airlock: output truncated by the sandbox]"
    if max_output_length is not None:
        # The combined output of the command is capped; stdout keeps priority.
        stdout = stdout[: max(0, max_output_length)]
        stderr = stderr[: max(0, max_output_length - len(stdout))]
    if result.outcome == "timeout":
        return {"stdout": stdout, "stderr": stderr, "outcome": {"type": "timeout"}}
    exit_code = result.exit_code
    if result.outcome not in ("ok", "nonzero_exit") and exit_code <= 0:
        exit_code = 1  # killed, OOM or an executor error never reads as success
    return {"stdout": stdout, "stderr": stderr, "outcome": {"type": "exit", "exit_code": exit_code}}


@dataclass(frozen=True)
class ItemContext:
    gateway: ToolGateway
    session_id: str
    decl: Declaration
    turn: int
    workspace: Workspace | None


def execute_item(ctx: ItemContext, item: ClientCall) -> CallRecord:
    """Runs one client-executed item through the gateway; never raises for a
    refusal (only ``GatewayUnavailable`` when the gateway cannot be asked)."""
    if isinstance(item, ResponseFunctionToolCall):
        return _function(ctx, item)
    if isinstance(item, ResponseCustomToolCall):
        return _custom(ctx, item)
    if isinstance(item, ResponseFunctionShellToolCall):
        return _shell(ctx, item)
    if isinstance(item, LocalShellCall):
        return _local_shell(ctx, item)
    if isinstance(item, ResponseComputerToolCall):
        return _computer(ctx, item)
    return _apply_patch(ctx, item)


def computer_arguments(item: ResponseComputerToolCall) -> dict[str, Any]:
    """What the gateway decides for a computer_call: its action(s) as one
    batch (``computer_use_preview`` sends one ``action``, ``computer`` a list
    of ``actions``) and its pending safety checks."""
    actions = [item.action] if item.action is not None else list(item.actions or [])
    doc: dict[str, Any] = {"actions": [a.model_dump(mode="json", exclude_none=True) for a in actions]}
    if item.pending_safety_checks:
        doc["pending_safety_checks"] = [
            c.model_dump(mode="json", exclude_none=True) for c in item.pending_safety_checks
        ]
    return doc


#: The largest screenshot sent to the model, decoded.
MAX_SCREENSHOT_BYTES = 8 * 1024 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"


def _screenshot_url(result: ToolResult) -> str | None:
    """The run's screenshot as a data URL (act.py prints the PNG base64),
    or None unless it is a whole PNG: a cut or odd output never reaches the
    model as an image."""
    text = result.stdout.strip()
    if not result.allowed or result.outcome != "ok" or not text or result.output_truncated:
        return None
    try:
        png = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not png.startswith(_PNG) or len(png) > MAX_SCREENSHOT_BYTES:
        return None
    return f"data:image/png;base64,{text}"


def _computer(ctx: ItemContext, item: ResponseComputerToolCall) -> CallRecord:
    """One decision for the whole batch; the output is the screenshot taken
    after it. A refused batch runs nothing: the model gets the current
    screen (a screenshot-only call, decided and audited too) and the
    refusal as a note. A call whose pending safety checks the policy did
    not acknowledge stops the loop (ComputerUseError)."""
    tool = _builtin_tool(ctx, "computer_call")
    arguments = json.dumps(computer_arguments(item))
    result = ctx.gateway.invoke(item.call_id, "computer_call", tool, arguments, ctx.session_id)
    if not result.allowed and any(r.code == "safety_checks_not_acknowledged" for r in result.reasons):
        raise ComputerUseError(
            f"computer_call {item.call_id} carries pending safety checks the policy does not acknowledge "
            f"(decision {result.decision_id}); stopping",
            code="safety_checks_not_acknowledged",
        )
    shown = result
    notes: tuple[ResponseInputItemParam, ...] = ()
    if not result.allowed:
        shown = ctx.gateway.invoke(item.call_id, "computer_call", tool, _SCREENSHOT_ONLY, ctx.session_id)
        # Fixed wording and the reason codes only: a reason's message may
        # quote what the model sent, and this goes in as a developer message.
        codes = ", ".join(sorted({r.code for r in result.reasons}))
        note = f"The last computer_call was refused by policy ({codes}; decision {result.decision_id}); nothing ran."
        notes = ({"role": "developer", "content": note},)
    url = _screenshot_url(shown)
    if url is None:
        why = refusal_text(shown) if not shown.allowed else f"{shown.outcome}: {shown.error or shown.stderr[-500:]}"
        raise ComputerUseError(f"computer_call {item.call_id}: no screenshot ({why})", code="no_screenshot")
    out: ComputerCallOutput = {
        "type": "computer_call_output",
        "call_id": item.call_id,
        "output": {"type": "computer_screenshot", "image_url": url},
    }
    acknowledged = result.decision is not None and result.decision.obligations.computer.acknowledge_safety_checks
    if result.allowed and acknowledged and item.pending_safety_checks:
        out["acknowledged_safety_checks"] = [
            {"id": c.id, "code": c.code, "message": c.message} for c in item.pending_safety_checks
        ]
    declared = "computer_call" in ctx.decl.declared_items
    text = output_text_for(result) if not result.allowed else json.dumps({"screenshot_bytes": len(url)})
    return CallRecord(ctx.turn, item.call_id, tool, arguments, declared, result, text, item.type, (result,), out, notes)


def _function(ctx: ItemContext, item: ResponseFunctionToolCall) -> CallRecord:
    # The raw arguments string goes to the gateway untouched: it is what
    # the policy judges and the audit log records.
    result = ctx.gateway.invoke(item.call_id, "function_call", item.name, item.arguments, ctx.session_id)
    out = function_call_output(item.call_id, result)
    declared = item.name in ctx.decl.names
    return CallRecord(
        ctx.turn,
        item.call_id,
        item.name,
        item.arguments,
        declared,
        result,
        str(out["output"]),
        item.type,
        (result,),
        out,
    )


def _custom(ctx: ItemContext, item: ResponseCustomToolCall) -> CallRecord:
    result = ctx.gateway.invoke(item.call_id, "custom_tool_call", item.name, item.input, ctx.session_id)
    text = output_text_for(result)
    out: ResponseCustomToolCallOutputParam = {
        "type": "custom_tool_call_output",
        "call_id": item.call_id,
        "output": text,
    }
    declared = item.name in ctx.decl.names
    return CallRecord(ctx.turn, item.call_id, item.name, item.input, declared, result, text, item.type, (result,), out)


def _builtin_tool(ctx: ItemContext, item_type: str) -> str:
    # Not listed: the item type itself, which no registry entry is called,
    # so the gateway refuses it as not granted (and audits it).
    return ctx.decl.builtin.get(item_type, item_type)


def _timeout_kw(timeout_ms: int | None) -> dict[str, int]:
    # Passed only when the model asked, so a gateway double without the
    # keyword still works for everything else.
    return {"requested_timeout_ms": timeout_ms} if timeout_ms and timeout_ms > 0 else {}


def _summary(results: list[ToolResult]) -> ToolResult:
    return next((r for r in results if not r.allowed), results[-1])


def _shell(ctx: ItemContext, item: ResponseFunctionShellToolCall) -> CallRecord:
    tool = _builtin_tool(ctx, "shell_call")
    action = item.action
    results: list[ToolResult] = []
    entries: list[ResponseFunctionShellCallOutputContentParam] = []
    # In order, one at a time: a later command may rely on an earlier one
    # having finished (each still runs in a fresh sandbox).
    for command in action.commands:
        result = ctx.gateway.invoke(
            item.call_id,
            "shell_call",
            tool,
            json.dumps({"command": command}),
            ctx.session_id,
            **_timeout_kw(action.timeout_ms),
        )
        results.append(result)
        entries.append(shell_output_entry(result, action.max_output_length))
    if not results:
        results.append(ToolResult(True, "", (), outcome="ok"))  # nothing asked, nothing run
    out: ShellCallOutput = {"type": "shell_call_output", "call_id": item.call_id, "output": entries}
    if action.max_output_length is not None:
        out["max_output_length"] = action.max_output_length
    return CallRecord(
        ctx.turn,
        item.call_id,
        tool,
        action.model_dump_json(),
        "shell_call" in ctx.decl.declared_items,
        _summary(results),
        json.dumps(entries),
        item.type,
        tuple(results),
        out,
    )


def _local_shell(ctx: ItemContext, item: LocalShellCall) -> CallRecord:
    tool = _builtin_tool(ctx, "local_shell_call")
    arguments = item.action.model_dump_json(exclude_none=True)
    result = ctx.gateway.invoke(
        item.call_id, "local_shell_call", tool, arguments, ctx.session_id, **_timeout_kw(item.action.timeout_ms)
    )
    text = output_text_for(result)
    # The API matches this output on `call_id`; the SDK's LocalShellCallOutput
    # type (openai 3.57) has no such key and requires `id`, documented as the
    # model's call id. Both are sent, with the call id, so the item satisfies
    # the runtime and the SDK type alike (openai-python #3923 adds call_id).
    raw: dict[str, Any] = {
        "type": "local_shell_call_output",
        "id": item.call_id,
        "call_id": item.call_id,
        "output": text,
    }
    out = cast("LocalShellCallOutput", raw)
    declared = "local_shell_call" in ctx.decl.declared_items
    return CallRecord(ctx.turn, item.call_id, tool, arguments, declared, result, text, item.type, (result,), out)


def _read_original(kind: str, place: Path | PathRefusal | None) -> tuple[str, Path | PathRefusal | None]:
    """The target's current text to send with the operation, and the place
    to write afterwards (a refusal when the file cannot be read as text)."""
    if not isinstance(place, Path) or kind == "create_file":
        return "", place  # a new file has no text; an existing one is refused after the decision
    try:
        if not place.is_file():
            return "", place
        if place.stat().st_size > MAX_ORIGINAL_BYTES:
            return "", PathRefusal("path_unreadable", f"the file is larger than {MAX_ORIGINAL_BYTES} bytes")
        return place.read_text(encoding="utf-8"), place
    except (OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError, the file is not UTF-8 text
        return "", PathRefusal("path_unreadable", f"the file cannot be read as UTF-8 text ({type(exc).__name__})")


def _apply_patch(ctx: ItemContext, item: ResponseApplyPatchToolCall) -> CallRecord:
    tool = _builtin_tool(ctx, "apply_patch_call")
    op = item.operation
    # Confined before anything is read; still decided and audited when
    # refused here, so the attempt is on record whatever the agent does.
    place = ctx.workspace.confine(op.path) if ctx.workspace is not None else None
    original, place = _read_original(op.type, place)
    diff = "" if op.type == "delete_file" else op.diff
    arguments = json.dumps({"type": op.type, "path": op.path, "diff": diff, "original": original})
    result = ctx.gateway.invoke(item.call_id, "apply_patch_call", tool, arguments, ctx.session_id)
    ok, message = _commit_patch(result, op.type, op.path, place)
    out: ApplyPatchCallOutput = {
        "type": "apply_patch_call_output",
        "call_id": item.call_id,
        "status": "completed" if ok else "failed",
        "output": message,
    }
    declared = "apply_patch_call" in ctx.decl.declared_items
    recorded = json.dumps({"type": op.type, "path": op.path, "diff": diff})
    return CallRecord(ctx.turn, item.call_id, tool, recorded, declared, result, message, item.type, (result,), out)


def _commit_patch(  # noqa: PLR0911 - one return per way the patch can fail
    result: ToolResult, kind: str, path: str, place: Path | PathRefusal | None
) -> tuple[bool, str]:
    """Writes the sandbox's result into the workspace; (ok, message)."""
    # The message goes back to the API, whose request body is UTF-8: a lone
    # surrogate in the model's path would make the next request fail.
    path = path.encode("utf-8", "backslashreplace").decode("utf-8")
    if not result.allowed:
        return False, output_text_for(result)
    if result.outcome != "ok" or result.exit_code != 0:
        return False, (result.stderr or result.error or result.outcome).strip()
    if result.output_truncated:
        return False, f"{path}: the new text was cut by the sandbox's output cap; nothing written"
    if place is None:
        return False, "this agent has no workspace; nothing written"
    if isinstance(place, PathRefusal):
        return False, f"{path}: refused by the agent's workspace ({place.code}): {place.message}; nothing written"
    try:
        if kind == "delete_file":
            place.unlink()
        elif kind == "create_file":
            return _create(place, path, result.stdout)
        elif not place.is_file():
            return False, f"{path}: no such file to update"
        else:
            place.write_text(result.stdout, encoding="utf-8")
    except (OSError, ValueError) as exc:
        return False, f"{path}: {getattr(exc, 'strerror', None) or type(exc).__name__}; nothing written"
    return True, f"{kind} {path}: done"


def _create(place: Path, path: str, text: str) -> tuple[bool, str]:
    """create_file: a new file only. O_EXCL refuses whatever is already there,
    a dangling symlink included, without a window between check and write."""
    place.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(place, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        return False, f"{path}: already exists; create_file never replaces a file (use update_file); nothing written"
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True, f"create_file {path}: done"
