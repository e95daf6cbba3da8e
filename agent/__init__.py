"""The agent side of Airlock: an LLM loop on the OpenAI Responses API whose
client-executed tool calls all go through the Airlock gateway.

It depends on ``grpc``, ``openai``, the generated ``airlock.v1`` stubs and
``airlock._tls`` only, never on the gateway's or executor's server code, so an
agent host installs just the client side. Function, custom tool, shell
(local environment), local-shell and apply_patch calls go through the
gateway; hosted items are recorded there (``Observe``); non-streaming or
streamed (``run(..., stream=True)``)."""

from __future__ import annotations

from agent._errors import AgentError, GatewayError, LoopLimitError, StreamError, UnsupportedItemError
from agent._gateway import Gateway, Reason, ToolGateway, ToolResult, denied_from_error
from agent._items import (
    CallRecord,
    ItemContext,
    execute_item,
    function_call_output,
    output_text_for,
    refusal_text,
    shell_output_entry,
)
from agent._loop import (
    DEFAULT_MAX_TOOL_CALLS,
    DEFAULT_MAX_TURNS,
    DEFAULT_PARALLEL,
    AgentResult,
    ObservedItem,
    execute_calls,
    run,
)
from agent._terminal import escape_controls
from agent._tools import Declaration, custom_tool, declare, function_tool, schema_allows_strict, tools_for_responses
from agent._workspace import DEFAULT_PROTECTED, PathRefusal, Workspace, confine, protected_reasons

__all__ = [
    "DEFAULT_MAX_TOOL_CALLS",
    "DEFAULT_MAX_TURNS",
    "DEFAULT_PARALLEL",
    "DEFAULT_PROTECTED",
    "AgentError",
    "AgentResult",
    "CallRecord",
    "Declaration",
    "Gateway",
    "GatewayError",
    "ItemContext",
    "LoopLimitError",
    "ObservedItem",
    "PathRefusal",
    "Reason",
    "StreamError",
    "ToolGateway",
    "ToolResult",
    "UnsupportedItemError",
    "Workspace",
    "confine",
    "custom_tool",
    "declare",
    "denied_from_error",
    "escape_controls",
    "execute_calls",
    "execute_item",
    "function_call_output",
    "function_tool",
    "output_text_for",
    "protected_reasons",
    "refusal_text",
    "run",
    "schema_allows_strict",
    "shell_output_entry",
    "tools_for_responses",
]
