"""The agent package's exceptions: one root, each with a stable ``code``."""

from __future__ import annotations


class AgentError(Exception):
    """Root of the agent's errors. ``code`` is a stable snake_case string."""

    code = "agent_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LoopLimitError(AgentError):
    """The model kept asking for tools past ``max_turns`` or ``max_tool_calls``."""

    code = "loop_limit"


class UnsupportedItemError(AgentError):
    """The model emitted a client-executed item this slice does not handle yet."""

    code = "unsupported_item"


class StreamError(AgentError):
    """A streamed response did not finish well: the stream ended without
    ``response.completed``, or reported ``response.failed``,
    ``response.incomplete`` or an ``error`` event, or its events disagree
    (e.g. the completed response's calls differ from the items streamed)."""

    code = "stream_error"


class ComputerUseError(AgentError):
    """A computer_call cannot go on: its pending safety checks were not
    acknowledged by the policy, or no screenshot could be taken."""

    code = "computer_use"
