"""Issue 17 on the real stack: TLS inspection, HTTP rules and a secret set at
egress (gateway -> OPA -> executor -> a sandbox on the internal network ->
the executor's egress proxy -> an HTTPS test server).

The upstream is a container this module starts on a Docker network of its
own: HTTPS on 8443 for a.allowed.test and b.allowed.test (one certificate
from a throwaway CA the executor trusts as an extra anchor, `trust_anchors`),
recording every request it gets. The registry's `api` tool allowlists both:
a.allowed.test with rules (GET under /v1/, POST /v1/upload up to 100 bytes)
and the secret `test_token` set as `Authorization: Bearer ...`;
b.allowed.test inspected with no rules and no secret. The secret lives in a
`secrets.yaml` that only the executor's uid can read. The sandbox's clients
are Python's urllib and curl (airlock/sandbox-python has both).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from helpers import Stack, auth, make_certs, new_home, start_stack, stop_stack, tool_call

from airlock.cli._layout import EXECUTOR_USER
from airlock.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
IMAGE = "airlock/sandbox-python:4"
SECRET = "tok-" + secrets.token_hex(16)

UPSTREAM = r"""
import http.server, json, os, socketserver, ssl, threading
seen = []
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, status, body, extra=()):
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/seen":
            return self.answer(200, json.dumps(seen).encode())
        seen.append({"method": "GET", "host": self.headers.get("Host"), "path": self.path,
                     "headers": {k.lower(): v for k, v in self.headers.items()}})
        if self.path.startswith("/v1/redirect"):
            return self.answer(302, b"", [("Location", "https://b.allowed.test:8443/v1/landed")])
        echo = json.dumps({"authorization": self.headers.get("Authorization"), "x-token": self.headers.get("X-Token")})
        self.answer(200, echo.encode(), [("X-Echo", self.headers.get("Authorization") or "none")])
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen.append({"method": "POST", "host": self.headers.get("Host"), "path": self.path, "bytes": len(body),
                     "headers": {k.lower(): v for k, v in self.headers.items()}})
        self.answer(200, str(len(body)).encode())
    def log_message(self, *args):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
