"""Issue 16's network rule for the desktop, on the real stack (gateway, OPA,
the executor on Docker with its egress proxy, the desktop image): the
browser reaches nothing without an egress grant, and with one it reaches
only the allowlisted host, through the proxy.

Traffic goes only to what this module starts: an upstream container on a
Docker network of its own that serves a page painted green and records
every request. Without a grant is the shared stack (the shipped registry,
whose `computer` has no network). With one is this module's stack: its
proxy's hosts table maps a.allowed.test and b.unlisted.test to the upstream,
and its `computer` (the shipped entry, the only computer_call tool a
registry may have) allowlists a.allowed.test:8080 and opens the upstream's
private subnet with egress_allow_cidrs. The model's way to a URL is the local page's address field
(deploy/images/desktop/index.html: x 450..1000, y 200..250, Enter opens an
http(s) URL): the kiosk browser has no address bar.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from fixtures.png import Image, decode_png
from helpers import Stack, make_certs, new_home, start_stack, stop_stack

from airlock import agent

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
UPSTREAM_IMAGE = "airlock/sandbox-python:4"
GREEN = (0, 255, 0)
#: The page's target area (index.html), and all of it once the green page loaded.
SCREEN = (0, 300, 1024, 768)

UPSTREAM = r"""
import http.server, json, socketserver
seen = []
PAGE = b'<!DOCTYPE html><html><body style="margin:0;background:#00ff00"></body></html>'
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/seen":
            body, kind = json.dumps(seen).encode(), "application/json"
        else:
            seen.append([self.headers.get("Host", ""), self.path])
            body, kind = PAGE, "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
