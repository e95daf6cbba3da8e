"""``airlock up``: the local stack in the foreground -- OPA with the published
policies and registry, the executor, then the gateway -- stopped in reverse
order on Ctrl-C or SIGTERM. No agent is started: agents are separate
processes (``airlock call``, ``airlock agent run``) with their own credential.

Started as root, each daemon runs as its own system user (see
airlock/cli/_layout.py for who can read what); started by an ordinary user,
all run as that user, which the banner says. Each daemon runs in its own
session so a terminal's Ctrl-C reaches only us, and we stop them in order:
the gateway first (no new calls), then the executor (in-flight runs finish
and their containers are removed), then OPA.

This module supervises; airlock/cli/_stackconf.py writes the daemons'
configs and secrets, airlock/cli/_publish.py publishes policy.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from airlock.cli import _stackconf
from airlock.cli._bundle_server import BundleServer
from airlock.cli._images import Rescanner
from airlock.cli._images import db_dir as images_db_dir
from airlock.cli._images import scan as scan_images
from airlock.cli._layout import Identity, Layout, LayoutError, ensure_identities
from airlock.cli._paths import DEV_PRINCIPAL, find_opa
from airlock.cli._publish import DevWatcher, publish
from airlock.common.stackfile import Metrics, StackFile, read_stack, write_stack

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


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
    dev: bool = False
    """Publish every policy or registry edit automatically (development only)."""
    rescan_hours: float = 0
    """Scan the registry's images with Trivy at start and every this many hours, then publish; 0: never."""
    trivy_db: Path | None = None
    """The Trivy vulnerability DB folder for those scans (docs/images.md); None: the default."""


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.layout = Layout(opts.home)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.server: BundleServer | None = None
        self.watcher: DevWatcher | None = None
        self.rescanner: Rescanner | None = None

    def _spawn(
        self, name: str, argv: list[str], who: Identity | None, *, env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        """Starts a daemon in its own session, as ``who`` (None: as we are)."""
        if who is None or who.uid == _stackconf.my_uid():
            proc = subprocess.Popen(argv, start_new_session=True, env=env, cwd=cwd, umask=0o077)  # noqa: S603
        else:
            proc = subprocess.Popen(  # noqa: S603 - argv is ours
                argv,
                start_new_session=True,
                env=env,
                cwd=cwd,
                umask=0o077,
                user=who.uid,
                group=who.gid,
                extra_groups=list(who.groups),
            )
        self.procs.append((name, proc))
        return proc

    def _wait_ready(self, name: str, proc: subprocess.Popen[bytes], ready: Path) -> dict[str, object]:
        """The daemon's ready file, once it names the process we started."""
        import json  # noqa: PLC0415 - only here

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{name} exited with status {proc.returncode} during startup")
            if ready.exists():
                info = dict(json.loads(ready.read_text()))
                # Only this run's file counts (it names the pid we started):
                # a stale one would point clients at a port someone else
                # may hold now, and they would send it their tokens.
                if info.get("pid") == proc.pid:
                    return info
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
        raise StackError("opa did not become healthy (no verified bundle activated)")

    def start(self) -> StackFile:
        o = self.opts
        layout = self.layout
        layout.stack_file.unlink(missing_ok=True)
        for stale in (layout.executor_dir / "executor.ready", layout.gateway_dir / "gateway.ready"):
            stale.unlink(missing_ok=True)
        opa = find_opa()
        if opa is None:
            raise StackError("opa not found; run scripts/bootstrap (or set AIRLOCK_OPA)")
        ids = ensure_identities(_stackconf.PRINCIPALS)
        _stackconf.check_reachable(ids, [Path(opa), Path(sys.executable), *_stackconf.code_paths(), o.home.parent])
        secrets = _stackconf.prepare(layout, ids)
        try:
            published = publish(opa, layout, o.policies, o.registry)
        except (RuntimeError, OSError, ValueError) as exc:
            raise StackError(f"the policies or the registry do not build: {exc}") from exc
        # Any local user can connect to loopback: OPA's uid alone is served.
        self.server = BundleServer(layout.bundle, secrets.bundle_token, allowed_uids=(ids.opa.uid,))
        opa_diag = f"127.0.0.1:{o.opa_port or _stackconf.free_port()}"
        opa_argv = _stackconf.write_opa_files(
            opa, layout, ids, secrets, bundle_url=self.server.url, diagnostic=opa_diag
        )
        # An empty environment: opa.runtime().env has nothing to give away.
        opa_proc = self._spawn("opa", opa_argv, ids.opa, env={}, cwd=layout.opa_dir)
        self._wait_opa(opa_proc, f"http://{opa_diag}")
        if o.dev:
            self.watcher = DevWatcher(opa, layout, o.policies, o.registry, revision=published.revision)
        _stackconf.write_executor_config(layout, ids, o.executor_metrics, o.egress_config)
        # The executor drops to its user through setpriv (it keeps
        # CAP_NET_ADMIN for its firewall rules), so it is spawned as we are.
        ex = self._spawn(
            "executor",
            _stackconf.executor_argv(layout, ids),
            None,
            env=_stackconf.daemon_env(layout.executor_dir),
            cwd=layout.executor_dir,
        )
        ex_info = self._wait_ready("executor", ex, layout.executor_dir / "executor.ready")
        _stackconf.write_gateway_config(
            layout, ids, listen=o.gateway_listen, metrics_listen=o.gateway_metrics, opa_timeout_ms=o.opa_timeout_ms
        )
        gw = self._spawn(
            "gateway",
            [
                sys.executable,
                "-m",
                "airlock.gateway",
                "serve",
                "--config",
                str(layout.gateway_dir / "gateway.yaml"),
                "--ready-file",
                str(layout.gateway_dir / "gateway.ready"),
            ],
            ids.gateway,
            env=_stackconf.daemon_env(layout.gateway_dir),
            cwd=layout.gateway_dir,
        )
        gw_info = self._wait_ready("gateway", gw, layout.gateway_dir / "gateway.ready")
        egress = ex_info.get("egress", {})
        stack = StackFile(
            gateway=str(gw_info["listen"]),
            opa=f"http://{opa_diag}",
            opa_socket=str(layout.opa_socket),
            policy_revision=published.revision,
            shadow=_stackconf.shadow_status(layout, secrets.opa_token),
            metrics=Metrics(
                gateway=str(gw_info["metrics"]), executor=str(ex_info["metrics"]), opa=f"http://{opa_diag}/metrics"
            ),
            audit_log=str(layout.audit_log),
            audit_public_key=str(layout.audit_public_key),
            executor_socket=str(ex_info.get("socket", layout.executor_socket)),
            principal=DEV_PRINCIPAL,
            principals=_stackconf.principals(layout, ids),
            pids={name: p.pid for name, p in self.procs},
            separated=ids.separated,
            dev=o.dev,
            gateway_uid=ids.gateway.uid,
            egress={str(k): str(v) for k, v in egress.items()} if isinstance(egress, dict) else {},
        )
        write_stack(layout.stack_file, stack)
        # Rescans publish too: started once the stack is up, so each publish
        # waits for OPA to decide with the new scans.
        if o.rescan_hours > 0:
            db = images_db_dir(o.home, o.trivy_db)
            self.rescanner = Rescanner(
                o.rescan_hours * 3600,
                lambda: scan_images(o.home, o.registry, db),
                lambda: publish(opa, layout, o.policies, o.registry),
            )
        return stack

    def stop(self) -> None:
        if self.rescanner is not None:
            self.rescanner.stop()
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
        self.layout.stack_file.unlink(missing_ok=True)
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


def print_summary(stack: StackFile) -> None:
    m = stack.metrics
    who = (
        "separate users (airlock-gateway, airlock-executor, airlock-opa; agents as airlock-agent, ...)"
        if stack.separated
        else "ONE user for everything (start as root to separate the trust domains)"
    )
    policy = "edits are published automatically (--dev)" if stack.dev else "publish changes: airlock policy publish"
    lines = [
        "airlock up: stack is running; Ctrl-C stops it",
        f"  gateway    {stack.gateway}  (gRPC: airlock.v1.GatewayService, health, reflection)",
        f"  opa        unix:{stack.opa_socket}  (gateway only; policy revision {stack.policy_revision}, signed bundle)",
        f"  policy     {policy}",
        f"  shadow     {stack.shadow}",
        f"  executor   unix:{stack.executor_socket}  (gateway only)",
        f"  egress     {_egress_line(stack.egress)}",
        f"  users      {who}",
        "  metrics",
        f"    gateway  {m.gateway}",
        f"    executor {m.executor}",
        f"    opa      {m.opa}",
        f"  audit log  {stack.audit_log}  (verify: airlock audit verify --public-key {stack.audit_public_key})",
        f"  agents     {', '.join(f'{p} ({v.profile}, user {v.user})' for p, v in stack.principals.items())}",
        """  try        airlock call python '{"code": "print(2+2)"}'""",
    ]
    print("\n".join(lines), flush=True)


def _egress_line(egress: dict[str, str]) -> str:
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
        print_summary(info)
        code = stack.wait()
    except (StackError, LayoutError, RuntimeError, OSError, ValueError) as exc:
        print(f"airlock up: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    finally:
        stack.stop()
    print("airlock up: stopped", flush=True)
    return code


__all__ = ["StackError", "UpOptions", "read_stack", "run_up"]
