"""The agent side of Airlock: an LLM loop on the OpenAI Responses API whose
client-executed tool calls all go through the Airlock gateway.

It depends on ``grpc``, ``openai``, the generated ``airlock.v1`` stubs and
``airlock.common`` (its client, TLS settings and wire adapters) only, never on
the gateway's or executor's server code (an import contract checks it), so an
agent host installs just the client side. Function, custom tool, shell
(local environment), local-shell and apply_patch calls go through the
gateway; hosted items are recorded there (``Observe``); non-streaming or
streamed (``run(..., stream=True)``)."""

from __future__ import annotations

from airlock.agent._errors import AgentError, ComputerUseError, LoopLimitError, StreamError, UnsupportedItemError
from airlock.agent._items import (
    CallRecord,
    ItemContext,
    execute_item,
    function_call_output,
    output_text_for,
    refusal_text,
    shell_output_entry,
)
from airlock.agent._loop import (
    DEFAULT_MAX_TOOL_CALLS,
    DEFAULT_MAX_TURNS,
    DEFAULT_PARALLEL,
    AgentResult,
    ObservedItem,
    execute_calls,
    run,
)
from airlock.agent._terminal import escape_controls
from airlock.agent._tools import (
    Declaration,
    custom_tool,
    declare,
    function_tool,
    schema_allows_strict,
    tools_for_responses,
)
from airlock.agent._workspace import (
    DEFAULT_ALLOWED_DOT_DIRECTORIES,
    DEFAULT_PROTECTED,
    PathRefusal,
    Workspace,
    confine,
    protected_reasons,
)
from airlock.common.client import (
    GatewayClient,
    GatewayUnavailable,
    Reason,
    ToolGateway,
    ToolResult,
    denied_from_error,
)

__all__ = [
    "DEFAULT_ALLOWED_DOT_DIRECTORIES",
    "DEFAULT_MAX_TOOL_CALLS",
    "DEFAULT_MAX_TURNS",
    "DEFAULT_PARALLEL",
    "DEFAULT_PROTECTED",
    "AgentError",
    "AgentResult",
    "CallRecord",
    "ComputerUseError",
    "Declaration",
    "GatewayClient",
    "GatewayUnavailable",
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