import os, ssl, threading
open("/tmp/c.pem", "w").write(os.environ["CERT"])
open("/tmp/k.pem", "w").write(os.environ["KEY"])
tls = S(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tmp/c.pem", "/tmp/k.pem")
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
S(("0.0.0.0", 8080), H).serve_forever()
"""


@dataclass(frozen=True)
class Upstream:
    ip: str
    subnet: str
    ca: str

    def seen(self) -> list[list[str]]:
        with urllib.request.urlopen(f"http://{self.ip}:8080/seen", timeout=5) as r:
            return [s for s in json.loads(r.read()) if s[1] != "/ready"]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    certs = make_certs(tmp_path_factory.mktemp("desktop-certs"), "DNS:a.allowed.test")
    client = docker.from_env()
    tag = secrets.token_hex(4)
    network = client.networks.create(
        f"airlock-test-desktop-{tag}", driver="bridge", labels={"airlock.test": "desktop-egress"}
    )
    container = None
    try:
        container = client.containers.run(
            UPSTREAM_IMAGE,
            ["python3", "-c", UPSTREAM],
            name=f"airlock-test-desktop-{tag}",
            detach=True,
            network=network.name,
            labels={"airlock.test": "desktop-egress"},
            environment={"CERT": (certs / "server.pem").read_text(), "KEY": (certs / "server.key").read_text()},
        )
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        network.reload()
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{ip}:8080/ready", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield Upstream(ip, subnet, (certs / "ca.pem").read_text())
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()
        client.close()


@pytest.fixture(scope="module")
def dstack(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("desktop-egress")
    registry = yaml.safe_load((REPO / "deploy" / "tool_registry.yaml").read_text())
    registry["tools"]["computer"] = {
        **registry["tools"]["computer"],
        "description": "The desktop, granted a.allowed.test through the egress proxy.",
        "allowed_network": True,
        "egress_allowlist": ["a.allowed.test:8080", "a.allowed.test:8443"],
        "egress_allow_cidrs": [upstream.subnet],
        # HTTPS, inspected: chromium must trust the executor's egress CA.
        "egress_http": {"a.allowed.test:8443": {"inspect": True}},
    }
    (folder / "tool_registry.yaml").write_text(yaml.safe_dump(registry))
    policies = folder / "policies"
    shutil.copytree(REPO / "policies", policies)
    grants_file = policies / "airlock" / "grants" / "data.yaml"
    grants = yaml.safe_load(grants_file.read_text())
    default = grants["profiles"]["default"]
    default["network"] = True
    grants_file.write_text(yaml.safe_dump(grants))
    # The upstream's CA, for the proxy's side of the inspected connection:
    # a file the executor's uid can read.
    shared = Path(tempfile.mkdtemp(prefix="airlock-desktop-"))
    shared.chmod(0o755)
    anchor = shared / "upstream-ca.pem"
    anchor.write_text(upstream.ca)
    anchor.chmod(0o644)
    egress = {
        "connect_timeout": "3s",
        "hosts": {"a.allowed.test": [upstream.ip], "b.unlisted.test": [upstream.ip]},
        "trust_anchors": [str(anchor)],
    }
    (folder / "egress.yaml").write_text(yaml.safe_dump(egress))
    stack = start_stack(
        new_home("desktop-egress"),
        "--registry", str(folder / "tool_registry.yaml"),
        "--policies", str(policies),
        "--egress-config", str(folder / "egress.yaml"),
    )  # fmt: skip
    yield stack
    code, out = stop_stack(stack)
    shutil.rmtree(shared, ignore_errors=True)
    assert code == 0, out


def browse(stack: Stack, tool: str, url: str) -> tuple[agent.ToolResult, Image, dict[str, Any]]:
    """In a new session of ``tool``: open ``url`` from the page's address
    field, wait 3 s, and take the screenshot; ends the session."""
    session = f"desk-net-{uuid.uuid4().hex[:8]}"
    actions = [
        {"type": "click", "x": 700, "y": 225, "button": "left"},
        {"type": "type", "text": url},
        {"type": "keypress", "keys": ["ENTER"]},
        {"type": "wait"},
        {"type": "wait"},
        {"type": "wait"},
    ]
    with agent.GatewayClient(stack.gateway, stack.token, timeout_s=120) as gateway:
        try:
            result = gateway.invoke("c1", "computer_call", tool, json.dumps({"actions": actions}), session)
            assert result.allowed, result.reasons
            assert result.outcome == "ok", (result.error, result.stderr[-1000:])
            container = docker.from_env().api.inspect_container(result.run.sandbox.container_id)  # type: ignore[union-attr]
        finally:
            gateway.end_session(session_id=session)
    image = decode_png(base64.b64decode(result.stdout.strip(), validate=True))
    return result, image, container


def green_share(image: Image) -> float:
    pixels = image.region(*SCREEN, step=16)
    return sum(1 for p in pixels if p == GREEN) / len(pixels)


def execution(stack: Stack, decision_id: str) -> dict[str, Any]:
    (event,) = [e for e in stack.audit_events(decision_id) if e["kind"] == "execution"]
    found: dict[str, Any] = event["execution"]
    return found


def test_without_a_grant_the_browser_reaches_nothing(stack: Stack, upstream: Upstream) -> None:
    # (The shared stack's proxy knows no test name: the address itself.)
    result, image, container = browse(stack, "computer", f"http://{upstream.ip}:8080/no-grant")
    assert container["HostConfig"]["NetworkMode"] == "none"
    assert "AIRLOCK_DESKTOP_PROXY" not in " ".join(container["Config"]["Env"] or [])
    assert green_share(image) < 0.05, "the page loaded with no egress grant"
    assert upstream.seen() == []
    assert not execution(stack, result.decision_id).get("egress")


def test_with_a_grant_the_browser_reaches_the_allowlisted_host_through_the_proxy(
    dstack: Stack, upstream: Upstream
) -> None:
    result, image, container = browse(dstack, "computer", "http://a.allowed.test:8080/granted")
    # On the internal egress network (no route out but the proxy), with the
    # keeper's browser pointed at the proxy, and no credential in its env.
    assert container["HostConfig"]["NetworkMode"] != "none"
    env = container["Config"]["Env"] or []
    assert any(e.startswith("AIRLOCK_DESKTOP_PROXY=http://") and "@" not in e for e in env)
    assert green_share(image) > 0.95, "the allowlisted page did not load"
    assert ["a.allowed.test:8080", "/granted"] in upstream.seen()
    records = execution(dstack, result.decision_id)["egress"]
    assert ("a.allowed.test", True) in {(r["host"], r["allowed"]) for r in records}
    assert (
        dstack.metric(
            "executor", "airlock_executor_egress_connections_total", {"tool": "computer", "outcome": "allowed"}
        )
        >= 1
    )


def test_with_a_grant_an_unlisted_host_is_refused_by_the_proxy(dstack: Stack, upstream: Upstream) -> None:
    result, image, _ = browse(dstack, "computer", "http://b.unlisted.test:8080/unlisted")
    assert green_share(image) < 0.05, "a host outside the allowlist loaded"
    assert not [s for s in upstream.seen() if s[1] == "/unlisted"]
    records = execution(dstack, result.decision_id)["egress"]
    assert ("b.unlisted.test", "host_not_allowed") in {(r["host"], r["reason"]) for r in records}
    assert not [r for r in records if r["allowed"]], records


def test_with_a_grant_an_inspected_https_page_loads_through_the_egress_ca(dstack: Stack, upstream: Upstream) -> None:
    """a.allowed.test:8443 is inspected: the proxy answers chromium with a
    certificate from the executor's CA, which the keeper put into
    chromium's own store, and verifies the upstream itself."""
    result, image, container = browse(dstack, "computer", "https://a.allowed.test:8443/secure")
    mounts = [m["Destination"] for m in container["Mounts"]]
    assert mounts == ["/etc/airlock/egress-trust.pem"]
    assert green_share(image) > 0.95, "the inspected page did not load (does chromium trust the egress CA?)"
    assert ["a.allowed.test:8443", "/secure"] in upstream.seen()
    records = [r for r in execution(dstack, result.decision_id)["egress"] if r["port"] == 8443]
    assert records
    assert all(r["inspected"] for r in records)
    assert "/secure" in [q["path"] for r in records for q in r.get("requests", [])]
