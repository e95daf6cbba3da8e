"""Every gateway metric, built against an injected CollectorRegistry.

Label values come from closed sets only: registered tool names (anything else
is "unregistered"), allow/deny, the reason codes in _errors, run outcomes,
and the profiles named in gateway.yaml ("none" before authentication). No
label ever carries an argument, a principal id or a decision id.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from airlock.gateway._errors import ALL_REASON_LABELS, FAIL_CLOSED_REASONS
from airlock.gateway._registry import BUILTIN_TOOLS

# The *_created series double every counter and histogram for no dashboard
# use; Prometheus tracks resets itself.
disable_created_metrics()  # type: ignore[no-untyped-call]

UNREGISTERED = "unregistered"
#: The Responses API's computer action types (a closed label set).
COMPUTER_ACTIONS = frozenset(
    {"click", "double_click", "scroll", "type", "keypress", "wait", "screenshot", "move", "drag"}
)
NO_PROFILE = "none"
VERSION = "0.1.0"
OUTCOMES = ("ok", "nonzero_exit", "timeout", "oom_killed", "killed", "error")
#: Artifact operations (metric label "operation"), outcomes, and the reason
#: codes an artifact refusal can have; any other (a custom policy code) is
#: "policy_other".
ARTIFACT_OPERATIONS = ("put", "get", "stat", "list", "delete", "input", "output", "sweep")
ARTIFACT_OUTCOMES = ("allow", "deny")
ARTIFACT_REASONS = (
    "allowed",
    "unauthenticated",
    "rate_limited",
    "too_many_in_flight",
    "artifact_name_invalid",
    "artifact_not_found",
    "artifact_too_large",
    "artifact_truncated",
    "artifact_checksum_mismatch",
    "artifact_quota_exceeded",
    "artifact_store_unavailable",
    "artifact_store_busy",
    "artifact_header_missing",
    "artifact_header_invalid",
    "artifact_operation_unknown",
    "artifact_operation_not_granted",
    "artifact_session_denied",
    "artifact_size_denied",
    "unknown_profile",
    "retention",
    *FAIL_CLOSED_REASONS,
)
#: Approval events (_approvals.py), a closed label set.
APPROVAL_EVENTS = ("requested", "granted", "denied", "expired", "used")
#: The budget store's operations and failure causes (_budget_redis.py).
BUDGET_STORE_OPERATIONS = ("reserve", "snapshot", "release")
BUDGET_STORE_CAUSES = ("unreachable", "timeout", "auth", "reply")
#: From 100 µs (a local OPA decision) to 10 minutes (a long run).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, tools: Collection[str], profiles: Collection[str] = ()) -> None:
        self._tools = frozenset(tools) | BUILTIN_TOOLS
        self._profiles = frozenset(profiles)
        self.decisions = Counter(
            "airlock_gateway_decisions",
            "Decisions by tool, verdict, first reason code and principal profile.",
            ["tool", "decision", "reason", "profile"],
            registry=registry,
        )
        self.fail_closed = Counter(
            "airlock_gateway_fail_closed",
            "Denies because no usable decision or audit record could be had, by cause.",
            ["cause"],
            registry=registry,
        )
        self.opa_eval_seconds = Histogram(
            "airlock_gateway_opa_eval_duration_seconds",
            "Policy evaluation time as OPA reports it (timer_rego_query_eval_ns).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.execution_seconds = Histogram(
            "airlock_gateway_execution_duration_seconds",
            "Run time of executed calls as the executor reports it (start to exit).",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.truncations = Counter(
            "airlock_gateway_output_truncations",
            "Executed calls whose output was cut to the cap.",
            ["tool"],
            registry=registry,
        )
        self.audit_write_seconds = Histogram(
            "airlock_gateway_audit_write_duration_seconds",
            "Time to make one audit event durable (write and fsync).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.build = Info("airlock_gateway_build", "Gateway version and the active policy revision.", registry=registry)
        self._revision = ""
        self.build.info({"version": VERSION, "policy_revision": ""})
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
        self.tool_definitions = Counter(
            "airlock_gateway_tool_definitions",
            "define_tool decisions (dynamic tools admitted or refused), by verdict and reason code.",
            ["verdict", "reason"],
            registry=registry,
        )
        self.dynamic_tool_calls = Counter(
            "airlock_gateway_dynamic_tool_calls",
            "Allowed calls to dynamic tools, by the scope of the definition (session, principal, profile); "
            "per-definition counts are in `airlock tools show ID`.",
            ["scope"],
            registry=registry,
        )
        for scope in ("session", "principal", "profile"):
            self.dynamic_tool_calls.labels(scope)
        self.computer_actions = Counter(
            "airlock_gateway_computer_actions",
            "Actions of computer_call calls by type and verdict (a batch is decided as a whole: every action of a "
            "denied batch counts as denied).",
            ["action", "verdict"],
            registry=registry,
        )
        self.computer_screenshot_seconds = Histogram(
            "airlock_gateway_computer_screenshot_seconds",
            "Executor time of a computer call: its actions, then the screenshot.",
            buckets=LATENCY_BUCKETS,
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
        self.audit_last_seq = Gauge(
            "airlock_gateway_audit_last_seq",
            "Sequence number of the newest audit event on disk; a drop means the log lost its tail.",
            registry=registry,
        )
        self.audit_last_signed_seq = Gauge(
            "airlock_gateway_audit_last_signed_seq",
            "Sequence number of the newest signed audit checkpoint (the head record's seq). Prometheus keeps "
            "its history out of the gateway's reach: a log whose signed checkpoints end below it lost events.",
            registry=registry,
        )
        self.sessions_live = Gauge(
            "airlock_gateway_sessions_live",
            "Session sandboxes the gateway knows to be live (from the executor's stream and run results).",
            registry=registry,
        )
        self.session_stream_up = Gauge(
            "airlock_gateway_session_stream_up",
            "1 while the executor's session event stream is connected (session starts and ends reach the audit log).",
            registry=registry,
        )
        self._approval_metrics(registry)
        # Touch every label combination so dashboards see zeros, not gaps.
        for tool in (*sorted(self._tools), UNREGISTERED):
            for outcome in OUTCOMES:
                self.executions.labels(tool, outcome)
            self.truncations.labels(tool)
        for cause in FAIL_CLOSED_REASONS:
            self.fail_closed.labels(cause)
        self.budget_store_errors = Counter(
            "airlock_gateway_budget_store_errors",
            "Failed operations on the shared budget store (budget.store: redis), by operation "
            "(reserve, snapshot, release) and cause (unreachable, timeout, auth, reply). A failed reserve or "
            "snapshot is a budget_unavailable deny; a failed release leaves the call counted.",
            ["operation", "cause"],
            registry=registry,
        )
        for operation in BUDGET_STORE_OPERATIONS:
            for cause in BUDGET_STORE_CAUSES:
                self.budget_store_errors.labels(operation, cause)
        self.audit_healthy = Gauge(
            "airlock_gateway_audit_healthy",
            "1 while audit writes succeed; 0 from a failed write until the next success (calls fail closed meanwhile).",
            registry=registry,
        )
        self.audit_healthy.set(1)
        self.policy_engine_up = Gauge(
            "airlock_gateway_policy_engine_up",
            "1 while the gateway's periodic probe of OPA succeeds (with its token); 0 before the first success "
            "and after a failed probe. The container healthcheck needs it (calls fail closed meanwhile).",
            registry=registry,
        )

        self.artifact_operations = Counter(
            "airlock_gateway_artifact_operations",
            "Artifact operations (ArtifactService, call inputs and outputs, the sweeper) by operation, outcome "
            "and reason code.",
            ["operation", "outcome", "reason"],
            registry=registry,
        )
        self.artifact_bytes = Counter(
            "airlock_gateway_artifact_transfer_bytes",
            "Artifact content bytes stored (in) and read (out).",
            ["direction"],
            registry=registry,
        )
        self.artifacts_stored_bytes = Gauge(
            "airlock_gateway_artifacts_stored_bytes",
            "Bytes of artifacts the store holds (every principal), as of the last retention sweep.",
            registry=registry,
        )
        self.artifacts_stored = Gauge(
            "airlock_gateway_artifacts_stored",
            "Artifacts the store holds (every principal), as of the last retention sweep.",
            registry=registry,
        )
        self.artifacts_swept = Counter(
            "airlock_gateway_artifacts_swept",
            "Artifacts removed by the retention sweeper.",
            registry=registry,
        )
        for op in ARTIFACT_OPERATIONS:
            self.artifact_operations.labels(op, "allow", "allowed")
        for direction in ("in", "out"):
            self.artifact_bytes.labels(direction)

    def count_computer_actions(self, actions: object, verdict: str) -> None:
        if not isinstance(actions, list):
            return
        for action in actions[:64]:
            kind = action.get("type") if isinstance(action, dict) else None
            self.computer_actions.labels(kind if kind in COMPUTER_ACTIONS else "other", verdict).inc()

    def _approval_metrics(self, registry: CollectorRegistry) -> None:
        """Approvals (_approvals.py): pending, events, time to decision."""
        self.approvals_pending = Gauge(
            "airlock_gateway_approvals_pending",
            "Calls awaiting an approver's decision on this gateway (pending approvals are per replica).",
            registry=registry,
        )
        self.approvals = Counter(
            "airlock_gateway_approvals",
            "Approval events by kind: requested, granted, denied, expired, used.",
            ["event"],
            registry=registry,
        )
        self.approval_decision_seconds = Histogram(
            "airlock_gateway_approval_decision_duration_seconds",
            "Time from an approval's request to an approver's decision, by outcome (granted, denied).",
            ["outcome"],
            buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0),
            registry=registry,
        )
        for event in APPROVAL_EVENTS:
            self.approvals.labels(event)
        for outcome in ("granted", "denied"):
            self.approval_decision_seconds.labels(outcome)

    def artifact_reason_label(self, code: str) -> str:
        return code if code in ARTIFACT_REASONS else "policy_other"

    def set_tools(self, tools: Collection[str]) -> None:
        # The gateway's built-in tools (define_tool) are labelled by name too.
        self._tools = frozenset(tools) | BUILTIN_TOOLS

    def tool_label(self, tool: str) -> str:
        return tool if tool in self._tools else UNREGISTERED

    def reason_label(self, code: str) -> str:
        return code if code in ALL_REASON_LABELS else "policy_other"

    def profile_label(self, profile: str | None) -> str:
        if profile is None:
            return NO_PROFILE
        return profile if profile in self._profiles else "other"

    def policy_revision(self, revision: str) -> None:
        """Keeps build_info's policy_revision current (it changes on reload)."""
        if revision and revision != self._revision:
            self._revision = revision
            self.build.info({"version": VERSION, "policy_revision": revision})


