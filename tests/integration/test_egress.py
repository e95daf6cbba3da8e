"""Egress control on the real stack: gateway -> OPA -> executor -> a sandbox
on the internal network -> the executor's egress proxy -> test servers.

Traffic goes only to servers this module starts: an upstream container
(HTTP on 8080, HTTPS on 8443 with a throwaway CA, a UDP listener on 53 that
records every datagram) on a Docker network of its own, and a listener on
the host. The proxy's static hosts table maps the test names to the upstream
container (and one name to 127.0.0.1), the way /etc/hosts would; the
registry opens the upstream's private subnet with egress_allow_cidrs.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import grpc
import pytest
import yaml
from helpers import Stack, auth, make_certs, new_home, start_stack, stop_stack, tool_call

from airlock.v1 import executor_pb2, gateway_pb2, gateway_pb2_grpc

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
IMAGE = "airlock/sandbox-python:4"
MAX_BYTES_IN = 256 * 1024
MAX_CONNECTIONS = 12
OUTCOME = {v.number: v.name.removeprefix("OUTCOME_").lower() for v in executor_pb2.Outcome.DESCRIPTOR.values}

UPSTREAM = r"""
import http.server, json, os, socket, socketserver, ssl, threading
datagrams = []
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/big":
            body = b"x" * (1024 * 1024)
        elif self.path == "/datagrams":
            body = json.dumps(datagrams).encode()
        else:
            body = f"hello from upstream host={self.headers.get('Host')} path={self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
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
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 53))
    while True:
        data, addr = s.recvfrom(2048)
        datagrams.append(addr[0])
threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tls.serve_forever, daemon=True).start()
S(("0.0.0.0", 8080), H).serve_forever()
"""

# Runs in the sandbox: each action's result, as one JSON list on stdout.
PROBE = r"""
import base64, errno, http.client, json, os, socket, ssl, urllib.error, urllib.parse, urllib.request
results = []
ctx = ssl.create_default_context(cadata=CA) if CA else None
for action in ACTIONS:
    kind, arg = action
    try:
        if kind == "get":
            with urllib.request.urlopen(arg, timeout=10, context=ctx if arg.startswith("https") else None) as r:
                body = r.read()
                results.append({"status": r.status, "len": len(body), "body": body[:200].decode()})
        elif kind == "tcp":
            socket.create_connection(tuple(arg), timeout=3).close()
            results.append("connected")
        elif kind == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01", tuple(arg))
            results.append("sent")
        elif kind == "resolve":
            results.append(sorted({i[4][0] for i in socket.getaddrinfo(arg, 443)}))
        elif kind == "ipv6_disabled":
            results.append(open("/proc/sys/net/ipv6/conf/all/disable_ipv6").read().strip())
        elif kind == "interfaces":
            results.append(sorted(name for _, name in socket.if_nameindex()))
        elif kind == "proxy_url":
            results.append(os.environ["HTTP_PROXY"])
        elif kind == "get_via":
            url, proxy = arg
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy, "https": proxy}))
            with opener.open(url, timeout=10) as r:
                results.append({"status": r.status})
        elif kind == "proxy_env":
            results.append(sorted(k for k in os.environ if k.lower().endswith("_proxy")))
        elif kind == "fronted":
            # CONNECT one name, then a ClientHello (and Host) for another.
            connect, sni = arg
            proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
            token = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
            raw = socket.create_connection((proxy.hostname, proxy.port), timeout=10)
            raw.sendall(f"CONNECT {connect} HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n".encode())
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += raw.recv(1)
            tls = ctx.wrap_socket(raw, server_hostname=sni)
            tls.sendall(f"GET /fronted HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
            answer = b"".join(iter(lambda: tls.recv(4096), b"")).decode()
            results.append({"tunnel": head.split(b"\r\n")[0].decode(), "answer": answer})
    except urllib.error.HTTPError as e:
        reason = e.headers.get("X-Airlock-Egress-Reason")
        results.append({"status": e.code, "reason": reason, "body": e.read().decode()})
    except urllib.error.URLError as e:
        results.append({"error": str(e.reason)})
    except http.client.HTTPException as e:
        results.append({"error": type(e).__name__})
    except OSError as e:
        results.append({"error": errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__})
print(json.dumps(results))
"""


@dataclass(frozen=True)
class Upstream:
    ip: str
    subnet: str
    ca: str


@dataclass(frozen=True)
class Call:
    decision_id: str
    outcome: str
    results: list[Any]
    stderr: str
    error: str


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    certs = make_certs(tmp_path_factory.mktemp("egress-certs"), "DNS:a.allowed.test,DNS:b.allowed.test")
    client = docker.from_env()
    tag = secrets.token_hex(4)
    network = client.networks.create(f"airlock-test-upstream-{tag}", driver="bridge", labels={"airlock.test": "egress"})
    container = None
    try:
        container = client.containers.run(
            IMAGE,
            ["python3", "-c", UPSTREAM],
            name=f"airlock-test-upstream-{tag}",
            detach=True,
            user="0",
            network=network.name,
            environment={"CERT": (certs / "server.pem").read_text(), "KEY": (certs / "server.key").read_text()},
            labels={"airlock.test": "egress"},
        )
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        network.reload()
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]
        _wait_http(f"http://{ip}:8080/ready")
        yield Upstream(ip, subnet, (certs / "ca.pem").read_text())
    finally:
        if container is not None:
            container.remove(force=True)
        network.remove()
        client.close()


@pytest.fixture(scope="module")
def estack(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("egress-config")
    limits = {"memory": "128Mi", "pids": 32, "timeout": "30s", "output": "64Ki", "tmpfs": "16Mi"}
    params = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}
    python = {"image": IMAGE, "argv": ["python3", "-I", "-u", "-c", "{code}"], "parameters": params, "limits": limits}
    registry = {
        "version": 1,
        "tools": {
            "python": {**python, "description": "No network."},
            "fetch_a": {
                **python,
                "description": "Reaches a.allowed.test.",
                "allowed_network": True,
                "egress_allowlist": ["a.allowed.test:8080", "a.allowed.test:8443", "private.allowed.test:8080"],
                "egress_allow_cidrs": [upstream.subnet],
            },
            "fetch_b": {
                **python,
                "description": "Reaches b.allowed.test.",
                "allowed_network": True,
                "egress_allowlist": ["b.allowed.test:8080"],
                "egress_allow_cidrs": [upstream.subnet],
            },
            "fetch_gvisor": {
                **python,
                "description": "Asks for egress under gVisor.",
                "runtime": "runsc",
                "allowed_network": True,
                "egress_allowlist": ["a.allowed.test:8080"],
                "egress_allow_cidrs": [upstream.subnet],
            },
        },
    }
    (folder / "tool_registry.yaml").write_text(yaml.safe_dump(registry))
    policies = folder / "policies"
    shutil.copytree(REPO / "policies", policies)
    grants = {
        "profiles": {
            "default": {
                "tools": ["python", "fetch_a", "fetch_b", "fetch_gvisor"],
                "network": True,
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
        "max_bytes_in": MAX_BYTES_IN,
        "max_connections": MAX_CONNECTIONS,
        "connect_timeout": "3s",
        "hosts": {
            "a.allowed.test": [upstream.ip],
            "b.allowed.test": [upstream.ip],
            "unlisted.test": [upstream.ip],
            # Allowlisted by name, but the name points at loopback.
            "private.allowed.test": ["127.0.0.1"],
        },
    }
    (folder / "egress.yaml").write_text(yaml.safe_dump(egress))
    home = new_home("egress")
    stack = start_stack(
        home,
        "--registry", str(folder / "tool_registry.yaml"),
        "--policies", str(policies),
        "--egress-config", str(folder / "egress.yaml"),
    )  # fmt: skip
    yield stack
    code, out = stop_stack(stack)
    assert code == 0, out


def _wait_http(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return


def probe(stack: Stack, tool: str, actions: list[Any], ca: str = "") -> Call:
    code = f"ACTIONS = {actions!r}\nCA = {ca!r}\n{PROBE}"
    with grpc.insecure_channel(stack.gateway) as channel:
        resp = gateway_pb2_grpc.GatewayServiceStub(channel).Invoke(
            gateway_pb2.InvokeRequest(call=tool_call(tool, json.dumps({"code": code}), call_id=f"egress-{tool}")),
            metadata=auth(stack.token),
            timeout=120,
        )
    stdout = resp.stdout.decode(errors="replace")
    results = json.loads(stdout) if stdout.strip() else []
    stderr = resp.stderr.decode(errors="replace")
    return Call(resp.decision.decision_id, OUTCOME[resp.result.outcome], results, stderr, resp.result.error)


def egress_records(stack: Stack, decision_id: str) -> list[dict[str, Any]]:
    (event,) = [e for e in stack.audit_events(decision_id) if e["kind"] == "execution"]
    records: list[dict[str, Any]] = event["execution"]["egress"]
    return records


# -- 1, 2: allowed and not allowed hosts ------------------------------------------


def test_allowed_host_and_port_over_http_and_https(estack: Stack, upstream: Upstream) -> None:
    call = probe(
        estack,
        "fetch_a",
        [
            ["get", "http://a.allowed.test:8080/hello"],
            ["get", "https://a.allowed.test:8443/secure"],
            # Odd spellings of an allowed name are normalised before matching.
            ["get", "http://A.Allowed.Test.:8080/odd"],
        ],
        ca=upstream.ca,
    )
    assert call.outcome == "ok", call.stderr
    plain, tls, odd = call.results
    body = "hello from upstream host=a.allowed.test:8080 path=/hello\n"
    assert plain == {"status": 200, "len": len(body), "body": body}
    # TLS end to end through CONNECT: the sandbox verified the upstream's
    # certificate; the proxy never saw the plaintext.
    assert tls["status"] == 200
    assert tls["body"] == "hello from upstream host=a.allowed.test:8443 path=/secure\n"
    # The proxy sends the Host it checked, not the sandbox's spelling.
    assert odd["body"] == "hello from upstream host=a.allowed.test:8080 path=/odd\n"
    records = egress_records(estack, call.decision_id)
    assert [(r["method"], r["host"], r["port"], r["allowed"], r["address"]) for r in records] == [
        ("HTTP", "a.allowed.test", 8080, True, upstream.ip),
        ("CONNECT", "a.allowed.test", 8443, True, upstream.ip),
        ("HTTP", "a.allowed.test", 8080, True, upstream.ip),
    ]
    assert int(records[0]["bytes_in"]) > plain["len"]  # the body plus the response head
    assert all(int(r["bytes_out"]) > 0 and r["cut"] == "" for r in records)
    assert (
        estack.metric(
            "executor", "airlock_executor_egress_connections_total", {"tool": "fetch_a", "outcome": "allowed"}
        )
        >= 2
    )


def test_host_not_on_the_allowlist_gets_a_clear_proxy_error(estack: Stack, upstream: Upstream) -> None:
    call = probe(
        estack,
        "fetch_a",
        [
            ["get", "http://unlisted.test:8080/"],
            ["get", "https://unlisted.test:8443/"],
            ["get", "http://a.allowed.test:9999/"],  # allowed host, wrong port
        ],
        ca=upstream.ca,
    )
    http_denied, tunnel_denied, port_denied = call.results
    assert http_denied["status"] == 403
    assert http_denied["reason"] == "host_not_allowed"
    assert "airlock egress proxy denied unlisted.test" in http_denied["body"]
    assert "Tunnel connection failed: 403" in tunnel_denied["error"]
    assert (port_denied["status"], port_denied["reason"]) == (403, "port_not_allowed")
    records = egress_records(estack, call.decision_id)
    assert [(r["host"], r["port"], r["allowed"], r["reason"]) for r in records] == [
        ("unlisted.test", 8080, False, "host_not_allowed"),
        ("unlisted.test", 8443, False, "host_not_allowed"),
        ("a.allowed.test", 9999, False, "port_not_allowed"),
    ]
    assert all(r["address"] == "" and int(r["bytes_in"]) == 0 for r in records)


# -- 3, 4: addresses ------------------------------------------------------------------


def test_a_tunnel_cannot_front_another_name_on_the_same_address(estack: Stack, upstream: Upstream) -> None:
    """a.allowed.test and b.allowed.test are one address with one
    certificate for both: a tunnel allowed for a.allowed.test whose TLS asks
    for b.allowed.test is refused before a byte goes upstream."""
    call = probe(estack, "fetch_a", [["fronted", ["a.allowed.test:8443", "b.allowed.test"]]], ca=upstream.ca)
    (result,) = call.results
    assert "error" in result, result  # the tunnel opened (200), then closed at the ClientHello
    (record,) = egress_records(estack, call.decision_id)
    assert (record["host"], record["allowed"], record["reason"]) == ("a.allowed.test", False, "host_mismatch")
    assert int(record["bytes_out"]) == 0
    # The same tunnel with its own name goes through.
    call = probe(estack, "fetch_a", [["fronted", ["a.allowed.test:8443", "a.allowed.test"]]], ca=upstream.ca)
    (result,) = call.results
    assert result["tunnel"] == "HTTP/1.1 200 Connection established"
    assert "host=a.allowed.test path=/fronted" in result["answer"]


def test_allowed_name_resolving_to_loopback_is_denied(estack: Stack) -> None:
    call = probe(estack, "fetch_a", [["get", "http://private.allowed.test:8080/"]])
    (denied,) = call.results
    assert (denied["status"], denied["reason"]) == (403, "address_denied")
    assert "127.0.0.1 is a loopback address" in denied["body"]
    (record,) = egress_records(estack, call.decision_id)
    assert (record["host"], record["allowed"], record["reason"]) == ("private.allowed.test", False, "address_denied")


def test_ip_literals_and_their_numeric_forms_are_denied(estack: Stack, upstream: Upstream) -> None:
    a, b, c, d = (int(x) for x in upstream.ip.split("."))
    decimal = str((a << 24) + (b << 16) + (c << 8) + d)
    octal = ".".join(f"0{x:o}" for x in (a, b, c, d))
    hexa = f"0x{(a << 24) + (b << 16) + (c << 8) + d:x}"
    forms = [upstream.ip, decimal, octal, hexa, "127.1", "[::1]"]
    call = probe(estack, "fetch_a", [["get", f"http://{f}:8080/"] for f in forms])
    assert [(r["status"], r["reason"]) for r in call.results] == [(403, "ip_literal")] * len(forms)
    assert all(not r["allowed"] for r in egress_records(estack, call.decision_id))


# -- 5, 6: around the proxy ---------------------------------------------------------------


def test_direct_connections_and_dns_fail(estack: Stack, upstream: Upstream) -> None:
    # A host service on all interfaces: reachable from the sandbox only if
    # the firewall on the egress bridge failed.
    listener = socket.create_server(("0.0.0.0", 0))
    port = listener.getsockname()[1]
    # The kernel completes a handshake into the backlog without accept(), so a
    # non-blocking accept after the probe shows whether anything connected (a
    # thread blocked in accept() raised when the listener closed under it).
    listener.setblocking(False)
    accepted: list[Any] = []
    proxy_host = estack.info["egress"]["proxy"].rpartition(":")[0]
    try:
        call = probe(
            estack,
            "fetch_a",
            [
                ["tcp", [upstream.ip, 8080]],  # skips the proxy
                ["tcp", [upstream.ip, 8443]],
                ["tcp", [proxy_host, port]],  # the host, on a port that is not the proxy
                ["udp", [upstream.ip, 53]],  # a DNS query to an outside resolver
                ["resolve", "a.allowed.test"],  # the sandbox's own resolver has no answers
                ["get", f"http://{upstream.ip}:8080/"],
                ["ipv6_disabled", None],  # no IPv6 path around the IPv4 firewall
            ],
        )
        with contextlib.suppress(BlockingIOError):
            accepted.append(listener.accept())
    finally:
        listener.close()
    direct_http, direct_tls, host_port, udp, resolved, _, ipv6_disabled = call.results
    assert ipv6_disabled == "1"
    # No route out (unreachable) or dropped on the way (timeout); never connected.
    failed = ({"error": "ENETUNREACH"}, {"error": "TimeoutError"}, {"error": "ETIMEDOUT"})
    assert direct_http in failed
    assert direct_tls in failed
    # The host's own ports are refused by the firewall on the egress bridge.
    assert host_port == {"error": "ECONNREFUSED"}
    assert accepted == []
    assert udp in ("sent", {"error": "ENETUNREACH"})
    assert "error" in resolved
    with urllib.request.urlopen(f"http://{upstream.ip}:8080/datagrams", timeout=5) as r:
        assert json.loads(r.read()) == [], "a datagram from the sandbox reached the outside resolver"


# -- 7: per-call allowlists ---------------------------------------------------------------


def test_concurrent_calls_each_get_only_their_own_allowlist(estack: Stack) -> None:
    both = [["get", "http://a.allowed.test:8080/"], ["get", "http://b.allowed.test:8080/"]]
    with ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(probe, estack, "fetch_a", both), pool.submit(probe, estack, "fetch_b", both)
        call_a, call_b = fa.result(), fb.result()
    assert [r["status"] for r in call_a.results] == [200, 403]
    assert [r["status"] for r in call_b.results] == [403, 200]
    assert call_a.results[1]["reason"] == call_b.results[0]["reason"] == "host_not_allowed"
    assert [r["allowed"] for r in egress_records(estack, call_a.decision_id)] == [True, False]
    assert [r["allowed"] for r in egress_records(estack, call_b.decision_id)] == [False, True]


def test_a_credential_dies_with_its_call(estack: Stack) -> None:
    """A proxy URL leaked out of one call is useless once that call ends."""
    first = probe(estack, "fetch_a", [["proxy_env", None], ["proxy_url", None]])
    names, leaked = first.results
    proxy_vars = [f"{scheme}_proxy" for scheme in ("http", "https", "all", "no")]
    assert names == sorted(proxy_vars + [v.upper() for v in proxy_vars])
    assert leaked.startswith("http://airlock:")
    assert leaked.endswith(estack.info["egress"]["proxy"])
    # A later call replays the first call's credential for a host the first
    # call was allowed: the proxy no longer knows it.
    replay = probe(estack, "fetch_b", [["get_via", ["http://a.allowed.test:8080/", leaked]]])
    assert (replay.results[0]["status"], replay.results[0]["reason"]) == (407, "unauthenticated")
    assert egress_records(estack, replay.decision_id) == []


# -- 8: limits -------------------------------------------------------------------------


def test_bytes_over_the_limit_are_cut_off_and_recorded(estack: Stack) -> None:
    call = probe(estack, "fetch_a", [["get", "http://a.allowed.test:8080/big"]])
    # The sandbox sees the body end early.
    assert call.results == [{"error": "IncompleteRead"}]
    (record,) = egress_records(estack, call.decision_id)
    assert record["allowed"] is True
    assert record["cut"] == "bytes_in_limit"
    assert int(record["bytes_in"]) == MAX_BYTES_IN
    assert estack.metric("executor", "airlock_executor_egress_cut_connections_total", {"cut": "bytes_in_limit"}) >= 1


def test_connections_over_the_limit_are_refused(estack: Stack) -> None:
    n = MAX_CONNECTIONS + 3
    call = probe(estack, "fetch_a", [["get", "http://a.allowed.test:8080/"]] * n)
    statuses = [r["status"] for r in call.results]
    assert statuses == [200] * MAX_CONNECTIONS + [403] * 3
    records = egress_records(estack, call.decision_id)
    assert [r["reason"] for r in records[MAX_CONNECTIONS:]] == ["too_many_connections"] * 3


# -- 9 and fail-closed cases -----------------------------------------------------------------


def test_tool_without_egress_has_no_network_at_all(estack: Stack, upstream: Upstream) -> None:
    call = probe(estack, "python", [["interfaces", None], ["proxy_env", None], ["tcp", [upstream.ip, 8080]]])
    assert call.results == [["lo"], [], {"error": "ENETUNREACH"}]
    event = next(e for e in estack.audit_events(call.decision_id) if e["kind"] == "execution")
    assert event["execution"]["egress"] == []


def test_egress_under_gvisor_is_refused(estack: Stack) -> None:
    """runsc is registered with --network=none: a grant of egress there is refused, not run without it."""
    call = probe(estack, "fetch_gvisor", [["get", "http://a.allowed.test:8080/"]])
    assert call.outcome == "error"
    assert "egress_unavailable" in call.error
    assert call.results == []
