"""Process wiring for ``python -m airlock.executor``."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import resource
import secrets
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from airlock.common import ConfigError
from airlock.common._config import config_path
from airlock.common._daemon import probe_health, start_metrics, stop_event, write_ready_file
from airlock.common._grpc_tls import server_credentials
from airlock.common._secrets import SecretFileError, read_secret_text
from airlock.executor._artifacts import max_receive_bytes
from airlock.executor._config import ENV_PREFIX, ExecutorConfig, load_executor_config
from airlock.executor._docker import DockerRuntime
from airlock.executor._images import ImageAllowlist
from airlock.executor._metrics import ExecutorMetrics
from airlock.executor._options import executor_instance
from airlock.executor._peer import PeerGate, prepare_socket_folders
from airlock.executor._reaper import spawn as spawn_reaper
from airlock.executor._runner import Runner
from airlock.executor._server import ExecutorServicer, TokenInterceptor
from airlock.executor.egress import Egress
from airlock.executor.sandboxes import SessionEvents
from airlock.executor.sandboxes import setup as sandbox_setup
from airlock.v1 import executor_pb2_grpc

log = logging.getLogger("airlock.executor")
MIN_TOKEN_CHARS = 16
#: The open-files soft limit is raised to the hard limit, up to this: the
#: egress proxy's connection caps are derived from it.
MAX_NOFILE = 65536


def raise_fd_limit() -> int:
    """Raises the soft RLIMIT_NOFILE towards the hard one; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, MAX_NOFILE) if hard != resource.RLIM_INFINITY else MAX_NOFILE
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def _add_transport(
    cfg: ExecutorConfig, server: grpc.aio.Server, metrics: ExecutorMetrics
) -> tuple[dict[str, str], PeerGate | None]:
    """The gRPC port, and for a Unix socket the peer gate in front of it."""
    if cfg.socket is not None:
        sock = Path(cfg.socket)
        # gRPC listens on a socket only this uid can reach; the gate in front
        # checks each peer's uid before relaying (airlock/executor/_peer.py).
        inner = prepare_socket_folders(sock, cfg.socket_group)
        server.add_insecure_port(f"unix:{inner}")
        gate = PeerGate(sock, inner, cfg.allowed_peer_uids, cfg.socket_group, metrics)
        return {"socket": str(sock)}, gate
    assert cfg.listen is not None
    assert cfg.tls is not None
    port = server.add_secure_port(cfg.listen, server_credentials(cfg.tls))
    return {"listen": f"{cfg.listen.rpartition(':')[0]}:{port}"}, None


def _read_token(cfg: ExecutorConfig) -> str:
    try:
        token = read_secret_text(cfg.token_file, "executor token file")
    except SecretFileError as exc:
        raise ConfigError(cfg.token_file, "token_file", str(exc)) from exc
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(cfg.token_file, "", "executor token must be at least 16 characters")
    return token


def _engine(cfg: ExecutorConfig) -> tuple[DockerRuntime, ExecutorConfig]:
    """The Docker engine, and the config with only the runtimes it has."""
    try:
        runtime = DockerRuntime(cfg.docker_url, cfg.max_concurrent_runs)
        runtime.ping()
        available = runtime.available_runtimes()
    # The SDK's errors and OSError alike: one line naming the engine, then exit.
    except Exception as exc:
        raise ConfigError(
            cfg.docker_url, "docker_url", f"the Docker engine does not answer ({type(exc).__name__}: {exc})"
        ) from exc
    missing = [r for r in cfg.runtimes if r not in available]
    if missing:
        # Runs asking for these are refused (runtime_unavailable), never
        # silently run under another runtime.
        log.warning("runtimes %s are not registered with Docker; runs that ask for them are refused", missing)
        cfg = replace(cfg, runtimes=tuple(r for r in cfg.runtimes if r in available))
    return runtime, cfg


