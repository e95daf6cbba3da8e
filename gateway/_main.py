"""Process wiring for ``python -m gateway``: load config, build the pieces,
serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from airlock import ConfigError
from airlock._daemon import start_metrics, stop_event, write_ready_file
from airlock.v1 import gateway_pb2_grpc
from gateway._audit import JsonlAuditSink
from gateway._auth import Authenticator
from gateway._budget import CallCounters
from gateway._config import GatewayConfig, load_gateway_config
from gateway._core import CoreSettings, Gateway
from gateway._errors import PolicyError
from gateway._executor_client import GrpcExecutor
from gateway._mask import Masker
from gateway._metrics import GatewayMetrics
from gateway._policy import OpaClient
from gateway._registry import load_registry
from gateway._server import SERVING, AuthInterceptor, GatewayServicer, add_standard_services

log = logging.getLogger("airlock.gateway")
#: How often the registry file is checked for changes.
REGISTRY_POLL_SECONDS = 1.0
#: A small document every Airlock bundle defines, read once for its revision.
REVISION_PROBE_PATH = "airlock/config/shadow"


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


def _read_key(path: str | None) -> bytes | None:
    return Path(path).read_bytes().strip() if path else None


async def serve(cfg: GatewayConfig, ready_file: str | None) -> None:
    registry = load_registry(Path(cfg.registry))
    prom = CollectorRegistry()
    metrics = GatewayMetrics(prom, registry.tools.keys(), {a.profile for a in cfg.agents})
    policy = OpaClient(cfg.opa.url, cfg.opa.timeout_ms)
    executor = GrpcExecutor(cfg.executor, cfg.limits.max_message_bytes)
    key = await asyncio.to_thread(_read_key, cfg.audit.key_file)
    audit = JsonlAuditSink(
        Path(cfg.audit.path), key=key, max_bytes=cfg.audit.max_bytes, group_commit=cfg.audit.group_commit
    )
    metrics.audit_last_seq.set(audit.last_seq)
    mask = cfg.audit.mask
    core = Gateway(
        registry=registry,
        policy=policy,
        executor=executor,
        audit=audit,
        metrics=metrics,
        settings=CoreSettings(
            decision_path=cfg.opa.decision_path,
            granted_tools_path=cfg.opa.granted_tools_path,
            max_arguments_bytes=cfg.limits.max_arguments_bytes,
        ),
        masker=Masker(mask.pointers, mask.key_pattern, mask.value_patterns),
        counters=CallCounters(cfg.budget.window_seconds),
    )
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(Authenticator(cfg.agents))],
        options=[
            ("grpc.max_receive_message_length", cfg.limits.max_message_bytes),
            ("grpc.max_send_message_length", cfg.limits.max_message_bytes),
        ],
    )
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(core), server)
    health = add_standard_services(server)
    if cfg.tls is not None:
        port = server.add_secure_port(cfg.listen, cfg.tls.credentials())
    else:
        port = server.add_insecure_port(cfg.listen)
    if port == 0:
        raise OSError(f"cannot listen on {cfg.listen}")
    metrics_url = start_metrics(cfg.metrics_listen, prom)
    await server.start()
    # Best effort: build_info shows the active policy revision from the start,
    # not only after the first decision. Not a decision, so not audited.
    try:
        probe = await policy.evaluate(REVISION_PROBE_PATH, {})
        metrics.policy_revision(probe.revision)
    except PolicyError as exc:
        log.warning("could not read the policy revision at start: %s", exc)
    await health.set("", SERVING)
    await health.set("airlock.v1.GatewayService", SERVING)
    host = cfg.listen.rpartition(":")[0]
    write_ready_file(ready_file, {"listen": f"{host}:{port}", "metrics": metrics_url, "audit": cfg.audit.path})
    stop = stop_event()
    watcher = asyncio.get_running_loop().create_task(_watch_registry(Path(cfg.registry), core, stop))
    await stop.wait()
    watcher.cancel()
    await health.enter_graceful_shutdown()
    await server.stop(grace=5)
    await policy.close()
    await executor.close()
    audit.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="Airlock gateway daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the gateway")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--ready-file", help="write listen addresses here once serving")
    check = sub.add_parser("check", help="validate gateway.yaml and its registry offline")
    check.add_argument("--config", type=Path)
    check.add_argument("--registry", type=Path)
    bundle = sub.add_parser("registry-data", help="print the registry as OPA data (data.registry)")
    bundle.add_argument("--registry", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(message)s")
    try:
        if args.command == "serve":
            cfg = load_gateway_config(args.config)
            load_registry(Path(cfg.registry))
            asyncio.run(serve(cfg, args.ready_file))
        elif args.command == "check":
            if args.config:
                cfg = load_gateway_config(args.config)
                load_registry(Path(cfg.registry))
            if args.registry:
                load_registry(args.registry)
            print("ok")  # noqa: T201 - the check command's answer
        else:
            print(json.dumps(load_registry(args.registry).as_policy_data(), indent=2, sort_keys=True))  # noqa: T201
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)  # noqa: T201 - config errors go to the operator
        return 2
    return 0
