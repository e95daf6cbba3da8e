"""Every executor metric, against an injected CollectorRegistry. Labels
come from closed sets: outcomes, runtimes, refusal codes, RPC methods."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from airlock.common import wire
from airlock.executor._model import OUTCOMES, SKIP_REASONS
from airlock.executor.sandboxes.containers import REPLACE_CAUSES, ReplaceCause
from airlock.executor.sandboxes.events import END_CAUSES, EndCause

#: How an allowed egress connection can end early (executor.egress.proxy.CUTS).
EGRESS_CUTS = ("bytes_out_limit", "bytes_in_limit", "call_ended")
#: Egress refusals no call owns (tool "none"): before a head was read or
#: without a live credential.
EGRESS_UNATTRIBUTED = ("bad_request", "unauthenticated", "overloaded")
#: How a request on an inspected connection ended (egress/inspect.py).
EGRESS_REQUEST_OUTCOMES = (
    "relayed",
    "request_not_allowed",
    "body_too_large",
    "host_mismatch",
    "secret_wrong_host",
    "secret_misplaced",
    "encoded_answer",
    "bad_request",
    "bytes_out_limit",
    "bytes_in_limit",
    "call_ended",
    "other",
)

# The *_created series double every counter and histogram for no dashboard
# use; Prometheus tracks resets itself.
disable_created_metrics()  # type: ignore[no-untyped-call]

VERSION = "0.1.0"
#: From 1 ms (a cancelled start) to 10 minutes (a long run).
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
REFUSALS = wire.EXECUTOR_REFUSALS
#: Why a run that was started ended in outcome "error" (RunResult.error's code).
RUN_ERRORS = ("docker_error", "deadline_exceeded", "sandbox_lost", "inputs_failed")
METHODS = ("Run", "Cancel", "ListSandboxes", "EndSandboxes", "WatchSandboxes", "other")
#: Claim latency: a pool claim is a few ms; a miss falls through at once.
CLAIM_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class ExecutorMetrics:
    def __init__(self, registry: CollectorRegistry, runtimes: tuple[str, ...]) -> None:
        self.requests = Counter(
            "airlock_executor_requests", "RPCs received, before authentication.", ["method"], registry=registry
        )
        self.unauthenticated = Counter(
            "airlock_executor_unauthenticated_requests", "RPCs refused for a missing or wrong token.", registry=registry
        )
        self.refused_peers = Counter(
            "airlock_executor_refused_peers",
            "Connections to the executor socket closed unread: the peer's uid is not in allowed_peer_uids.",
            registry=registry,
        )
        self.runs = Counter(
            "airlock_executor_runs", "Finished runs by outcome.", ["outcome", "runtime"], registry=registry
        )
        self.refused = Counter(
            "airlock_executor_refused_runs", "Runs refused before start.", ["reason"], registry=registry
        )
        self.run_errors = Counter(
            "airlock_executor_run_errors",
            "Runs that ended in outcome error, by reason (the details are in the executor's log).",
            ["reason"],
            registry=registry,
        )
        self.truncations = Counter(
            "airlock_executor_output_truncations", "Runs whose output was cut.", registry=registry
        )
        self.run_seconds = Histogram(
            "airlock_executor_run_duration_seconds",
            "Run time from start to exit.",
            ["runtime"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.start_seconds = Histogram(
            "airlock_executor_container_start_seconds",
            "Time to create, attach and start a container.",
            ["runtime"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.egress_connections = Counter(
            "airlock_executor_egress_connections",
            "Egress proxy connection attempts by tool and outcome (allowed, or the deny reason).",
            ["tool", "outcome"],
            registry=registry,
        )
        self.egress_bytes = Counter(
            "airlock_executor_egress_bytes",
            "Bytes relayed by the egress proxy; out is sandbox to destination.",
            ["direction"],
            registry=registry,
        )
        self.egress_cuts = Counter(
            "airlock_executor_egress_cut_connections",
            "Allowed egress connections ended early, by cause.",
            ["cut"],
            registry=registry,
        )
        self.egress_requests = Counter(
            "airlock_executor_egress_requests",
            "Requests on inspected egress connections (TLS terminated by the proxy), by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.running = Gauge("airlock_executor_running_containers", "Sandbox containers alive now.", registry=registry)
        self.pool_target = Gauge(
            "airlock_executor_pool_target_containers",
            "Idle containers the warm pool keeps per class (image|runtime|memory|cpu|pids|tmpfs).",
            ["pool"],
            registry=registry,
        )
        self.pool_idle = Gauge(
            "airlock_executor_pool_idle_containers",
            "Idle, checked containers ready per class.",
            ["pool"],
            registry=registry,
        )
        self.pool_claims = Counter(
            "airlock_executor_pool_claims",
            "Pool claims by result: hit (a warm container) or miss (the call cold-starts).",
            ["result"],
            registry=registry,
        )
        self.pool_claim_seconds = Histogram(
            "airlock_executor_pool_claim_seconds",
            "Time to claim from the pool, checks included (hit or miss).",
            buckets=CLAIM_BUCKETS,
            registry=registry,
        )
        self.pool_replacements = Counter(
            "airlock_executor_pool_replacements",
            "Pool containers removed instead of handed out, by cause.",
            ["cause"],
            registry=registry,
        )
        self.sessions = Gauge("airlock_executor_sessions", "Live session sandboxes.", registry=registry)
        self.session_starts = Counter(
            "airlock_executor_session_starts", "Session sandboxes started.", registry=registry
        )
        self.session_ends = Counter(
            "airlock_executor_session_ends", "Session sandboxes ended, by cause.", ["cause"], registry=registry
        )
        self.input_files = Counter(
            "airlock_executor_input_files", "Files copied into sandboxes at /inputs.", registry=registry
        )
        self.input_bytes = Counter(
            "airlock_executor_input_bytes", "Bytes copied into sandboxes at /inputs.", registry=registry
        )
        self.output_files = Counter(
            "airlock_executor_output_files", "Files collected whole from /outputs.", registry=registry
        )
        self.output_bytes = Counter(
            "airlock_executor_output_bytes", "Bytes of the files collected whole from /outputs.", registry=registry
        )
        self.skipped_outputs = Counter(
            "airlock_executor_skipped_outputs",
            "Entries under /outputs not collected, by reason (a summed-up rest counts once).",
            ["reason"],
            registry=registry,
        )
        self.build = Info("airlock_executor_build", "Executor version and enabled runtimes.", registry=registry)
        self.build.info({"version": VERSION, "runtimes": ",".join(runtimes)})
        self._preregister(runtimes)

    def _preregister(self, runtimes: tuple[str, ...]) -> None:
        # Every label of a closed set exists from the start, at 0.
        for runtime in runtimes:
            for outcome in OUTCOMES:
                self.runs.labels(outcome, runtime)
        closed: list[tuple[Counter, tuple[str, ...]]] = [
            (self.refused, REFUSALS),
            (self.run_errors, RUN_ERRORS),
            (self.requests, METHODS),
            (self.egress_bytes, ("out", "in")),
            (self.egress_cuts, EGRESS_CUTS),
            (self.egress_requests, EGRESS_REQUEST_OUTCOMES),
            (self.pool_claims, ("hit", "miss")),
            (self.pool_replacements, REPLACE_CAUSES),
            (self.session_ends, END_CAUSES),
            (self.skipped_outputs, SKIP_REASONS),
        ]
        for counter, values in closed:
            for value in values:
                counter.labels(value)
        for refusal in EGRESS_UNATTRIBUTED:
            self.egress_connections.labels("none", refusal)

    # The pool's and the session table's metrics seams.

    def set_shelf(self, label: str, target: int, idle: int) -> None:
        self.pool_target.labels(label).set(target)
        self.pool_idle.labels(label).set(idle)

    def drop_shelf(self, label: str) -> None:
        # A class no longer kept warm leaves the label set: the set stays
        # bounded by pool.max_classes.
        for gauge in (self.pool_target, self.pool_idle):
            with contextlib.suppress(KeyError):
                gauge.remove(label)

    def claimed(self, hit: bool, seconds: float) -> None:
        self.pool_claims.labels("hit" if hit else "miss").inc()
        self.pool_claim_seconds.observe(seconds)

    def replaced(self, cause: ReplaceCause) -> None:
        self.pool_replacements.labels(cause).inc()

    def session_started(self) -> None:
        self.session_starts.inc()
        self.sessions.inc()

    def session_ended(self, cause: EndCause) -> None:
        self.session_ends.labels(cause).inc()
        self.sessions.dec()
