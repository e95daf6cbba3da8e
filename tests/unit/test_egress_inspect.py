"""The egress proxy's inspected path on loopback, with real TLS both ways.

The sandbox side trusts only the executor's CA (an EgressCA in a temporary
directory); the upstream is an h11 server behind TLS with a certificate from
a second CA, which the proxy's upstream context trusts as an extra anchor.
The scripted resolver sends up.test to UPSTREAM_IP, which the dialler maps to
loopback (as in test_egress_proxy.py). Each case pins one promise of
issue 17: secrets set and scrubbed, rules, Host and SNI checks, and what
happens when either side's TLS fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import pytest
from test_egress_proxy import ALLOW_CIDRS, LIMITS, UPSTREAM_IP, Dialler, ScriptedResolver, auth

from airlock.common.egress_http import HttpRule
from airlock.executor._model import EgressRecord
from airlock.executor.egress.ca import EgressCA, LeafIssuer, upstream_context
from airlock.executor.egress.inspect import Injection
from airlock.executor.egress.proxy import TLS, CallGrant, EgressProxy, Inspection
from airlock.executor.egress.rules import Allowlist

SECRET = b"s3cr3t-value-0123456789"
PLACEHOLDER = b"airlock-secret-token-placeholder-0001"
FOREIGN = b"airlock-secret-token-for-other-0002"


@dataclass
class Upstream:
    port: int
    ca_file: Path
    seen: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def tls_upstream(tmp: Path) -> AsyncIterator[Upstream]:
    """An HTTPS server for up.test: answers every request with a JSON echo
    of its method, target and headers (and echoes Authorization in a
    response header), keeping the connection alive."""
    ca = EgressCA.load_or_create(tmp / "upstream-ca")
    context = LeafIssuer(ca).server_context("up.test")
    up = Upstream(0, tmp / "upstream-ca" / "ca.pem")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    headers = {n.decode(): v.decode() for n, v in event.headers.raw_items()}
                    body = b""
                    while not isinstance(e := conn.next_event(), h11.EndOfMessage):
                        if e is h11.NEED_DATA:
                            conn.receive_data(await reader.read(65536))
                        elif isinstance(e, h11.Data):
                            body += e.data
                    seen = {"method": event.method.decode(), "target": event.target.decode(), "headers": headers,
                            "body": body.decode()}  # fmt: skip
                    up.seen.append(seen)
                    out = json.dumps(seen).encode()
                    echo = headers.get("authorization", "none")
                    answer = [("content-type", "application/json"), ("content-length", str(len(out))), ("x-echo", echo)]
                    if event.target.endswith(b"/gz"):
                        answer.append(("content-encoding", "gzip"))  # whatever was asked for
                    writer.write(conn.send(h11.Response(status_code=200, headers=answer)))
                    writer.write(conn.send(h11.Data(data=out)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                else:
                    break
        except (ConnectionError, h11.RemoteProtocolError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()


@asynccontextmanager
async def inspecting_proxy(tmp: Path, anchor: Path) -> AsyncIterator[tuple[EgressProxy, EgressCA]]:
    ca = EgressCA.load_or_create(tmp / "egress-ca")
    tls = TLS(LeafIssuer(ca), upstream_context([anchor]))
    p = EgressProxy(LIMITS, ScriptedResolver({"up.test": [UPSTREAM_IP]}), lambda *_: None, Dialler(), tls)
    await p.start("127.0.0.1")
    try:
        yield p, ca
    finally:
        await p.stop()


def open_inspected(
    p: EgressProxy, port: int, rules: tuple[HttpRule, ...] = (), secret: bool = True
) -> tuple[CallGrant, str]:
    entry = f"up.test:{port}"
    injections = (Injection("up_token", b"authorization", b"Bearer " + SECRET, SECRET, PLACEHOLDER),) if secret else ()
    inspection = Inspection(entry, Allowlist((entry,)), rules, injections, {FOREIGN: "other_token"})
    grant, url = p.open_call(
        "run-1", "fetch", (entry,), ALLOW_CIDRS, ipaddress.ip_address("127.0.0.1"), inspect=(inspection,)
    )
    return grant, url.removeprefix("http://").split("@")[0].split(":")[1]


async def connect(p: EgressProxy, token: str, port: int, ca: EgressCA | None, sni: str = "up.test") -> h11Client:
    host, pport = p.address.split(":")
    reader, writer = await asyncio.open_connection(host, int(pport))
    writer.write(f"CONNECT up.test:{port} HTTP/1.1\r\n{auth(token)}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    context = ssl.create_default_context(cadata=ca.cert_pem.decode()) if ca else ssl.create_default_context()
    await writer.start_tls(context, server_hostname=sni)
    return h11Client(reader, writer, port)


class h11Client:  # noqa: N801 - named for what it wraps
    """The sandbox: HTTP/1.1 requests over the inspected tunnel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port = reader, writer, port
        self.conn = h11.Connection(h11.CLIENT)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        hdrs = headers if headers is not None else [("host", f"up.test:{self.port}")]
        if body:
            hdrs = [*hdrs, ("content-length", str(len(body)))]
        self.writer.write(self.conn.send(h11.Request(method=method, target=target, headers=hdrs)))
        if body:
            self.writer.write(self.conn.send(h11.Data(data=body)))
        self.writer.write(self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()
        status, got, data = 0, {}, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await asyncio.wait_for(self.reader.read(65536), 5)
                self.conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status = event.status_code
                got = {n.decode(): v.decode() for n, v in event.headers.raw_items()}
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return status, got, data

    def close(self) -> None:
        self.writer.close()


def run(coro: Any) -> None:
    asyncio.run(coro())


def only(grant: CallGrant) -> EgressRecord:
    (record,) = grant.records
    return record


def test_a_secret_is_set_upstream_and_never_seen_by_the_sandbox(tmp_path: Path) -> None:
    async def go() -> None:
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, up.ca_file) as (p, ca):
            grant, token = open_inspected(p, up.port)
            client = await connect(p, token, up.port, ca)
            # The sandbox's own Authorization (its placeholder, say) is
            # replaced by the proxy's; encodings and ranges are dropped.
            headers = [("host", f"up.test:{up.port}"), ("authorization", "Bearer " + PLACEHOLDER.decode()),
                       ("accept-encoding", "gzip"), ("range", "bytes=0-3")]  # fmt: skip
            status, got, body = await client.request("GET", "/repos/org/a?q=1", headers)
            assert status == 200
            (seen,) = up.seen
            assert seen["headers"]["authorization"] == "Bearer " + SECRET.decode()
            assert seen["headers"]["accept-encoding"] == "identity"
            assert "range" not in seen["headers"]
            # Echoed back in a header and in the body: scrubbed.
            assert SECRET not in body
            assert SECRET.decode() not in json.dumps(got)
            assert PLACEHOLDER in body
            assert got["x-echo"] == "Bearer " + PLACEHOLDER.decode()
            # A second request on the same connection (kept alive).
            status, _, _ = await client.request("GET", "/repos/org/b")
            assert status == 200
            # The placeholder anywhere but its own header: refused, even here.
            misplaced = [("host", f"up.test:{up.port}"), ("x-token", PLACEHOLDER.decode())]
            status, got, _ = await client.request("GET", "/repos/org/c", misplaced)
            assert (status, got["x-airlock-egress-reason"]) == (403, "secret_misplaced")
            client.close()
            client = await connect(p, token, up.port, ca)
            status, got, _ = await client.request("GET", "/repos/org/" + PLACEHOLDER.decode())
            assert (status, got["x-airlock-egress-reason"]) == (403, "secret_misplaced")
            client.close()
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            assert len(up.seen) == 2
            first, second = grant.records
            assert (first.allowed, first.inspected) == (True, True)
            assert [(r.method, r.path, r.status, r.secret_names, r.reason) for r in first.requests] == [
                ("GET", "/repos/org/a", 200, ["up_token"], ""),
                ("GET", "/repos/org/b", 200, ["up_token"], ""),
                ("GET", "/repos/org/c", 403, [], "secret_misplaced"),
            ]
            assert second.requests[0].reason == "secret_misplaced"
            assert SECRET.decode() not in repr(grant.records)

    run(go)


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "reason"),
    [
        ("POST", "/repos/org/a", None, b"x", "request_not_allowed"),  # method
        ("GET", "/admin", None, b"", "request_not_allowed"),  # path
        ("GET", "/repos/org/../admin", None, b"", "request_not_allowed"),  # dot segments
        ("GET", "/repos/org%2Fx/a", None, b"", "request_not_allowed"),  # an encoded slash
        ("PUT", "/upload/x", None, b"y" * 200, "body_too_large"),
        ("GET", "/repos/org/a", [("host", "other.test")], b"", "host_mismatch"),  # fronting inside the tunnel
        ("GET", "https://other.test/repos/org/a", None, b"", "host_mismatch"),
        ("GET", "/repos/org/a", "foreign", b"", "secret_wrong_host"),
        # Paths a server could read as another: only canonical ones match.
        ("GET", "/repos/org/..;/admin", None, b"", "request_not_allowed"),
        ("GET", "/repos/org/a;x=1", None, b"", "request_not_allowed"),
        ("GET", "/repos/org/a\\..\\..\\admin", None, b"", "request_not_allowed"),
        ("GET", "/repos/org/%252e%252e", None, b"", "request_not_allowed"),
        ("GET", "/repos/org/%C0%AE%C0%AE", None, b"", "request_not_allowed"),
        ("GET", "/repos/org/%61", None, b"", "request_not_allowed"),
    ],
)
def test_requests_the_rules_refuse_get_403_and_never_reach_upstream(
    tmp_path: Path, method: str, target: str, headers: Any, body: bytes, reason: str
) -> None:
    rules = (
        HttpRule("up.test", ("GET",), ("/repos/org/*",)),
        HttpRule("up.test", ("PUT",), ("/upload/**",), max_body_bytes=100),
    )

    async def go() -> None:
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, up.ca_file) as (p, ca):
            grant, token = open_inspected(p, up.port, rules)
            client = await connect(p, token, up.port, ca)
            hdrs = headers
            if headers == "foreign":
                hdrs = [("host", f"up.test:{up.port}"), ("x-token", FOREIGN.decode())]
            status, got, _ = await client.request(method, target, hdrs, body)
            assert (status, got.get("x-airlock-egress-reason")) == (403, reason)
            assert up.seen == []
            client.close()
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            (request,) = only(grant).requests
            assert (request.status, request.reason) == (403, reason)

    run(go)


