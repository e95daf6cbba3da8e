"""Process wiring for ``python -m airlock.gateway``: load config, build the pieces,
serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import grpc
import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health
from prometheus_client import CollectorRegistry

from airlock.common import ConfigError, auditlog
from airlock.common._config import config_path
from airlock.common._daemon import probe_health, start_metrics, stop_event, write_ready_file
from airlock.common._grpc_tls import server_credentials
from airlock.common._secrets import SecretFileError, check_secret_file, read_secret_text
from airlock.gateway._approvals import sweep as sweep_approvals
from airlock.gateway._audit import JsonlAuditSink
from airlock.gateway._auth import Authenticator
from airlock.gateway._budget import CallCounters
from airlock.gateway._budget_redis import RedisCounters, RedisSettings
from airlock.gateway._config import ENV_PREFIX, GatewayConfig, Limits, load_gateway_config
from airlock.gateway._core import CoreSettings, Gateway
from airlock.gateway._errors import AuditError, BudgetError, PolicyError
from airlock.gateway._events import session_event
from airlock.gateway._executor_client import GrpcExecutor
from airlock.gateway._images import ImagePins
from airlock.gateway._mask import Masker
from airlock.gateway._metrics import GatewayMetrics, ImageMetrics
from airlock.gateway._policy import OpaClient
from airlock.gateway._registry import load_registry
from airlock.gateway._server import (
    NOT_SERVING,
    SERVING,
    ApprovalServicer,
    ArtifactServicer,
    AuthInterceptor,
    GatewayServicer,
    add_standard_services,
    prepare_agent_socket,
)
from airlock.gateway._sessions import SessionService, SessionView
from airlock.gateway.artifacts import ArtifactRuntime, build_artifacts
from airlock.gateway.tooldefs import Catalog, ToolDefinitions
from airlock.v1 import approvals_pb2_grpc, artifacts_pb2_grpc, audit_pb2, gateway_pb2_grpc

log = logging.getLogger("airlock.gateway")
#: How often the registry file is checked for changes.
REGISTRY_POLL_SECONDS = 1.0
#: A small document every Airlock bundle defines, read once for its revision.
REVISION_PROBE_PATH = "airlock/config/shadow"
HANDSHAKE_TIMEOUT_MS = 10_000
#: How often OPA is probed for the health of the decision path.
POLICY_PROBE_SECONDS = 5.0
#: Descriptors besides client connections: OPA's and the executor's
#: connections, the audit files, metrics, Python itself.
FD_HEADROOM = 256


async def _watch_registry(path: Path, core: Gateway, stop: asyncio.Event) -> None:
    """Reloads the tool registry when its file changes. A file that does not
    validate is reported and ignored: the last good registry stays."""

    def stamp() -> tuple[int, int]:
        st = path.stat()
        return st.st_mtime_ns, st.st_size

    seen = await asyncio.to_thread(stamp)
    while not stop.is_set():
        await asyncio.sleep(REGISTRY_POLL_SECONDS)
        try:
            now = await asyncio.to_thread(stamp)
            if now == seen:
                continue
            seen = now
            registry = await asyncio.to_thread(load_registry, path)
        except (OSError, ConfigError) as exc:
            log.warning("registry not reloaded: %s", exc)
            continue
        core.replace_registry(registry)
        log.info("registry reloaded from %s (%d tools)", path, len(registry.tools))


async def _probe_policy_engine(policy: OpaClient, metrics: GatewayMetrics, *, was_up: bool | None) -> bool:
    """One probe of OPA with the gateway's own token: a small document every
    Airlock bundle defines. Not a decision, so not audited. Logs only when
    the answer changes (``was_up`` None: the first probe)."""
    try:
        probe = await policy.evaluate(REVISION_PROBE_PATH, {})
    except PolicyError as exc:
        metrics.policy_engine_up.set(0)
        if was_up is not False:
            # One line, no traceback: the operator needs the cause, not our stack.
            log.error("policy engine unreachable (%s): %s; every call is denied until it answers", exc.code, exc)  # noqa: TRY400
        return False
    metrics.policy_engine_up.set(1)
    metrics.policy_revision(probe.revision)
    if was_up is False:
        log.info("policy engine answers again (revision %s)", probe.revision)
    return True


async def _watch_policy_engine(policy: OpaClient, metrics: GatewayMetrics, stop: asyncio.Event, *, up: bool) -> None:
    while not stop.is_set():
        await asyncio.sleep(POLICY_PROBE_SECONDS)
        up = await _probe_policy_engine(policy, metrics, was_up=up)


def core_settings(cfg: GatewayConfig) -> CoreSettings:
    limits = cfg.limits
    return CoreSettings(
        decision_path=cfg.opa.decision_path,
        granted_tools_path=cfg.opa.granted_tools_path,
        max_arguments_bytes=limits.max_arguments_bytes,
        max_arguments_depth=limits.max_arguments_depth,
        max_in_flight_per_principal=limits.max_in_flight_per_principal,
        policy_concurrency=cfg.opa.concurrency,
        policy_per_principal=cfg.opa.per_principal,
        policy_queue_timeout_s=cfg.opa.queue_timeout_ms / 1000,
        run_slots=cfg.executor.max_concurrent_runs,
        run_slots_per_principal=cfg.executor.max_runs_per_principal,
        run_queue_timeout_s=cfg.executor.start_timeout_ms / 1000,
        calls_per_second=limits.calls_per_second,
        calls_burst=limits.calls_burst,
        argument_bytes_per_second=limits.argument_bytes_per_second,
        argument_bytes_burst=limits.argument_bytes_burst,
        unauthenticated_records_per_window=limits.unauthenticated_records_per_window,
        unauthenticated_window_s=limits.unauthenticated_window_ms / 1000,
        approval_wait_s=cfg.approvals.wait_ms / 1000,
        approval_ttl_s=cfg.approvals.ttl_ms / 1000,
        approval_max_pending_per_principal=cfg.approvals.max_pending_per_principal,
    )


def _read_key(path: str) -> Ed25519PrivateKey:
    check_secret_file(path, "audit signing key file")
    return auditlog.load_signing_key(Path(path))


class _HealthState:
    """gRPC health: SERVING only while the gateway serves and its audit log
    takes writes (a gateway that cannot record cannot allow anything)."""

    def __init__(self) -> None:
        self.serving = False
        self.audit_ok = True
        self._health: health.aio.HealthServicer | None = None

    def bind(self, servicer: health.aio.HealthServicer) -> None:
        self._health = servicer

    def audit_changed(self, ok: bool) -> None:
        self.audit_ok = ok
        if ok:
            log.info("audit writes succeed again; health SERVING")
        else:
            log.error("audit writes fail; health NOT_SERVING until they succeed")
        asyncio.get_running_loop().create_task(self.publish())

    async def publish(self) -> None:
        if self._health is None:
            return
        status = SERVING if self.serving and self.audit_ok else NOT_SERVING
        for service in ("", "airlock.v1.GatewayService"):
            await self._health.set(service, status)


def _raise_fd_limit(needed: int) -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: the connection cap, OPA's and
    the executor's connections and the audit files must all fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < needed:
        raise ConfigError(
            "gateway.yaml", "limits.max_connections", f"needs about {needed} file descriptors; the limit is {soft}"
        )


def _fds_needed(cfg: GatewayConfig) -> int:
    own_sockets = sum(1 for a in cfg.agents if a.socket)
    return cfg.limits.max_connections + own_sockets * cfg.limits.max_connections_per_socket + FD_HEADROOM


def _grpc_server(limits: Limits, interceptor: AuthInterceptor, max_connections: int) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=[interceptor],
        # What bounds the load is the connection cap times the streams per
        # connection, then the per-principal caps in the core; gRPC's own
        # RPC cap sits above that product (see Limits.max_concurrent_rpcs).
        # Idle connections are closed and old ones recycled, so held
        # connections cannot hoard descriptors for ever.
        maximum_concurrent_rpcs=max_connections * limits.max_concurrent_streams + 64,
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
            ("grpc.max_connection_idle_ms", limits.max_connection_idle_ms),
            ("grpc.max_connection_age_ms", limits.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", limits.max_connection_age_grace_ms),
            ("grpc.max_allowed_incoming_connections", max_connections),
            # A client must finish its TLS/HTTP2 handshake promptly.
            ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
            ("grpc.http2.max_pings_without_data", 2),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )


async def _agent_servers(
    cfg: GatewayConfig,
    authenticator: Authenticator,
    servicer: GatewayServicer,
    artifacts: ArtifactServicer,
    approvals: ApprovalServicer,
) -> list[grpc.aio.Server]:
    """One gRPC server per agent socket: its own connection cap, so an agent
    that opens connections by the hundred takes only its own; and the
    socket's file mode, not a TCP port anyone may bind once the gateway is
    gone, is what lets the agent reach the gateway."""
    servers = []
    for agent in cfg.agents:
        if agent.socket is None:
            continue
        path = Path(agent.socket)
        prepare_agent_socket(path)
        only = AuthInterceptor(authenticator, only=agent.id)
        own = _grpc_server(cfg.limits, only, cfg.limits.max_connections_per_socket)
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, own)
        artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(artifacts, own)
        # An approver's own socket is how `airlock approvals` reaches it.
        approvals_pb2_grpc.add_ApprovalServiceServicer_to_server(approvals, own)
        if own.add_insecure_port(f"unix:{path}") == 0:
            raise OSError(f"cannot listen on {path}")
        await own.start()
        # Made with the umask's mode (no write for the group: no one can
        # connect yet); the folder's setgid bit gave it the agent's group.
        await asyncio.to_thread(path.chmod, 0o660)
        servers.append(own)
    return servers


async def _audit_sink(cfg: GatewayConfig, metrics: GatewayMetrics, health_state: _HealthState) -> JsonlAuditSink:
    if cfg.audit.signing_key_file is None:
        raise ConfigError(str(cfg.audit.path), "audit.signing_key_file", "required to serve (signs audit checkpoints)")
    key = await asyncio.to_thread(_read_key, cfg.audit.signing_key_file)
    mask = cfg.audit.mask
    audit = JsonlAuditSink(
        Path(cfg.audit.path),
        signing_key=key,
        masker=Masker(mask.pointers, mask.key_pattern, mask.value_patterns),
        max_bytes=cfg.audit.max_bytes,
        group_commit=cfg.audit.group_commit,
        checkpoint_events=cfg.audit.checkpoint_events,
        checkpoint_seconds=cfg.audit.checkpoint_seconds,
        retention=cfg.audit.retention,
        on_health=health_state.audit_changed,
    )
    # Checkpoints advance the chain too: the gauge reads the sink itself.
    metrics.audit_last_seq.set_function(lambda: audit.last_seq)
    metrics.audit_last_signed_seq.set_function(lambda: audit.last_signed_seq)
    metrics.audit_healthy.set_function(lambda: 1.0 if audit.healthy else 0.0)
    return audit


def _artifacts(
    cfg: GatewayConfig, policy: OpaClient, audit: JsonlAuditSink, metrics: GatewayMetrics
) -> ArtifactRuntime | None:
    """The artifact store and its operations (None without ``artifacts:``).
    Its audit events go into the same chain, counted like the core's."""
    if cfg.artifacts is None:
        return None

    async def record(event: audit_pb2.AuditEvent) -> None:
        started = time.monotonic()
        try:
            await audit.write(event)
        except AuditError:
            metrics.audit_failures.inc()
            raise
        metrics.audit_write_seconds.observe(time.monotonic() - started)
        metrics.audit_events.labels(event.kind).inc()
        metrics.audit_last_seq.set(event.seq)

    return build_artifacts(cfg.artifacts, policy=policy, record=record, metrics=metrics, agents=cfg.agents)


