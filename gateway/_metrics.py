"""Every gateway metric, built against an injected CollectorRegistry.

Label values come from closed sets only: registered tool names (anything else
is "unregistered"), allow/deny, the reason codes in _errors, and run outcomes.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway._errors import ALL_REASON_LABELS

UNREGISTERED = "unregistered"
OUTCOMES = ("ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error")
#: From 100 µs (a local OPA decision) to 10 minutes (a long run).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, tools: Collection[str]) -> None:
        self._tools = frozenset(tools)
        self.decisions = Counter(
            "airlock_gateway_decisions",
            "Decisions by tool, verdict and first reason code.",
            ["tool", "decision", "reason"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "airlock_gateway_decision_duration_seconds",
            "Time to reach a decision, including the OPA round trip.",
            ["rpc"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.executions = Counter(
            "airlock_gateway_executions",
            "Executions requested from the executor, by tool and outcome.",
            ["tool", "outcome"],
            registry=registry,
        )
        self.invoke_seconds = Histogram(
            "airlock_gateway_invoke_duration_seconds",
            "End-to-end Invoke time (decision plus execution).",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.audit_events = Counter(
            "airlock_gateway_audit_events", "Audit events written.", ["kind"], registry=registry
        )
        self.audit_failures = Counter(
            "airlock_gateway_audit_write_failures",
            "Audit writes that failed (the call failed closed).",
            registry=registry,
        )
        self.in_flight = Gauge("airlock_gateway_in_flight_calls", "Calls being handled.", registry=registry)
        # Touch every label combination so dashboards see zeros, not gaps.
        for tool in (*sorted(self._tools), UNREGISTERED):
            for outcome in OUTCOMES:
                self.executions.labels(tool, outcome)

    def tool_label(self, tool: str) -> str:
        return tool if tool in self._tools else UNREGISTERED

    def reason_label(self, code: str) -> str:
        return code if code in ALL_REASON_LABELS else "policy_other"