def test_a_rule_allows_and_records_which(tmp_path: Path) -> None:
    rules = (HttpRule("up.test", ("PUT",), ("/upload/**",), max_body_bytes=100),)

    async def go() -> None:
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, up.ca_file) as (p, ca):
            grant, token = open_inspected(p, up.port, rules, secret=False)
            client = await connect(p, token, up.port, ca)
            status, _, _ = await client.request("PUT", "/upload/a/b/c", None, b"z" * 100)
            assert status == 200
            assert up.seen[0]["body"] == "z" * 100
            client.close()
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            (request,) = only(grant).requests
            assert request.rule == f"up.test:{up.port}#0"
            assert request.secret_names == []

    run(go)


@pytest.mark.parametrize(
    ("trust", "sni", "reason"), [(True, "other.test", "host_mismatch"), (False, "up.test", "client_tls_failed")]
)
def test_a_sandbox_that_names_another_host_or_distrusts_the_ca_gets_nothing(
    tmp_path: Path, trust: bool, sni: str, reason: str
) -> None:
    async def go() -> None:
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, up.ca_file) as (p, ca):
            grant, token = open_inspected(p, up.port)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await connect(p, token, up.port, ca if trust else None, sni=sni)
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            record = only(grant)
            assert (record.allowed, record.reason) == (False, reason), record.message
            assert up.seen == []

    run(go)


