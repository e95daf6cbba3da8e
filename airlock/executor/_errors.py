"""The executor's one root exception. Every refusal or failure the executor
reports carries a stable ``code``, the only value of the ``reason`` metric
label and of the audit record's reason: a run refused before anything
started, egress that cannot be set up, a destination host in a form we do
not accept, a proxy refusal sent back to a sandbox."""

from __future__ import annotations


class ExecutorError(Exception):
    """Root of the executor's errors; ``code`` is a stable snake_case string."""

    code = "executor_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class RunRefused(ExecutorError):  # noqa: N818 - a refusal, not a malfunction
    """The spec cannot be run safely; nothing was started."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class EgressSetupError(ExecutorError):
    """Egress cannot be offered safely; runs that ask for it are refused."""

    code = "egress_unavailable"


class HostError(ExecutorError, ValueError):
    """The host is not a form we accept; ``code`` is the proxy's reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class Denied(ExecutorError):  # noqa: N818 - a refusal, reported to the sandbox
    """A proxy refusal sent back to the sandbox with an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message, code=code)
        self.status = status