async def serve(cfg: ExecutorConfig, ready_file: str | None) -> None:
    token = await asyncio.to_thread(_read_token, cfg)
    # Short blocking Docker calls (create, start, kill, wait, remove, and the
    # pool's starts and checks) run in asyncio's default pool; size it for
    # every slot to need a few at once.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(
            cfg.max_concurrent_runs * 2 + cfg.pool.max_starting + 8, thread_name_prefix="docker"
        )
    )
    runtime, cfg = _engine(cfg)
    prom = CollectorRegistry()
    metrics = ExecutorMetrics(prom, cfg.runtimes)
    fd_limit = raise_fd_limit()
    egress = Egress(cfg.egress, metrics, fd_limit=fd_limit, max_runs=cfg.max_concurrent_runs, ca_dir=cfg.egress_ca_dir)
    # Before egress starts: an unreadable registry stops us with nothing set up.
    images = ImageAllowlist(cfg.registry_file, cfg.allowed_images)
    images.load()
    events = SessionEvents()
    # This start's id: its reaper removes this start's long-lived containers
    # once the executor is gone, and never a later start's.
    generation = secrets.token_hex(8)
    boxes = sandbox_setup.build(
        cfg, runtime=runtime, metrics=metrics, egress=egress, images=images, events=events, generation=generation
    )
    runner = Runner(cfg, runtime, metrics, egress, boxes, images=images)
    await egress.start(runtime)
    removed = await asyncio.to_thread(runner.remove_leftovers)
    if removed:
        log.warning("removed %d sandbox containers left over from an earlier run", removed)
    # Started after the sweep above, so it never races it; it outlives a
    # SIGKILL of this process and removes overdue sandboxes.
    reaper = spawn_reaper(cfg.docker_url, executor_instance(cfg), generation)
    upkeep = sandbox_setup.start(cfg, boxes, images)
    # A RunRequest carries its input files: the receive limit is the most
    # input bytes a call may bring plus slack (docs/executor-artifacts.md).
    receive = max_receive_bytes(cfg)
    server = grpc.aio.server(
        interceptors=[TokenInterceptor(token, metrics)], options=[("grpc.max_receive_message_length", receive)]
    )
    servicer = ExecutorServicer(runner, boxes.sessions if boxes else None, events)
    executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server)
    endpoint, gate = _add_transport(cfg, server, metrics)
    await server.start()
    if gate is not None:
        await gate.start()
    metrics_url = start_metrics(cfg.metrics_listen, prom)
    write_ready_file(
        ready_file,
        {
            **endpoint,
            "metrics": metrics_url,
            "removed_leftovers": removed,
            "runtimes": list(cfg.runtimes),
            "reaper_pid": reaper.pid,
            "allowed_peer_uids": list(cfg.allowed_peer_uids),
            "egress": {"proxy": egress.proxy_address, "network": egress.network}
            if not egress.unavailable
            else {"unavailable": egress.unavailable},
        },
    )
    await stop_event().wait()
    if gate is not None:
        await gate.stop_accepting()
    await sandbox_setup.stop(boxes, upkeep, events)
    # Stopping with grace lets in-flight runs finish; their finally blocks
    # remove the containers.
    await server.stop(grace=10)
    if gate is not None:
        await gate.close()
    swept = await runner.close()
    if swept:
        log.warning("removed %d sandbox containers of runs cut short by the shutdown", swept)
    await egress.stop()
    runtime.close()
    # Nothing of ours is left for the reaper to collect.
    reaper.terminate()
    try:
        await asyncio.to_thread(reaper.wait, 10)
    except subprocess.TimeoutExpired:
        reaper.kill()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s executor %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m airlock.executor", description="Airlock executor daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the executor")
    run.add_argument("--config", type=Path, help="executor.yaml (default: $AIRLOCK_EXECUTOR_CONFIG)")
    run.add_argument("--ready-file")
    check = sub.add_parser("check", help="validate executor.yaml (and the environment) offline")
    check.add_argument("--config", type=Path)
    probe = sub.add_parser("health", help="exit 0 when the executor that wrote --ready-file serves (for healthchecks)")
    probe.add_argument("--ready-file", required=True)
    sub.add_parser("reap", help="(internal) remove overdue sandboxes; started by serve", add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reap"]:
        from airlock.executor._reaper import main as reap_main  # noqa: PLC0415 - only the reaper needs it

        logging.getLogger().handlers[0].setFormatter(logging.Formatter("%(asctime)s reaper %(levelname)s %(message)s"))
        return reap_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "health":
        problem = probe_health(args.ready_file)
        if problem is not None:
            print(f"executor: {problem}", file=sys.stderr)  # noqa: T201 - the probe's answer
            return 1
        return 0
    env = dict(os.environ)
    try:
        cfg = load_executor_config(config_path(args.config, env, ENV_PREFIX), env)
        if args.command == "serve":
            asyncio.run(serve(cfg, args.ready_file))
        else:
            if cfg.registry_file is not None:
                ImageAllowlist(cfg.registry_file, cfg.allowed_images).load()
            print("ok")  # noqa: T201 - the check command's answer
    except ConfigError as exc:
        print(f"executor: {exc}", file=sys.stderr)  # noqa: T201 - config errors go to the operator
        return 2
    return 0