def test_an_upstream_the_proxy_cannot_verify_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        other = EgressCA.load_or_create(tmp_path / "unrelated-ca")
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, other.directory / "ca.pem") as (p, ca):
            grant, token = open_inspected(p, up.port)
            status = 0
            try:
                client = await connect(p, token, up.port, ca)
                status, _, _ = await client.request("GET", "/")
            except (ssl.SSLError, ConnectionError, h11.RemoteProtocolError):
                pass  # closed before (or instead of) an answer
            assert status == 0  # no answer: the connection was closed
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            record = only(grant)
            assert (record.allowed, record.reason) == (False, "upstream_tls_failed")
            assert up.seen == []

    run(go)


def test_an_encoded_answer_to_a_request_with_a_secret_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, up.ca_file) as (p, ca):
            grant, token = open_inspected(p, up.port)
            client = await connect(p, token, up.port, ca)
            status, got, body = await client.request("GET", "/repos/org/gz")
            assert (status, got["x-airlock-egress-reason"]) == (502, "encoded_answer")
            assert SECRET not in body
            client.close()
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            assert only(grant).requests[0].reason == "encoded_answer"

    run(go)


def test_an_exact_entry_wins_over_a_glob_and_records_are_capped(tmp_path: Path) -> None:
    async def go() -> None:
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, up.ca_file) as (p, ca):
            exact = f"up.test:{up.port}"
            glob = f"*.test:{up.port}"
            strict = Inspection(exact, Allowlist((exact,)), (HttpRule(exact, ("GET",), ("/ok",)),))
            loose = Inspection(glob, Allowlist((glob,)))
            grant, url = p.open_call(
                "run-1", "fetch", (glob, exact), ALLOW_CIDRS, ipaddress.ip_address("127.0.0.1"), inspect=(loose, strict)
            )
            token = url.removeprefix("http://").split("@")[0].split(":")[1]
            client = await connect(p, token, up.port, ca)
            for _ in range(LIMITS.max_records + 2):
                status, _, _ = await client.request("GET", "/ok")
                assert status == 200
            status, got, _ = await client.request("DELETE", "/everything")
            assert (status, got["x-airlock-egress-reason"]) == (403, "request_not_allowed")
            client.close()
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            record = only(grant)
            assert len(record.requests) == LIMITS.max_records
            assert record.requests_unrecorded == 3
            assert record.request_outcomes == {"relayed": LIMITS.max_records + 2, "request_not_allowed": 1}

    run(go)


def test_plain_bytes_into_an_inspected_tunnel_are_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with tls_upstream(tmp_path) as up, inspecting_proxy(tmp_path, up.ca_file) as (p, _):
            grant, token = open_inspected(p, up.port)
            host, pport = p.address.split(":")
            reader, writer = await asyncio.open_connection(host, int(pport))
            writer.write(f"CONNECT up.test:{up.port} HTTP/1.1\r\n{auth(token)}\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"GET /repos/org/a HTTP/1.1\r\nHost: up.test\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await asyncio.sleep(0.1)
            await p.close_call(grant)
            record = only(grant)
            assert (record.allowed, record.reason) == (False, "tls_required"), record.message
            assert up.seen == []

    run(go)
