"""Process wiring for ``python -m executor``."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import sys
from dataclasses import replace
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from airlock import ConfigError
from airlock._daemon import start_metrics, stop_event, write_ready_file
from airlock.v1 import executor_pb2_grpc
from executor._config import ExecutorConfig, load_executor_config
from executor._docker import DockerRuntime
from executor._metrics import ExecutorMetrics
from executor._runner import Runner
from executor._server import ExecutorServicer, TokenInterceptor
from executor.egress import Egress

log = logging.getLogger("airlock.executor")
MIN_TOKEN_CHARS = 16


def _prepare_socket(path: Path) -> None:
    # The folder's 0700 closes the window between bind and chmod, when the
    # socket exists with the umask's mode.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if path.exists() or path.is_socket():
        path.unlink()


async def serve(cfg: ExecutorConfig, ready_file: str | None) -> None:
    token = await asyncio.to_thread(Path(cfg.token_file).read_text, encoding="utf-8")
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(cfg.token_file, "", "executor token must be at least 16 characters")
    # Short blocking Docker calls (create, start, kill, wait, remove) run in
    # asyncio's default pool; size it for every slot to need a few at once.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(cfg.max_concurrent_runs * 2 + 8, thread_name_prefix="docker")
    )
    runtime = DockerRuntime(cfg.docker_url, cfg.max_concurrent_runs)
    runtime.ping()
    available = runtime.available_runtimes()
    missing = [r for r in cfg.runtimes if r not in available]
    if missing:
        # Runs asking for these are refused (runtime_unavailable), never
        # silently run under another runtime.
        log.warning("runtimes %s are not registered with Docker; runs that ask for them are refused", missing)
        cfg = replace(cfg, runtimes=tuple(r for r in cfg.runtimes if r in available))
    prom = CollectorRegistry()
    metrics = ExecutorMetrics(prom, cfg.runtimes)
    egress = Egress(cfg.egress, metrics)
    await egress.start(runtime)
    runner = Runner(cfg, runtime, metrics, egress)
    removed = await asyncio.to_thread(runner.remove_leftovers)
    if removed:
        log.warning("removed %d sandbox containers left over from an earlier run", removed)
    server = grpc.aio.server(interceptors=[TokenInterceptor(token, metrics)])
    executor_pb2_grpc.add_ExecutorServiceServicer_to_server(ExecutorServicer(runner), server)
    endpoint: dict[str, str] = {}
    if cfg.socket is not None:
        sock = Path(cfg.socket)
        _prepare_socket(sock)
        server.add_insecure_port(f"unix:{sock}")
        endpoint["socket"] = str(sock)
    else:
        assert cfg.listen is not None
        assert cfg.tls is not None
        port = server.add_secure_port(cfg.listen, cfg.tls.credentials())
        endpoint["listen"] = f"{cfg.listen.rpartition(':')[0]}:{port}"
    await server.start()
    if cfg.socket is not None:
        Path(cfg.socket).chmod(0o600)  # noqa: ASYNC240 - one syscall at startup
    metrics_url = start_metrics(cfg.metrics_listen, prom)
    write_ready_file(
        ready_file,
        {
            **endpoint,
            "metrics": metrics_url,
            "removed_leftovers": removed,
            "runtimes": list(cfg.runtimes),
            "egress": {"proxy": egress.proxy_address, "network": egress.network}
            if not egress.unavailable
            else {"unavailable": egress.unavailable},
        },
    )
    await stop_event().wait()
    # Stopping with grace lets in-flight runs finish; their finally blocks
    # remove the containers.
    await server.stop(grace=10)
    swept = await runner.close()
    if swept:
        log.warning("removed %d sandbox containers of runs cut short by the shutdown", swept)
    await egress.stop()
    runtime.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s executor %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m executor", description="Airlock executor daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the executor")
    run.add_argument("--config", required=True, type=Path)
    run.add_argument("--ready-file")
    check = sub.add_parser("check", help="validate executor.yaml offline")
    check.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        cfg = load_executor_config(args.config)
        if args.command == "serve":
            asyncio.run(serve(cfg, args.ready_file))
        else:
            print("ok")  # noqa: T201 - the check command's answer
    except ConfigError as exc:
        print(f"executor: {exc}", file=sys.stderr)  # noqa: T201 - config errors go to the operator
        return 2
    return 0