def _add_artifact_service(
    server: grpc.aio.Server, artifacts: ArtifactRuntime | None, core: Gateway
) -> ArtifactServicer:
    if artifacts is not None:
        artifacts.ops.bind_admission(core.admitted)
    servicer = ArtifactServicer(artifacts.ops if artifacts else None)
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(servicer, server)
    return servicer


def _start_sweeper(artifacts: ArtifactRuntime | None, stop: asyncio.Event) -> asyncio.Task[None] | None:
    """Retention, orphaned blobs and the stored-bytes gauges, at start and every sweep interval."""
    if artifacts is None:
        return None
    cfg = artifacts.config
    sweep = artifacts.ops.run_sweeper(cfg.retention_seconds, cfg.sweep_interval_seconds, stop)
    return asyncio.get_running_loop().create_task(sweep)


async def _stop_artifacts(sweeper: asyncio.Task[None] | None, artifacts: ArtifactRuntime | None) -> None:
    """The sweeper ends (it watches the stop event), then the store closes."""
    if sweeper is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(sweeper, 5)
    if artifacts is not None:
        await artifacts.ops.close()


def _budget_store(cfg: GatewayConfig, metrics: GatewayMetrics) -> CallCounters | RedisCounters:
    """The budget counters: this process's own, or the Redis several gateways share."""
    budget = cfg.budget
    if budget.redis is None:
        return CallCounters(budget.window_seconds)
    r = budget.redis
    settings = RedisSettings(
        url=r.url,
        username=r.username,
        password=read_secret_text(r.password_file, "budget store password file"),
        timeout_s=r.timeout_ms / 1000,
        key_prefix=r.key_prefix,
        ca_file=r.tls.ca_file if r.tls else None,
        cert_file=r.tls.cert_file if r.tls else None,
        key_file=r.tls.key_file if r.tls else None,
    )

    def on_error(operation: str, cause: str) -> None:
        metrics.budget_store_errors.labels(operation, cause).inc()

    return RedisCounters(settings, budget.window_seconds, on_error)