#: The scan summary's severities (a closed label set).
IMAGE_SEVERITIES = ("critical", "high", "medium", "low")


class ImageMetrics(Collector):
    """The tool images' pins and scans (airlock/gateway/_images.py), read at
    scrape time: findings by severity and scan age per registered tool (a
    closed label set, like every tool label here), and whether the image is
    pinned and scanned at all. ``source`` gives each registered tool's
    ``input.image`` facts (None: not pinned)."""

    def __init__(
        self, registry: CollectorRegistry, source: Callable[[], Iterable[tuple[str, Mapping[str, Any] | None]]]
    ) -> None:
        self._source = source
        registry.register(self)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        vulns = GaugeMetricFamily(
            "airlock_gateway_tool_image_vulnerabilities",
            "Findings of the last scan of the tool's pinned image, by severity",
            labels=["tool", "severity"],
        )
        age = GaugeMetricFamily(
            "airlock_gateway_tool_image_scan_age_seconds",
            "Seconds since the last scan of the tool's pinned image (absent: never scanned)",
            labels=["tool"],
        )
        scanned = GaugeMetricFamily(
            "airlock_gateway_tool_image_scanned",
            "1 when the tool's image is pinned and scanned, 0 when it is not (never scanned or not pinned)",
            labels=["tool"],
        )
        now = datetime.now(UTC)
        for tool, facts in self._source():
            scan = facts.get("scan") if facts else None
            when = _parse_time(scan.get("scanned_at")) if isinstance(scan, Mapping) else None
            scanned.add_metric([tool], 1.0 if when is not None else 0.0)
            if when is None or not isinstance(scan, Mapping):
                continue
            age.add_metric([tool], max((now - when).total_seconds(), 0.0))
            for sev in IMAGE_SEVERITIES:
                vulns.add_metric([tool, sev], float(scan.get(sev, 0)))
        yield from (vulns, age, scanned)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Nothing is read at registration: the pins file may not exist yet.
        return iter(())


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
