"""The gateway's one root exception and its stable reason codes.

A code is the only value of the ``reason`` metric label and the audit
``reason`` field, so the set here is closed on purpose."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway turns into a deny."""

    code = "gateway_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class PolicyError(GatewayError):
    """The policy engine did not produce a usable decision (always a deny)."""


class AuditError(GatewayError):
    """An audit event could not be made durable; the call must fail closed."""

    code = "audit_failed"


class ExecutorError(GatewayError):
    """The executor could not be reached or refused the run."""

    code = "executor_unavailable"


class BudgetError(GatewayError):
    """The budget store could not count a call (a shared store down, slow,
    refusing our credentials or answering nonsense): the call is denied.
    ``cause`` is one of the store's closed set of failure causes."""

    code = "budget_unavailable"

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class AdmissionError(GatewayError):
    """A principal over its rate or in-flight cap, on an operation that is
    not a tool call (ListSessions, EndSession)."""


class ForbiddenError(GatewayError):
    """The principal may not do this (another principal's sessions)."""

    code = "forbidden"


# Reason codes the gateway itself produces. Policy codes are added from
# POLICY_REASON_CODES; anything else is counted as "policy_other".
INPUT_REASONS = (
    "unauthenticated",
    "call_id_missing",
    "item_type_missing",
    "tool_missing",
    "arguments_too_large",
    "arguments_malformed",
    "item_type_hosted",
    "field_too_long",
    "too_many_in_flight",
    "rate_limited",
    "item_type_not_hosted",
    "item_malformed",
    # define_tool and calls to dynamic tools (airlock/gateway/tooldefs)
    "definition_invalid",
    "definition_name_invalid",
    "definition_name_taken",
    "definition_retired",
    "schema_invalid",
    "source_too_large",
    "base_unknown",
    "tool_retired",
    "tool_definitions_unavailable",
    "artifact_store_unavailable",
    "tool_catalog_unavailable",
    "definition_corrupt",
    # Held for an approver: see docs/approvals.md.
    "approval_pending",
    "approval_granted",
    "approvals_full",
)
FAIL_CLOSED_REASONS = (
    "policy_unreachable",
    "policy_timeout",
    "policy_http_error",
    "policy_undefined",
    "policy_malformed",
    "audit_failed",
    "internal_error",
    "gateway_overloaded",
    "budget_unavailable",
)
#: Codes the shipped policy emits. A custom code still reaches the caller and
#: the audit log verbatim; only its metric label folds to "policy_other".
POLICY_REASON_CODES = (
    "allowed",
    "tool_not_granted",
    "unknown_profile",
    "item_type_mismatch",
    "arguments_invalid",
    "network_not_permitted",
    "argument_denied",
    "program_not_allowed",
    "path_outside_workdir",
    "path_protected",
    "path_too_long",
    "egress_destination_denied",
    "budget_exceeded",
    "session_call_limit",
    "inputs_too_many",
    # airlock.approvals: an ask
    "approval_required",
    # the image gate, airlock.images (docs/images.md)
    "image_vulnerable",
    "image_scan_stale",
    "image_scan_invalid",
    "image_pin_mismatch",
    # data.airlock.tool_definitions
    "admitted",
    "tool_definitions_not_granted",
    "tool_definitions_not_enabled",
    "base_not_granted",
    "base_not_dynamic",
    "base_not_allowed",
    "too_many_definitions",
    "source_imports_network",
    "source_dynamic_import",
    "definition_malformed",
)
ALL_REASON_LABELS = (*INPUT_REASONS, *FAIL_CLOSED_REASONS, *POLICY_REASON_CODES, "policy_other")