open("/tmp/c.pem", "w").write(os.environ["CERT"])
open("/tmp/k.pem", "w").write(os.environ["KEY"])
tls = S(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tmp/c.pem", "/tmp/k.pem")
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
S(("0.0.0.0", 8080), H).serve_forever()
"""

# Runs in the sandbox: each action's result, as one JSON list on stdout.
PROBE = r"""
import glob, json, os, ssl, urllib.error, urllib.request
results = []
for kind, arg in ACTIONS:
    try:
        if kind == "get":
            url, headers, body = arg
            # "$NAME": the sandbox's variable NAME (a placeholder), read here.
            headers = {k: os.environ[v[1:]] if v.startswith("$") else v for k, v in headers.items()}
            request = urllib.request.Request(url, data=body.encode() if body else None, headers=headers,
                                             method="POST" if body else "GET")
            with urllib.request.urlopen(request, timeout=10) as r:
                results.append({"status": r.status, "body": r.read().decode(), "echo": r.headers.get("X-Echo")})
        elif kind == "pinned":
            # A sandbox that trusts only its own CA (the upstream's), not the proxy's.
            ctx = ssl.create_default_context(cadata=arg[1])
            with urllib.request.urlopen(arg[0], timeout=10, context=ctx) as r:
                results.append({"status": r.status})
        elif kind == "env":
            prefixes = ("AIRLOCK_", "SSL_", "REQUESTS_", "CURL_", "NODE_")
            results.append({k: v for k, v in os.environ.items() if k.startswith(prefixes)})
        elif kind == "everything":
            # Every file and /proc entry the sandbox can read, as one text.
            seen = []
            for pattern in ("/proc/*/environ", "/proc/*/cmdline", "/etc/airlock/*", "/tmp/**", "/work/**"):
                for path in glob.glob(pattern, recursive=True):
                    try:
                        seen.append(open(path, "rb").read().decode("latin-1"))
                    except OSError:
                        pass
            results.append("\n".join(seen))
        elif kind == "curl":
            # curl reads HTTPS_PROXY and CURL_CA_BUNDLE from the environment.
            import subprocess
            out = subprocess.run(["curl", "-sS", "-i", arg], capture_output=True, text=True, timeout=20)
            results.append({"code": out.returncode, "out": out.stdout, "err": out.stderr})
        elif kind == "read":
            results.append(open(arg).read())
    except urllib.error.HTTPError as e:
        reason = e.headers.get("X-Airlock-Egress-Reason")
        results.append({"status": e.code, "reason": reason, "body": e.read().decode()})
    except urllib.error.URLError as e:
        results.append({"error": str(e.reason)})
    except OSError as e:
        results.append({"error": type(e).__name__ + ": " + str(e)})
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Upstream:
    ip: str
    subnet: str
    ca: str

    def seen(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://{self.ip}:8080/seen", timeout=5) as r:
            found: list[dict[str, Any]] = json.loads(r.read())
            return found


@dataclass(frozen=True)
class Call:
    decision_id: str
    results: list[Any]
    stdout: str


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    certs = make_certs(
        tmp_path_factory.mktemp("inspect-certs"), "DNS:a.allowed.test,DNS:b.allowed.test,DNS:c.allowed.test"
    )
    client = docker.from_env()
    tag = secrets.token_hex(4)
    network = client.networks.create(f"airlock-test-inspect-{tag}", driver="bridge", labels={"airlock.test": "inspect"})
    container = None
    try:
        container = client.containers.run(
            IMAGE, ["python3", "-c", UPSTREAM], name=f"airlock-test-inspect-{tag}", detach=True, user="0",
            network=network.name, labels={"airlock.test": "inspect"},
            environment={"CERT": (certs / "server.pem").read_text(), "KEY": (certs / "server.key").read_text()},
        )  # fmt: skip
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        network.reload()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{ip}:8080/seen", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield Upstream(ip, network.attrs["IPAM"]["Config"][0]["Subnet"], (certs / "ca.pem").read_text())
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()
        client.close()


@pytest.fixture(scope="module")
def istack(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("inspect-config")
    # Files the executor reads as its own uid: outside pytest's 0700 folders.
    shared = Path(tempfile.mkdtemp(prefix="airlock-inspect-"))
    shared.chmod(0o755)
    anchor = shared / "upstream-ca.pem"
    anchor.write_text(upstream.ca)
    anchor.chmod(0o644)
    secrets_file = shared / "secrets.yaml"
    secrets_file.write_text(yaml.safe_dump({"version": 1, "secrets": {"test_token": SECRET}}))
    secrets_file.chmod(0o600)
    if os.geteuid() == 0:
        executor = pwd.getpwnam(EXECUTOR_USER)
        os.chown(secrets_file, executor.pw_uid, executor.pw_gid)
    limits = {"memory": "128Mi", "pids": 32, "timeout": "30s", "output": "256Ki", "tmpfs": "16Mi"}
    params = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
    registry = {
        "version": 1,
        "tools": {
            "api": {
                "description": "Reaches the test API with a token it never sees.",
                "image": IMAGE,
                "argv": ["python3", "-I", "-u", "-c", "{code}"],
                "parameters": params,
                "limits": limits,
                "allowed_network": True,
                "egress_allowlist": ["a.allowed.test:8443", "b.allowed.test:8443", "c.allowed.test:8443"],
                "egress_allow_cidrs": [upstream.subnet],
                "egress_http": {
                    "a.allowed.test:8443": {
                        "rules": [
                            {"methods": ["GET"], "paths": ["/v1/*"]},
                            {"methods": ["POST"], "paths": ["/v1/upload"], "max_body": 100},
                        ],
                        "secrets": [{"name": "test_token", "header": "Authorization", "format": "Bearer {value}"}],
                    },
                    "b.allowed.test:8443": {"inspect": True},
                },
            }
        },
    }
    (folder / "tool_registry.yaml").write_text(yaml.safe_dump(registry))
    policies = folder / "policies"
    shutil.copytree(REPO / "policies", policies)
    grants = {
        "profiles": {
            "default": {
                "tools": ["api"],
                "network": True,
                "secrets": ["test_token"],
                "limits": {
                    "memory_bytes": 536870912,
                    "cpu_millis": 1000,
                    "pids": 128,
                    "timeout_ms": 30000,
                    "output_bytes": 1048576,
                    "tmpfs_bytes": 67108864,
                },
            }
        },
        "principals": {},
    }
    (policies / "airlock" / "grants" / "data.yaml").write_text(yaml.safe_dump(grants))
    egress = {
        "connect_timeout": "3s",
        "hosts": {n: [upstream.ip] for n in ("a.allowed.test", "b.allowed.test", "c.allowed.test")},
        "trust_anchors": [str(anchor)],
        "secrets_file": str(secrets_file),
        "secrets_env": False,
    }
    (folder / "egress.yaml").write_text(yaml.safe_dump(egress))
    stack = start_stack(
        new_home("inspect"),
        "--registry", str(folder / "tool_registry.yaml"),
        "--policies", str(policies),
        "--egress-config", str(folder / "egress.yaml"),
    )  # fmt: skip
    yield stack
    code, out = stop_stack(stack)
    shutil.rmtree(shared, ignore_errors=True)
    assert code == 0, out


def probe(stack: Stack, actions: list[Any]) -> Call:
    code = f"ACTIONS = {actions!r}\n{PROBE}"
    with grpc.insecure_channel(stack.gateway) as channel:
        resp = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
            gateway_pb2.InvokeRequest(call=tool_call("api", json.dumps({"code": code}), call_id="inspect")),
            metadata=auth(stack.token),
            timeout=120,
        )
    stdout = resp.stdout.decode(errors="replace")
    assert resp.result.outcome == 1 or stdout.strip(), resp.stderr.decode(errors="replace")[-2000:]
    return Call(resp.decision.decision_id, json.loads(stdout) if stdout.strip() else [], stdout)


def egress_records(stack: Stack, decision_id: str) -> list[dict[str, Any]]:
    (event,) = [e for e in stack.audit_events(decision_id) if e["kind"] == "execution"]
    records: list[dict[str, Any]] = event["execution"]["egress"]
    return records


A = "https://a.allowed.test:8443"
B = "https://b.allowed.test:8443"


def test_the_secret_reaches_the_upstream_and_never_the_sandbox(istack: Stack, upstream: Upstream) -> None:
    env = probe(istack, [["env", None]]).results[0]
    placeholder = env["AIRLOCK_SECRET_TEST_TOKEN"]
    assert placeholder.startswith("airlock-secret-")
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == "/etc/airlock/egress-trust.pem"
    call = probe(
        istack,
        [
            ["get", [f"{A}/v1/echo", {}, ""]],
            # Its own placeholder in its own header (replaced by the proxy's
            # value), then in a header of the sandbox's choosing (refused).
            ["get", [f"{A}/v1/echo", {"Authorization": "Bearer $AIRLOCK_SECRET_TEST_TOKEN"}, ""]],
            ["get", [f"{A}/v1/echo", {"X-Token": "$AIRLOCK_SECRET_TEST_TOKEN"}, ""]],
            # A redirect to the other host: followed by urllib, with no secret.
            ["get", [f"{A}/v1/redirect", {}, ""]],
            ["curl", f"{A}/v1/echo"],
            ["everything", None],
        ],
    )
    first, second, misplaced, redirected, curl, everything = call.results
    assert first["status"] == 200
    # Echoed back in the body and a header: the sandbox sees the placeholder.
    assert json.loads(first["body"])["authorization"] == f"Bearer {call_placeholder(call)}"
    assert first["echo"] == f"Bearer {call_placeholder(call)}"
    assert second["status"] == 200
    assert (misplaced["status"], misplaced["reason"]) == (403, "secret_misplaced")
    assert redirected["status"] == 200
    assert curl["code"] == 0, curl["err"]
    assert curl["out"].startswith("HTTP/1.1 200")
    assert f"Bearer {call_placeholder(call)}" in curl["out"]
    assert SECRET not in call.stdout, "the secret reached the sandbox"
    assert SECRET not in everything
    seen = upstream.seen()
    to_a = [s for s in seen if s["host"] == "a.allowed.test:8443"]
    assert to_a
    assert all(s["headers"]["authorization"] == f"Bearer {SECRET}" for s in to_a)
    assert not any("x-token" in s["headers"] for s in to_a)
    # The redirect's target on the other host got no secret at all.
    landed = [s for s in seen if s["path"] == "/v1/landed"]
    assert landed
    assert all("authorization" not in s["headers"] for s in landed)
    assert all(SECRET not in json.dumps(s) for s in seen if s["host"] != "a.allowed.test:8443")
    # Audited by name, never by value; the requests listed one by one.
    records = egress_records(istack, call.decision_id)
    a_records = [r for r in records if r["host"] == "a.allowed.test"]
    assert a_records
    assert all(r["inspected"] for r in a_records)
    requests = [q for r in a_records for q in r["requests"]]
    assert [(q["method"], q["path"], q["status"]) for q in requests][:3] == [
        ("GET", "/v1/echo", 200),
        ("GET", "/v1/echo", 200),
        ("GET", "/v1/echo", 403),
    ]
    assert [q.get("secret_names", []) for q in requests] == [["test_token"]] * 2 + [[]] + [["test_token"]] * 2, requests
    assert SECRET not in istack.audit_path.read_text()


def call_placeholder(call: Call) -> str:
    """The placeholder of this call (each call gets its own)."""
    first = json.loads(call.results[0]["body"])["authorization"]
    return str(first).removeprefix("Bearer ")


def test_a_placeholder_sent_to_another_host_is_refused(istack: Stack, upstream: Upstream) -> None:
    before = len(upstream.seen())
    call = probe(
        istack,
        [
            ["get", [f"{B}/v1/echo", {"X-Token": "not-a-placeholder"}, ""]],
            ["get", [f"{B}/v1/echo", {"X-Token": "$AIRLOCK_SECRET_TEST_TOKEN"}, ""]],
        ],
    )
    plain, carrying = call.results
    assert plain["status"] == 200  # b.allowed.test is inspected, with no rules
    assert (carrying["status"], carrying["reason"]) == (403, "secret_wrong_host")
    assert len(upstream.seen()) == before + 1
    requests = [q for r in egress_records(istack, call.decision_id) for q in r.get("requests", [])]
    assert [q.get("reason", "") for q in requests] == ["", "secret_wrong_host"]
    assert all(not q.get("secret_names") for q in requests)


def test_rules_allow_and_refuse_as_written(istack: Stack, upstream: Upstream) -> None:
    before = len(upstream.seen())
    call = probe(
        istack,
        [
            ["get", [f"{A}/v1/items?page=2", {}, ""]],
            ["get", [f"{A}/admin", {}, ""]],
            ["get", [f"{A}/v1/upload", {}, "x" * 50]],
            ["get", [f"{A}/v1/upload", {}, "x" * 200]],
            ["get", [f"{A}/v1/echo", {}, "x"]],  # POST where only GET is allowed
        ],
    )
    ok, admin, upload, big, post = call.results
    assert ok["status"] == 200
    assert (admin["status"], admin["reason"]) == (403, "request_not_allowed")
    assert upload == {"status": 200, "body": "50", "echo": None}
    assert (big["status"], big["reason"]) == (403, "body_too_large")
    assert (post["status"], post["reason"]) == (403, "request_not_allowed")
    seen = upstream.seen()[before:]
    assert [(s["method"], s["path"]) for s in seen] == [("GET", "/v1/items?page=2"), ("POST", "/v1/upload")]
    requests = [q for r in egress_records(istack, call.decision_id) for q in r.get("requests", [])]
    assert [(q["path"], q.get("reason", "")) for q in requests] == [
        ("/v1/items", ""),
        ("/admin", "request_not_allowed"),
        ("/v1/upload", ""),
        ("/v1/upload", "body_too_large"),
        ("/v1/echo", "request_not_allowed"),
    ]
    assert requests[0]["rule"] == "a.allowed.test:8443#0"
    assert istack.metric("executor", "airlock_executor_egress_requests_total", {"outcome": "body_too_large"}) >= 1


def test_a_sandbox_that_pins_its_own_ca_fails_closed(istack: Stack, upstream: Upstream) -> None:
    before = len(upstream.seen())
    call = probe(istack, [["pinned", [f"{A}/v1/echo", upstream.ca]]])
    assert "CERTIFICATE_VERIFY_FAILED" in call.results[0]["error"]
    assert len(upstream.seen()) == before
    (record,) = egress_records(istack, call.decision_id)
    assert (record["allowed"], record["reason"]) == (False, "client_tls_failed")


def test_an_uninspected_host_passes_through_and_the_ca_key_stays_in_the_executor(
    istack: Stack, upstream: Upstream
) -> None:
    # c.allowed.test is not inspected: TLS end to end, the sandbox verifies
    # the upstream's own certificate (the proxy never sees the plaintext).
    call = probe(istack, [["pinned", ["https://c.allowed.test:8443/v1/echo", upstream.ca]]])
    assert call.results[0] == {"status": 200}
    (record,) = egress_records(istack, call.decision_id)
    assert (record["allowed"], record.get("inspected", False)) == (True, False)
    ca_dir = istack.layout.executor_dir / "egress-ca"
    key = ca_dir / "ca.key"
    assert key.stat().st_mode & 0o077 == 0
    read = probe(istack, [["read", str(key)], ["read", "/etc/airlock/egress-trust.pem"]])
    assert "error" in read.results[0]
    assert "BEGIN CERTIFICATE" in read.results[1]
    assert "PRIVATE KEY" not in read.results[1]
    key_text = key.read_text()
    body = key_text.split("-----")[2].strip().splitlines()[0]
    for path in istack.home.rglob("*"):
        if path.is_file() and path != key and not path.is_relative_to(ca_dir) and path.stat().st_size < 50 << 20:
            text = path.read_bytes().decode("latin-1")
            assert body not in text, f"the CA key is in {path}"