async def _probe_budget_store(counters: CallCounters | RedisCounters) -> None:
    # Not a reason to refuse to start: every call fails closed
    # (budget_unavailable) until the store answers, then works again.
    if not isinstance(counters, RedisCounters):
        return
    try:
        await counters.ping()
    except BudgetError as exc:
        problem = str(exc)
    else:
        return
    log.error("the budget store does not answer; calls are denied (budget_unavailable) until it does: %s", problem)


async def serve(cfg: GatewayConfig, ready_file: str | None) -> None:  # noqa: PLR0915 - one line per piece of the process, in start order
    _raise_fd_limit(_fds_needed(cfg))
    registry = load_registry(Path(cfg.registry))
    prom = CollectorRegistry()
    metrics = GatewayMetrics(prom, registry.tools.keys(), {a.profile for a in cfg.agents})
    opa_token = read_secret_text(cfg.opa.token_file, "OPA token file") if cfg.opa.token_file else None
    policy = OpaClient(
        cfg.opa.url,
        cfg.opa.timeout_ms,
        token=opa_token,
        ssl=cfg.opa.tls.ssl_context() if cfg.opa.tls else None,
    )
    executor = GrpcExecutor(cfg.executor, cfg.limits.max_message_bytes)
    health_state = _HealthState()
    audit = await _audit_sink(cfg, metrics, health_state)
    # The artifact store, ArtifactService's operations and the Invoke path's
    # seam (artifacts.access: ArtifactAccess), built before the core.
    artifacts = _artifacts(cfg, policy, audit, metrics)
    # Dynamic tools keep their bodies in the artifact store and their
    # catalog next to it: no store, no dynamic tools (define_tool refuses).
    tooldefs = (
        ToolDefinitions(Catalog(Path(cfg.artifacts.path) / "tool_definitions.sqlite"), artifacts.ops.store)
        if artifacts is not None and cfg.artifacts is not None
        else None
    )
    view = SessionView()
    counters = _budget_store(cfg, metrics)
    await _probe_budget_store(counters)
    pins = ImagePins.beside(Path(cfg.registry))
    core = Gateway(
        registry=registry,
        policy=policy,
        executor=executor,
        audit=audit,
        metrics=metrics,
        settings=core_settings(cfg),
        counters=counters,
        sessions=view,
        artifacts=artifacts.access if artifacts else None,
        tool_definitions=tooldefs,
        # Published beside the registry by `airlock policy publish`.
        images=pins,
    )
    ImageMetrics(prom, lambda: [(name, pins.facts(tool.image)) for name, tool in core.registry.tools.items()])
    sessions = SessionService(executor, view, core.record, session_event)
    metrics.sessions_live.set_function(lambda: len(view.list()))
    metrics.session_stream_up.set_function(lambda: 1.0 if sessions.connected else 0.0)
    authenticator = Authenticator(cfg.agents)
    servicer = GatewayServicer(core, sessions)
    server = _grpc_server(cfg.limits, AuthInterceptor(authenticator), cfg.limits.max_connections)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    approval_servicer = ApprovalServicer(core)
    approvals_pb2_grpc.add_ApprovalServiceServicer_to_server(approval_servicer, server)
    artifact_servicer = _add_artifact_service(server, artifacts, core)
    own = await _agent_servers(cfg, authenticator, servicer, artifact_servicer, approval_servicer)
    health = add_standard_services(server)
    health_state.bind(health)
    if cfg.tls is not None:
        port = server.add_secure_port(cfg.listen, server_credentials(cfg.tls))
    else:
        port = server.add_insecure_port(cfg.listen)
    if port == 0:
        raise OSError(f"cannot listen on {cfg.listen}")
    metrics_url = start_metrics(cfg.metrics_listen, prom)
    await server.start()
    # The first probe before serving: build_info shows the active policy
    # revision from the start, and a gateway that cannot reach OPA (or whose
    # token OPA refuses) says so in one line and stays unhealthy.
    engine_up = await _probe_policy_engine(policy, metrics, was_up=None)
    health_state.serving = True
    await health_state.publish()
    host = cfg.listen.rpartition(":")[0]
    write_ready_file(ready_file, {"listen": f"{host}:{port}", "metrics": metrics_url, "audit": cfg.audit.path})
    stop = stop_event()
    watcher = asyncio.get_running_loop().create_task(_watch_registry(Path(cfg.registry), core, stop))
    engine_watch = asyncio.get_running_loop().create_task(_watch_policy_engine(policy, metrics, stop, up=engine_up))
    # Session starts and ends, reported by the executor, into the audit log.
    session_watch = asyncio.get_running_loop().create_task(sessions.watch())
    sweeper = _start_sweeper(artifacts, stop)
    approval_sweep = asyncio.get_running_loop().create_task(sweep_approvals(core.approvals, 1.0, stop))
    await stop.wait()
    approval_sweep.cancel()
    watcher.cancel()
    engine_watch.cancel()
    session_watch.cancel()
    await core.close()
    await health.enter_graceful_shutdown()
    await asyncio.gather(server.stop(grace=5), *(o.stop(grace=5) for o in own))
    await policy.close()
    await executor.close()
    if isinstance(counters, RedisCounters):
        await counters.close()
    await _stop_artifacts(sweeper, artifacts)
    if tooldefs is not None:
        tooldefs.close()
    audit.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airlock.gateway",
        description="Airlock gateway daemon. Config: --config FILE or $AIRLOCK_GATEWAY_CONFIG, and any key "
        "overridden by $AIRLOCK_GATEWAY_<KEY>[__<SUBKEY>] (docs/configuration.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the gateway")
    run.add_argument("--config", type=Path)
    run.add_argument("--ready-file", help="write listen addresses here once serving")
    check = sub.add_parser("check", help="validate gateway.yaml (and the environment) and its registry offline")
    check.add_argument("--config", type=Path)
    check.add_argument("--registry", type=Path)
    probe = sub.add_parser("health", help="exit 0 when the gateway that wrote --ready-file serves (for healthchecks)")
    probe.add_argument("--ready-file", required=True)
    probe.add_argument(
        "--live",
        action="store_true",
        help="liveness only: the process serves its metrics (an OPA outage or audit failure makes it unready, "
        "and restarting the gateway would not cure either)",
    )
    bundle = sub.add_parser("registry-data", help="print the registry as OPA data (data.registry)")
    bundle.add_argument("--registry", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(message)s")
    env = dict(os.environ)
    try:
        if args.command == "serve":
            cfg = load_gateway_config(config_path(args.config, env, ENV_PREFIX), env)
            load_registry(Path(cfg.registry))
            # uvloop: the event loop's own share of a decision (socket
            # readiness, callbacks, timers) is about half of asyncio's.
            uvloop.run(serve(cfg, args.ready_file))
        elif args.command == "check":
            path = config_path(args.config, env, ENV_PREFIX)
            if path is not None or args.registry is None:
                cfg = load_gateway_config(path, env)
                load_registry(Path(cfg.registry))
            if args.registry:
                load_registry(args.registry)
            print("ok")  # noqa: T201 - the check command's answer
        elif args.command == "health":
            problem = probe_health(args.ready_file)
            if problem is None and not args.live:
                problem = probe_health(args.ready_file, gauge="airlock_gateway_audit_healthy") or probe_health(
                    args.ready_file, gauge="airlock_gateway_policy_engine_up"
                )
            if problem is not None:
                print(f"gateway: {problem}", file=sys.stderr)  # noqa: T201 - the probe's answer
                return 1
        else:
            print(json.dumps(load_registry(args.registry).as_policy_data(), indent=2, sort_keys=True))  # noqa: T201
    except (ConfigError, SecretFileError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)  # noqa: T201 - config errors go to the operator
        return 2
    except AuditError as exc:
        # Refused at start (a cut or replaced log, a bad folder): one clear line.
        print(f"gateway: audit log: {exc}", file=sys.stderr)  # noqa: T201
        return 3
    return 0
