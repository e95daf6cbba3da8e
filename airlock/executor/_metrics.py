"""Every executor metric, against an injected CollectorRegistry. Labels
come from closed sets: outcomes, runtimes, refusal codes, RPC methods."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from airlock.executor._model import OUTCOMES

#: How an allowed egress connection can end early (executor.egress.proxy.CUTS).
EGRESS_CUTS = ("bytes_out_limit", "bytes_in_limit", "call_ended")
#: Egress refusals no call owns (tool "none"): before a head was read or
#: without a live credential.
EGRESS_UNATTRIBUTED = ("bad_request", "unauthenticated", "overloaded")

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
REFUSALS = ("egress_unavailable", "runtime_unavailable", "image_missing", "image_not_allowed", "spec_invalid")
#: Why a run that was started ended in outcome "error" (RunResult.error's code).
RUN_ERRORS = ("docker_error", "deadline_exceeded")
METHODS = ("Run", "Cancel", "other")


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
        self.running = Gauge("airlock_executor_running_containers", "Sandbox containers alive now.", registry=registry)
        self.build = Info("airlock_executor_build", "Executor version and enabled runtimes.", registry=registry)
        self.build.info({"version": VERSION, "runtimes": ",".join(runtimes)})
        for runtime in runtimes:
            for outcome in OUTCOMES:
                self.runs.labels(outcome, runtime)
        for reason in REFUSALS:
            self.refused.labels(reason)
        for reason in RUN_ERRORS:
            self.run_errors.labels(reason)
        for method in METHODS:
            self.requests.labels(method)
        for direction in ("out", "in"):
            self.egress_bytes.labels(direction)
        for cut in EGRESS_CUTS:
            self.egress_cuts.labels(cut)
        for refusal in EGRESS_UNATTRIBUTED:
            self.egress_connections.labels("none", refusal)
