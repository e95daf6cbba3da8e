"""Helpers to start and reach a real `airlock up` stack."""

from __future__ import annotations

import hashlib
import json
import pwd
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from prometheus_client.parser import text_string_to_metric_families

from airlock.cli._launch import launch, stop
from airlock.cli._layout import Layout
from airlock.cli._stackconf import opa_query
from airlock.common import auditlog
from airlock.common.client import decision_from_error as client_decision_from_error
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
    def layout(self) -> Layout:
        return Layout(self.home)

    @property
    def token_file(self) -> Path:
        return self.layout.agent_token("dev-agent")

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def untrusted_token(self) -> str:
        return self.layout.agent_token("dev-untrusted").read_text().strip()

    @property
    def executor_token(self) -> str:
        return (self.layout.executor_dir / "executor.token").read_text().strip()

    @property
    def executor_token_file(self) -> Path:
        return self.layout.gateway_dir / "executor.token"

    @property
    def opa_token(self) -> str:
        return (self.layout.gateway_dir / "opa.token").read_text().strip()

    def opa_query(self, path: str, input_doc: Any = None) -> Any:
        """A data query over OPA's socket with the gateway's token (as root)."""
        return opa_query(self.layout, self.opa_token, path, input_doc)

    @property
    def audit_path(self) -> Path:
        return Path(self.info["audit_log"])

    def metric(self, component: str, name: str, labels: dict[str, str] | None = None) -> float:
        return scrape(self.info["metrics"][component], name, labels)

    def audit_events(self, decision_id: str | None = None) -> list[dict[str, Any]]:
        # The gateway may be writing a line right now: only whole lines count.
        text = self.audit_path.read_text()
        whole = text[: text.rfind("\n") + 1]
        events = [json.loads(line) for line in whole.split("\n") if line.strip()]
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


#: Stack homes live here, not under pytest's tmp_path (/tmp/pytest-of-root is
#: 0700): the service users must be able to reach their folders.
HOMES = Path("/tmp/airlock-tests")


def new_home(prefix: str = "home") -> Path:
    """A fresh stack home the service users can traverse to."""
    HOMES.mkdir(mode=0o711, exist_ok=True)
    HOMES.chmod(0o711)
    home = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=HOMES))
    home.chmod(0o755)
    return home


def start_stack(home: Path, *extra: str) -> Stack:
    """Starts `airlock up` with free ports and waits for its stack.json."""
    running = launch(home, *extra)
    return Stack(home, running.info.as_dict(), running.proc)


def stop_stack(stack: Stack, sig: int = signal.SIGTERM) -> tuple[int, str]:
    return stop(stack.proc, sig)


def tool_call(
    tool: str, arguments: str, call_id: str = "call_test_1", item_type: int = call_pb2.ITEM_TYPE_FUNCTION_CALL
) -> call_pb2.ToolCall:
    return call_pb2.ToolCall(call_id=call_id, item_type=item_type, tool=tool, arguments=arguments)


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def decision_from_error(exc: grpc.RpcError) -> call_pb2.Decision:
    """The Decision the gateway attaches to a refusal (google.rpc.Status details)."""
    decision = client_decision_from_error(exc)
    if decision is None:
        raise AssertionError("no decision attached to the error status")
    return decision


def private_copy(data: str | bytes, path: Path) -> Path:
    """A secret file as the daemons require it: ours, mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(0o600)
    return path


def make_gateway_config(folder: Path, stack: Stack, **overrides: Any) -> dict[str, Any]:
    """A gateway.yaml for a second gateway the test runs itself (as root):
    its own copy of the executor token, its own audit key and log, and the
    stack's agents by token digest."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    key = folder / "audit-signing.pem"
    if not key.exists():
        auditlog.generate_signing_key(key, folder / "audit-signing.pub")
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "registry": str(REPO / "deploy" / "tool_registry.yaml"),
        "opa": {
            "url": f"unix://{stack.info['opa_socket']}",
            "token_file": str(private_copy(stack.opa_token, folder / "opa.token")),
        },
        "executor": {
            "socket": stack.info["executor_socket"],
            "token_file": str(private_copy(stack.executor_token, folder / "executor.token")),
        },
        "audit": {"path": str(folder / "audit" / "audit.jsonl"), "signing_key_file": str(key)},
        "agents": [
            {"id": "dev-agent", "profile": "default", "token_sha256": hashlib.sha256(stack.token.encode()).hexdigest()}
        ],
    }
    (folder / "audit").mkdir(mode=0o700, exist_ok=True)
    for key_name, value in overrides.items():
        if key_name in ("opa", "audit", "limits") and isinstance(value, dict):
            config[key_name] = {**config[key_name], **value}
        else:
            config[key_name] = value
    return config


def start_daemon(module: str, config: dict[str, Any], folder: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Writes ``config`` as YAML, runs ``python -m <module> serve`` and
    returns the process and its ready-file contents."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / f"{module}.yaml"
    cfg.write_text(yaml.safe_dump({"version": 1, **config}))
    ready = folder / f"{module}.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", f"airlock.{module}", "serve", "--config", str(cfg), "--ready-file", str(ready)]
    )
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


CERT_AGENT_URI = "spiffe://airlock/agent/cert-agent"


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
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=" + cn.replace("/", "\\/"))  # fmt: skip
        (folder / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{signer}.pem", "-CAkey", f"{signer}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext")  # fmt: skip

    ca("ca")
    ca("rogue-ca")
    leaf("server", "localhost", "ca", server_san)
    leaf("gateway-client", "airlock-gateway", "ca", "DNS:airlock-gateway")
    # Agents are named by a URI SAN only; "agent-cn" names the agent in its
    # CN and a DNS SAN, which must not count.
    leaf("agent", "agent-mtls", "ca", f"URI:{CERT_AGENT_URI}")
    leaf("agent-cn", CERT_AGENT_URI, "ca", "DNS:agent-mtls")
    leaf("rogue", "agent-mtls", "rogue-ca", f"URI:{CERT_AGENT_URI}")
    return folder


def run_as(user: str, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Python code as ``user``, with no supplementary groups, from /: what a
    process of that trust domain can do."""
    pw = pwd.getpwnam(user)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
