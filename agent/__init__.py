"""The agent side of Airlock: an LLM loop on the OpenAI Responses API whose
client-executed tool calls all go through the Airlock gateway.

It depends on ``grpc``, ``openai``, the generated ``airlock.v1`` stubs and
``airlock._tls`` only, never on the gateway's or executor's server code, so an
agent host installs just the client side. Slice 1: function calls,
non-streaming or streamed (``run(..., stream=True)``)."""

from __future__ import annotations

from agent._errors import AgentError, GatewayError, LoopLimitError, StreamError, UnsupportedItemError
from agent._gateway import Gateway, Reason, ToolGateway, ToolResult, denied_from_error
from agent._loop import (
    DEFAULT_MAX_TOOL_CALLS,
    DEFAULT_MAX_TURNS,
    DEFAULT_PARALLEL,
    AgentResult,
    CallRecord,
    execute_calls,
    function_call_output,
    output_text_for,
    run,
)
from agent._tools import function_tool, schema_allows_strict, tools_for_responses

__all__ = [
    "DEFAULT_MAX_TOOL_CALLS",
    "DEFAULT_MAX_TURNS",
    "DEFAULT_PARALLEL",
    "AgentError",
    "AgentResult",
    "CallRecord",
    "Gateway",
    "GatewayError",
    "LoopLimitError",
    "Reason",
    "StreamError",
    "ToolGateway",
    "ToolResult",
    "UnsupportedItemError",
    "denied_from_error",
    "execute_calls",
    "function_call_output",
    "function_tool",
    "output_text_for",
    "run",
    "schema_allows_strict",
    "tools_for_responses",
]
