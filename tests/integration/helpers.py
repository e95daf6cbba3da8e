"""Helpers to start and reach a real `airlock up` stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.rpc import status_pb2
from prometheus_client.parser import text_string_to_metric_families

from airlock.v1 import call_pb2

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stack:
    home: Path
    info: dict[str, Any]
    proc: subprocess.Popen[bytes]

    @property
    def gateway(self) -> str:
        return str(self.info["gateway"])

    @property
    def token(self) -> str:
        return (self.home / "agent.token").read_text().strip()

    @property
    def untrusted_token(self) -> str:
        return (self.home / "agent-untrusted.token").read_text().strip()

    @property
    def executor_token(self) -> str:
        return (self.home / "executor.token").read_text().strip()

    @property
    def audit_path(self) -> Path:
        return Path(self.info["audit_log"])

    def metric(self, component: str, name: str, labels: dict[str, str] | None = None) -> float:
        return scrape(self.info["metrics"][component], name, labels)

    def audit_events(self, decision_id: str | None = None) -> list[dict[str, Any]]:
        events = [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]
        if decision_id is not None:
            events = [e for e in events if e["decision_id"] == decision_id]
        return events


def scrape(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample's value from a live /metrics endpoint (0 when absent)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    want = labels or {}
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()):
                total += sample.value
    return total


def start_stack(home: Path, *extra: str) -> Stack:
    """Starts `airlock up` with free ports and waits for its stack.json."""
    env = {**os.environ, "AIRLOCK_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "airlock.cli", "up",
            "--gateway-listen", "127.0.0.1:0",
            "--opa-port", "0",
            "--gateway-metrics", "127.0.0.1:0",
            "--executor-metrics", "127.0.0.1:0",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    stack_file = home / "stack.json"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"airlock up exited with {proc.returncode}:\n{out}")
        if stack_file.exists():
            return Stack(home, json.loads(stack_file.read_text()), proc)
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("airlock up did not start within 90 s")


def stop_stack(stack: Stack, sig: int = signal.SIGTERM) -> tuple[int, str]:
    stack.proc.send_signal(sig)
    try:
        out, _ = stack.proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        stack.proc.kill()
        out, _ = stack.proc.communicate()
    return stack.proc.returncode, out.decode() if out else ""


def tool_call(
    tool: str, arguments: str, call_id: str = "call_test_1", item_type: int = call_pb2.ITEM_TYPE_FUNCTION_CALL
) -> call_pb2.ToolCall:
    return call_pb2.ToolCall(call_id=call_id, item_type=item_type, tool=tool, arguments=arguments)


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def decision_from_error(exc: grpc.RpcError) -> call_pb2.Decision:
    """The Decision the gateway attaches to a refusal (google.rpc.Status details)."""
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            decision = call_pb2.Decision()
            assert status.details[0].Unpack(decision)
            return decision
    raise AssertionError("no decision attached to the error status")


def start_daemon(module: str, config: dict[str, Any], folder: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Writes ``config`` as YAML, runs ``python -m <module> serve`` and
    returns the process and its ready-file contents."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / f"{module}.yaml"
    cfg.write_text(yaml.safe_dump({"version": 1, **config}))
    ready = folder / f"{module}.ready"
    proc = subprocess.Popen([sys.executable, "-m", module, "serve", "--config", str(cfg), "--ready-file", str(ready)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited with {proc.returncode} during startup")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{module} did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def stop_daemon(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    return proc.wait(30)


def make_certs(folder: Path, server_san: str = "DNS:localhost,IP:127.0.0.1") -> Path:
    """A throwaway CA, a server certificate (for localhost/127.0.0.1 unless
    server_san says otherwise), client certificates, and one client
    certificate from an unrelated CA."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    def ca(name: str) -> None:
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}")  # fmt: skip

    def leaf(name: str, cn: str, signer: str, san: str) -> None:
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")  # fmt: skip
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{signer}.pem", "-CAkey", f"{signer}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")  # fmt: skip

    ca("ca")
    ca("rogue-ca")
    leaf("server", "localhost", "ca", server_san)
    leaf("gateway-client", "airlock-gateway", "ca", "DNS:airlock-gateway")
    leaf("agent", "agent-mtls", "ca", "DNS:agent-mtls")
    leaf("rogue", "agent-mtls", "rogue-ca", "DNS:agent-mtls")
    return folder
