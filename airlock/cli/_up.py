"""``airlock up``: the local stack in the foreground -- OPA with the bundled
policies and registry, the executor, then the gateway -- stopped in reverse
order on Ctrl-C or SIGTERM.

Each daemon runs in its own session so a terminal's Ctrl-C reaches only us,
and we can stop them in order: the gateway first (no new calls), then the
executor (in-flight runs finish and their containers are removed), then OPA.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import yaml

from airlock.cli._bundle import build_bundle
from airlock.cli._paths import DEV_PRINCIPAL, DEV_PROFILE, find_opa

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
UNTRUSTED_PRINCIPAL = "dev-untrusted"


@dataclass(frozen=True)
class UpOptions:
    home: Path
    policies: Path
    registry: Path
    gateway_listen: str
    opa_port: int
    gateway_metrics: str
    executor_metrics: str
    opa_timeout_ms: int


class StackError(RuntimeError):
    pass


def _token(path: Path) -> str:
    """Creates a 0600 random token once; later runs reuse it."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text(encoding="utf-8").strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text("# Written by `airlock up`; edits are overwritten.\n" + yaml.safe_dump(data, sort_keys=False))


class Stack:
    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, start_new_session=True)  # noqa: S603 - argv is ours
        self.procs.append((name, proc))
        return proc

    def _wait_ready(self, name: str, proc: subprocess.Popen[bytes], ready: Path) -> dict[str, Any]:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with status {proc.returncode} during startup")
            if ready.exists():
                return dict(json.loads(ready.read_text()))
            time.sleep(0.05)
        raise StackError(f"{name} did not become ready within {STARTUP_TIMEOUT_S:.0f} s")

    def _wait_opa(self, proc: subprocess.Popen[bytes], url: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"opa exited with status {proc.returncode} during startup")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{url}/health?bundles", timeout=1) as resp,  # noqa: S310 - loopback
            ):
                if resp.status == HTTPStatus.OK:
                    return
            time.sleep(0.05)
        raise StackError("opa did not become healthy")

    def start(self) -> dict[str, Any]:
        o = self.opts
        home = o.home
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        run_dir = home / "run"
        for stale in ("executor.ready", "gateway.ready", "stack.json"):
            (home / stale).unlink(missing_ok=True)
        opa = find_opa()
        if opa is None:
            raise StackError("opa not found; run scripts/bootstrap (or set AIRLOCK_OPA)")
        _token(home / "agent.token")
        _token(home / "agent-untrusted.token")
        _token(home / "executor.token")
        _token(home / "audit.key")
        bundle = build_bundle(opa, o.policies, o.registry, home / "bundle.tar.gz")

        opa_port = o.opa_port or _free_port()
        opa_url = f"http://127.0.0.1:{opa_port}"
        _write_yaml(
            home / "executor.yaml",
            {
                "version": 1,
                "socket": str(run_dir / "executor.sock"),
                "token_file": str(home / "executor.token"),
                "metrics_listen": o.executor_metrics,
                # runsc is used only by tools that ask for it, and only if
                # Docker has it registered (scripts/bootstrap does that).
                "runtimes": ["runc", "runsc"],
            },
        )
        _write_yaml(
            home / "gateway.yaml",
            {
                "version": 1,
                "listen": o.gateway_listen,
                "metrics_listen": o.gateway_metrics,
                "registry": str(o.registry.resolve()),
                "opa": {"url": opa_url, "timeout_ms": o.opa_timeout_ms},
                "executor": {"socket": str(run_dir / "executor.sock"), "token_file": str(home / "executor.token")},
                "audit": {"path": str(home / "audit.jsonl"), "key_file": str(home / "audit.key")},
                "agents": [
                    {"id": DEV_PRINCIPAL, "profile": DEV_PROFILE, "token_file": str(home / "agent.token")},
                    {
                        "id": UNTRUSTED_PRINCIPAL,
                        "profile": "untrusted",
                        "token_file": str(home / "agent-untrusted.token"),
                    },
                ],
            },
        )
        opa_proc = self._spawn(
            "opa",
            [
                opa,
                "run",
                "--server",
                "--addr",
                f"127.0.0.1:{opa_port}",
                "--log-level",
                "error",
                "--bundle",
                str(bundle.path),
            ],
        )
        self._wait_opa(opa_proc, opa_url)
        ex = self._spawn(
            "executor",
            [
                sys.executable,
                "-m",
                "executor",
                "serve",
                "--config",
                str(home / "executor.yaml"),
                "--ready-file",
                str(home / "executor.ready"),
            ],
        )
        ex_info = self._wait_ready("executor", ex, home / "executor.ready")
        gw = self._spawn(
            "gateway",
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--config",
                str(home / "gateway.yaml"),
                "--ready-file",
                str(home / "gateway.ready"),
            ],
        )
        gw_info = self._wait_ready("gateway", gw, home / "gateway.ready")
        stack = {
            "gateway": gw_info["listen"],
            "opa": opa_url,
            "policy_revision": bundle.revision,
            "metrics": {"gateway": gw_info["metrics"], "executor": ex_info["metrics"], "opa": f"{opa_url}/metrics"},
            "audit_log": gw_info["audit"],
            "executor_socket": ex_info["socket"],
            "token_file": str(home / "agent.token"),
            "principal": DEV_PRINCIPAL,
            "pids": {name: p.pid for name, p in self.procs},
        }
        tmp = home / "stack.json.tmp"
        tmp.write_text(json.dumps(stack, indent=2) + "\n")
        tmp.replace(home / "stack.json")
        return stack

    def stop(self) -> None:
        # Reverse start order: gateway, executor, OPA.
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print(f"airlock up: {name} did not stop in {STOP_TIMEOUT_S:.0f} s; killing", file=sys.stderr)
                    proc.kill()
                    proc.wait()
        (self.opts.home / "stack.json").unlink(missing_ok=True)

    def wait(self) -> int:
        """Blocks until a signal arrives (0) or a daemon dies (1)."""
        stop = {"signal": 0}

        def on_signal(signum: int, _frame: object) -> None:
            stop["signal"] = signum

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        while not stop["signal"]:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    print(f"airlock up: {name} exited with status {proc.returncode}; stopping", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0


def print_summary(stack: dict[str, Any], home: Path) -> None:
    m = stack["metrics"]
    digest = hashlib.sha256((home / "agent.token").read_bytes().strip()).hexdigest()[:8]
    lines = [
        "airlock up: stack is running; Ctrl-C stops it",
        f"  gateway    {stack['gateway']}  (gRPC: airlock.v1.GatewayService, health, reflection)",
        f"  opa        {stack['opa']}  (policy revision {stack['policy_revision']})",
        f"  executor   unix:{stack['executor_socket']}  (gateway only)",
        "  metrics",
        f"    gateway  {m['gateway']}",
        f"    executor {m['executor']}",
        f"    opa      {m['opa']}",
        f"  audit log  {stack['audit_log']}",
        f"  agent      {stack['principal']} (profile default), token {stack['token_file']} (sha256 {digest}…)",
        """  try        airlock call python '{"code": "print(2+2)"}'""",
    ]
    print("\n".join(lines), flush=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_up(opts: UpOptions) -> int:
    stack = Stack(opts)
    # Until our handlers are installed, a signal must still stop the children.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        info = stack.start()
        print_summary(info, opts.home)
        code = stack.wait()
    except (StackError, RuntimeError, OSError, ValueError) as exc:
        print(f"airlock up: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    finally:
        stack.stop()
    print("airlock up: stopped", flush=True)
    return code
