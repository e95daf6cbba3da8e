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
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import yaml

from airlock.cli._bundle import build_bundle, fingerprint
from airlock.cli._paths import DEV_PRINCIPAL, DEV_PROFILE, find_opa

STARTUP_TIMEOUT_S = 60.0
#: How often policy files and the registry are checked for edits.
WATCH_INTERVAL_S = 1.0
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
    egress_config: Path | None = None
    """A YAML file with the executor's egress section (limits, hosts); None = defaults."""


class StackError(RuntimeError):
    pass


def _token(path: Path) -> str:
    """Creates a 0600 random token once; later runs reuse it."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text(encoding="utf-8").strip()


def _signing_key(home: Path) -> Path:
    """An RSA key pair for signing policy bundles; OPA gets only the public half."""
    key = home / "bundle-signing.pem"
    pub = key.with_suffix(".pub")
    if not key.exists():
        subprocess.run(  # noqa: S603 - fixed argv
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],  # noqa: S607
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)
    if not pub.exists():
        subprocess.run(  # noqa: S603 - fixed argv
            ["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)],  # noqa: S607
            check=True,
            capture_output=True,
        )
    return key


def _opa_config(bundle_url: str, public_key: Path) -> dict[str, Any]:
    """OPA pulls the bundle like it would from a bundle server in production:
    polling with ETags, verifying the signature, activating atomically, and
    keeping the last good bundle when a new one does not verify."""
    return {
        "services": {"airlock": {"url": bundle_url}},
        "bundles": {
            "airlock": {
                "service": "airlock",
                "resource": "bundle.tar.gz",
                "persist": False,
                "polling": {"min_delay_seconds": 1, "max_delay_seconds": 2},
                "signing": {"keyid": "airlock"},
            }
        },
        "keys": {"airlock": {"algorithm": "RS256", "key": public_key.read_text()}},
    }


def _shadow_status(opa_url: str) -> str:
    """What the active policy reports as report-only, for the startup banner."""
    try:
        with urllib.request.urlopen(f"{opa_url}/v1/data/airlock/config/shadow", timeout=5) as resp:  # noqa: S310 - loopback
            shadow = json.load(resp).get("result")
    except (OSError, ValueError):
        return "unknown (could not read data.airlock.config.shadow)"
    if not isinstance(shadow, dict):
        return "off"
    if shadow.get("all"):
        return "ON for every deny (report only: nothing is enforced by policy)"
    parts = [f"{key} {shadow[key]}" for key in ("packages", "codes") if shadow.get(key)]
    return "report only for " + ", ".join(parts) if parts else "off"


class BundleServer:
    """Serves the bundle file to OPA on loopback, with an ETag so OPA only
    downloads and activates a bundle that changed."""

    def __init__(self, bundle: Path) -> None:
        target = bundle

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != f"/{target.name}":
                    self.send_error(404)
                    return
                data = target.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bundle-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class BundleWatcher:
    """Rebuilds and re-signs the bundle when a policy file or the registry
    changes. A change that does not build (bad Rego, invalid registry) is
    reported and the last good bundle keeps serving."""

    def __init__(self, opa: str, policies: Path, registry: Path, out: Path, key: Path, *, revision: str) -> None:
        self._args = (opa, policies, registry, out, key)
        self._seen = fingerprint(policies, registry)
        self.revision = revision
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bundle-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        opa, policies, registry, out, key = self._args
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                now = fingerprint(policies, registry)
            except OSError:
                continue
            if now == self._seen:
                continue
            self._seen = now
            try:
                bundle = build_bundle(opa, policies, registry, out, key)
            except (RuntimeError, OSError, ValueError) as exc:
                print(f"airlock up: policy change NOT published (last good bundle stays): {exc}", flush=True)
                continue
            if bundle.revision != self.revision:
                self.revision = bundle.revision
                print(f"airlock up: published policy bundle {bundle.revision}", flush=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_yaml(path: Path) -> Any:
    # Checked by the executor's own typed loader when it starts.
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.write_text("# Written by `airlock up`; edits are overwritten.\n" + yaml.safe_dump(data, sort_keys=False))


class Stack:
    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.server: BundleServer | None = None
        self.watcher: BundleWatcher | None = None

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
        signing_key = _signing_key(home)
        bundle_file = home / "bundles" / "bundle.tar.gz"
        self.bundle = build_bundle(opa, o.policies, o.registry, bundle_file, signing_key)
        self.server = BundleServer(bundle_file)
        opa_config = home / "opa.yaml"
        _write_yaml(opa_config, _opa_config(self.server.url, signing_key.with_suffix(".pub")))

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
                **({"egress": _read_yaml(o.egress_config)} if o.egress_config else {}),
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
                "--config-file",
                str(opa_config),
            ],
        )
        self._wait_opa(opa_proc, opa_url)
        self.watcher = BundleWatcher(
            opa, o.policies, o.registry, bundle_file, signing_key, revision=self.bundle.revision
        )
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
            "policy_revision": self.bundle.revision,
            "shadow": _shadow_status(opa_url),
            "metrics": {"gateway": gw_info["metrics"], "executor": ex_info["metrics"], "opa": f"{opa_url}/metrics"},
            "audit_log": gw_info["audit"],
            "executor_socket": ex_info["socket"],
            "egress": ex_info.get("egress", {}),
            "token_file": str(home / "agent.token"),
            "principal": DEV_PRINCIPAL,
            # Which credential authenticates as whom (`--principal` picks one);
            # the gateway still decides identity from the token alone.
            "principals": {
                DEV_PRINCIPAL: str(home / "agent.token"),
                UNTRUSTED_PRINCIPAL: str(home / "agent-untrusted.token"),
            },
            "pids": {name: p.pid for name, p in self.procs},
        }
        tmp = home / "stack.json.tmp"
        tmp.write_text(json.dumps(stack, indent=2) + "\n")
        tmp.replace(home / "stack.json")
        return stack

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
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
        if self.server is not None:
            self.server.stop()

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
        f"  opa        {stack['opa']}  (policy revision {stack['policy_revision']}; signed bundle, hot reload)",
        f"  shadow     {stack['shadow']}",
        f"  executor   unix:{stack['executor_socket']}  (gateway only)",
        f"  egress     {_egress_line(stack.get('egress', {}))}",
        "  metrics",
        f"    gateway  {m['gateway']}",
        f"    executor {m['executor']}",
        f"    opa      {m['opa']}",
        f"  audit log  {stack['audit_log']}",
        f"  agent      {stack['principal']} (profile default), token {stack['token_file']} (sha256 {digest}…)",
        """  try        airlock call python '{"code": "print(2+2)"}'""",
    ]
    print("\n".join(lines), flush=True)


def _egress_line(egress: dict[str, Any]) -> str:
    if "proxy" in egress:
        return f"proxy {egress['proxy']} on internal network {egress['network']} (per-call allowlists)"
    return f"unavailable: {egress.get('unavailable', 'unknown')} (runs granted egress are refused)"


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
