"""The egress proxy on loopback: real sockets, a scripted resolver.

The integration suite (tests/integration/test_egress.py) runs the proxy for
real sandboxes; these cases pin the protocol details that are awkward to
provoke from a sandbox: what is forwarded, credential revocation and its
tie to the sandbox's address, the single lookup per attempt, the limits
(per call, per source, in total) and which addresses are never dialled.

Loopback itself can never be opened by egress_allow_cidrs, so the scripted
names resolve to UPSTREAM_IP (a documentation address the calls open with
ALLOW_CIDRS) and the proxy's connector sends that address to loopback,
where the test servers listen.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from airlock.executor._errors import RunRefused
from airlock.executor.egress.proxy import CallGrant, EgressProxy, ProxyLimits
from airlock.executor.egress.rules import IPAddress, IPNetwork

LIMITS = ProxyLimits(
    max_connections=4,
    max_bytes_out=64 * 1024,
    max_bytes_in=64 * 1024,
    connect_timeout_s=2,
    header_timeout_s=1,
    max_records=3,
)
UPSTREAM_IP = "203.0.113.7"
ALLOW_CIDRS = ("203.0.113.0/24",)


@dataclass
class ScriptedResolver:
    answers: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        del port
        self.asked.append(host)
        return [ipaddress.ip_address(a) for a in self.answers.get(host, [])]


@dataclass
class Upstream:
    port: int
    received: list[bytes]


@asynccontextmanager
async def upstream(reply: Callable[[bytes], bytes] = lambda _: b"") -> AsyncIterator[Upstream]:
    """A loopback server that records what arrives and answers once."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        received.append(data)
        writer.write(reply(data))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Upstream(server.sockets[0].getsockname()[1], received)
    finally:
        server.close()


@dataclass
class Dialler:
    """The proxy's connector: records every dial, sends UPSTREAM_IP to loopback."""

    dialled: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int, *, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.dialled.append(host)
        return await asyncio.open_connection("127.0.0.1" if host == UPSTREAM_IP else host, port, limit=limit)


@asynccontextmanager
async def proxy(
    resolver: ScriptedResolver,
    limits: ProxyLimits = LIMITS,
    dialler: Dialler | None = None,
    sources: IPNetwork | None = None,
) -> AsyncIterator[tuple[EgressProxy, list[Any]]]:
    seen: list[Any] = []
    p = EgressProxy(limits, resolver, lambda tool, record: seen.append((tool, record)), dialler or Dialler())
    await p.start("127.0.0.1", sources=sources)
    try:
        yield p, seen
    finally:
        await p.stop()


def open_call(
    p: EgressProxy, allow: tuple[str, ...], cidrs: tuple[str, ...] = ALLOW_CIDRS, source: str | None = "127.0.0.1"
) -> tuple[CallGrant, str]:
    grant, url = p.open_call("run-1", "fetch", allow, cidrs, ipaddress.ip_address(source) if source else None)
    return grant, url.removeprefix("http://").split("@")[0].split(":")[1]


def client_hello(server_name: str | None) -> bytes:
    """A real TLS ClientHello (OpenSSL's, through memory BIOs) for server_name."""
    context = ssl.create_default_context()
    context.check_hostname = server_name is not None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


async def tunnel(
    p: EgressProxy,
    token: str,
    port: int,
    source: str = "127.0.0.1",
    host: str = "up.test",
    hello: bytes | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Opens a CONNECT tunnel to host:port and, once it is open, sends
    ``hello`` (default: a ClientHello for ``host``; b"" sends nothing);
    returns the streams and the proxy's answer head."""
    phost, pport = p.address.split(":")
    reader, writer = await asyncio.open_connection(phost, int(pport), local_addr=(source, 0))
    writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\n{auth(token)}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if head.startswith(b"HTTP/1.1 200 "):
        writer.write(client_hello(host) if hello is None else hello)
        await writer.drain()
    return reader, writer, head


async def exchange(p: EgressProxy, request: bytes, source: str = "127.0.0.1") -> bytes:
    """Sends one request from ``source`` (any 127/8 address is this host) and reads the answer."""
    host, port = p.address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port), local_addr=(source, 0))
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def auth(token: str) -> str:
    return "Proxy-Authorization: Basic " + base64.b64encode(f"airlock:{token}".encode()).decode() + "\r\n"


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_forwarded_http_request_is_rewritten_and_relayed() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with (
            upstream(lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi") as up,
            proxy(resolver) as (p, seen),
        ):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            answer = await exchange(
                p,
                f"GET http://UP.test.:{up.port}/a?b=1 HTTP/1.1\r\nHost: evil.example\r\n{auth(token)}"
                "Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n".encode(),
            )
            assert answer.endswith(b"\r\n\r\nhi")
            sent = up.received[0].decode()
            # Origin form, the checked Host, our credential and hop headers gone.
            assert sent.startswith("GET /a?b=1 HTTP/1.1\r\n")
            assert f"Host: up.test:{up.port}\r\n" in sent
            assert "X-Kept: yes\r\n" in sent
            assert "Connection: close\r\n" in sent
            assert "Proxy-" not in sent
            assert "evil.example" not in sent
            await p.close_call(grant)
            (record,) = grant.records
            assert (record.method, record.host, record.allowed, record.address) == (
                "HTTP",
                "up.test",
                True,
                UPSTREAM_IP,
            )
            assert record.bytes_in == len(answer)
            assert record.bytes_out == len(up.received[0])
            assert seen == [("fetch", record)]

    run(go)


def test_connect_tunnels_bytes_both_ways() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with upstream(lambda data: b"echo:" + data) as up, proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            hello = client_hello("up.test")
            reader, writer, head = await tunnel(p, token, up.port, hello=hello)
            assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
            assert await asyncio.wait_for(reader.read(), 5) == b"echo:" + hello
            writer.close()
            await p.close_call(grant)
            assert up.received == [hello]
            assert grant.records[0].method == "CONNECT"

    run(go)


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (lambda: client_hello("other.test"), "host_mismatch"),  # fronting: another name on the same address
        (lambda: client_hello(None), "host_mismatch"),  # a name was asked for: the hello must name it
        (lambda: b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n", "tls_required"),
        (lambda: b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", "tls_required"),  # a hello OpenSSL refuses
        (lambda: b"", "tls_required"),  # nothing within the header timeout
    ],
)
def test_a_tunnel_whose_client_hello_does_not_name_its_host_never_reaches_upstream(
    hello: Callable[[], bytes], reason: str
) -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with upstream(lambda data: b"echo:" + data) as up, proxy(resolver) as (p, seen):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            reader, writer, head = await tunnel(p, token, up.port, hello=hello())
            assert head.startswith(b"HTTP/1.1 200 ")
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            await p.close_call(grant)
            assert b"".join(up.received) == b""  # connected (before the hello), but not a byte sent
            (record,) = grant.records
            assert (record.allowed, record.reason) == (False, reason)
            assert seen[-1][1].reason == reason

    run(go)


@pytest.mark.parametrize(("connect", "sni"), [("UP.test.", "up.test"), ("up.test", "Up.Test"), ("203.0.113.7", None)])
def test_a_client_hello_naming_the_tunnels_host_passes_in_any_spelling(connect: str, sni: str | None) -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with upstream(lambda data: b"echo:" + data) as up, proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{up.port}", f"203.0.113.7:{up.port}"))
            hello = client_hello(sni)
            reader, writer, _ = await tunnel(p, token, up.port, host=connect, hello=hello)
            assert await asyncio.wait_for(reader.read(), 5) == b"echo:" + hello
            writer.close()
            await p.close_call(grant)
            assert grant.records[0].allowed

    run(go)


def test_missing_wrong_and_revoked_credentials_get_407() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with upstream() as up, proxy(resolver) as (p, seen):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            request = f"GET http://up.test:{up.port}/ HTTP/1.1\r\n"
            for headers in ("", auth("not-the-token"), "Proxy-Authorization: Bearer x\r\n"):
                answer = await exchange(p, f"{request}{headers}\r\n".encode())
                assert answer.startswith(b"HTTP/1.1 407 ")
                assert b"Proxy-Authenticate: Basic" in answer
            await p.close_call(grant)
            answer = await exchange(p, f"{request}{auth(token)}\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 407 ")
            assert up.received == []
            assert [tool for tool, _ in seen] == [None] * 4

    run(go)


def test_closing_the_call_cuts_its_open_connections() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        hold = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hold.wait()
            writer.close()

        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{port}",))
            reader, writer, _ = await tunnel(p, token, port)
            for _ in range(500):  # the hello went through: the tunnel is open
                if grant.bytes_out:
                    break
                await asyncio.sleep(0.01)
            await p.close_call(grant)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy
            writer.close()
            (record,) = grant.records
            assert (record.allowed, record.cut) == (True, "call_ended")
        hold.set()
        server.close()

    run(go)


def test_one_lookup_per_attempt_and_every_answer_is_checked() -> None:
    """A name answering with an allowed and a denied address is refused, and
    the proxy never looks the name up a second time to connect."""

    async def go() -> None:
        resolver = ScriptedResolver({"rebind.test": [UPSTREAM_IP, "10.0.0.1"], "up.test": [UPSTREAM_IP]})
        async with upstream(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n") as up, proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"rebind.test:{up.port}", f"up.test:{up.port}"))
            denied = await exchange(p, f"GET http://rebind.test:{up.port}/ HTTP/1.1\r\n{auth(token)}\r\n".encode())
            assert denied.startswith(b"HTTP/1.1 403 ")
            assert b"X-Airlock-Egress-Reason: address_denied" in denied
            assert b"10.0.0.1 is a private address" in denied
            await exchange(p, f"GET http://up.test:{up.port}/ HTTP/1.1\r\n{auth(token)}\r\n".encode())
            assert resolver.asked == ["rebind.test", "up.test"]
            await p.close_call(grant)

    run(go)


def test_limits_connections_bytes_and_records() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        big = b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (LIMITS.max_bytes_in * 2)
        async with upstream(lambda _: big) as up, proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            request = f"GET http://up.test:{up.port}/ HTTP/1.1\r\n{auth(token)}\r\n".encode()
            first = await exchange(p, request)
            assert len(first) == LIMITS.max_bytes_in
            answers = [await exchange(p, request) for _ in range(4)]
            # The budget is per call: nothing is left for later connections.
            assert answers[:3] == [b"", b"", b""]
            assert answers[3].startswith(b"HTTP/1.1 403 ")
            assert b"too_many_connections" in answers[3]
            await p.close_call(grant)
            assert [r.cut for r in grant.records] == ["bytes_in_limit", "bytes_in_limit", "bytes_in_limit"]
            # Five attempts, three records kept (max_records), the rest counted.
            assert grant.unrecorded == 2
            assert grant.bytes_in == LIMITS.max_bytes_in

    run(go)


def test_bytes_out_limit_cuts_an_upload() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with upstream() as up, proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            reader, writer, _ = await tunnel(p, token, up.port)
            writer.write(b"y" * (LIMITS.max_bytes_out + 10))
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await p.close_call(grant)
            (record,) = grant.records
            assert record.cut == "bytes_out_limit"
            assert record.bytes_out <= LIMITS.max_bytes_out

    run(go)


# Each a request the proxy must refuse with 400, never forward: {auth} is
# the call's credential.
BAD_REQUESTS = [
    "garbage\r\n\r\n",
    "GET /origin-form HTTP/1.1\r\n{auth}\r\n",
    "GET https://up.test/ HTTP/1.1\r\n{auth}\r\n",
    "GET http://user@up.test/ HTTP/1.1\r\n{auth}\r\n",
    "CONNECT up.test HTTP/1.1\r\n{auth}\r\n",
    "CONNECT up.test:99999 HTTP/1.1\r\n{auth}\r\n",
    "CONNECT up.test:\u00b2 HTTP/1.1\r\n{auth}\r\n",  # "²".isdigit() is True
    "GET http://up.test:99999/ HTTP/1.1\r\n{auth}\r\n",
    "GET http://[::1/ HTTP/1.1\r\n{auth}\r\n",
    # Bare LF or CR inside the head: a line break to some servers, which
    # would smuggle a second request with its own Host past the rewrite.
    "GET http://up.test/ HTTP/1.1\r\n{auth}X-A: 1\n\nGET /secret HTTP/1.1\nHost: evil.example\r\n\r\n",
    "GET http://up.test/ HTTP/1.1\r\n{auth}X-A: 1\rHost: evil.example\r\n\r\n",
    "GET\x00 http://up.test/ HTTP/1.1\r\n{auth}\r\n",
    "GET http://up.test/ HTTP/1.1\r\n{auth}Bad Name: x\r\n\r\n",
    "GET http://up.test/ HTTP/1.1\r\n{auth} folded: continuation\r\n\r\n",
    # Bodies we could not frame as exactly one request.
    "POST http://up.test/ HTTP/1.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n",
    "POST http://up.test/ HTTP/1.1\r\n{auth}Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "POST http://up.test/ HTTP/1.1\r\n{auth}Content-Length: -1\r\n\r\n",
]


@pytest.mark.parametrize("request_text", BAD_REQUESTS)
def test_requests_the_proxy_does_not_serve_get_400(request_text: str) -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with proxy(resolver) as (p, _):
            grant, token = open_call(p, ("up.test:443", "up.test:80"))
            answer = await exchange(p, request_text.format(auth=auth(token)).encode("latin-1"))
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            await p.close_call(grant)
            assert all(r.reason == "bad_request" and not r.allowed for r in grant.records)
            # Nothing was resolved, so nothing was connected to.
            assert resolver.asked == []

    run(go)


def test_refused_attempts_count_against_the_connection_limit() -> None:
    async def go() -> None:
        async with proxy(ScriptedResolver({})) as (p, _):
            grant, token = open_call(p, ("up.test:443",))
            bad = f"CONNECT not-allowed.test:443 HTTP/1.1\r\n{auth(token)}\r\n".encode()
            answers = [await exchange(p, bad) for _ in range(LIMITS.max_connections + 1)]
            assert all(b"X-Airlock-Egress-Reason: host_not_allowed" in a for a in answers[:-1])
            assert b"X-Airlock-Egress-Reason: too_many_connections" in answers[-1]
            await p.close_call(grant)

    run(go)


def test_a_forwarded_request_sends_exactly_its_body_and_nothing_after() -> None:
    """Bytes after the announced body (a pipelined second request) never reach the upstream."""

    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with upstream(lambda _: b"HTTP/1.1 200 OK\r\n\r\n") as up, proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            body = b"hello"
            smuggled = b"GET /secret HTTP/1.1\r\nHost: evil.example\r\n\r\n"
            request = (
                (
                    f"POST http://up.test:{up.port}/in HTTP/1.1\r\n{auth(token)}Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
                + smuggled
            )
            await exchange(p, request)
            await p.close_call(grant)
            (sent,) = up.received
            assert sent.endswith(b"\r\n\r\nhello")
            assert b"evil.example" not in sent

    run(go)


def test_a_silent_client_is_dropped_after_the_header_timeout() -> None:
    async def go() -> None:
        async with proxy(ScriptedResolver({})) as (p, seen):
            host, port = p.address.split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET http://up.test/ HTTP/1.1\r\n")  # never finishes the head
            answer = await asyncio.wait_for(reader.read(), LIMITS.header_timeout_s + 3)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 400 ")
            assert [(tool, r.reason) for tool, r in seen] == [(None, "bad_request")]

    run(go)


def test_connections_before_authentication_are_capped() -> None:
    """Idle connections that never send a head cannot pile up without bound."""

    async def go() -> None:
        async with proxy(ScriptedResolver({}), replace(LIMITS, max_pending=2)) as (p, seen):
            host, port = p.address.split(":")
            idle = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
            for _ in range(500):  # until both wait for their head (a loaded machine may take a while)
                if p._pending == 2:
                    break
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection(host, int(port))
            # The third is dropped without an answer; within the header
            # timeout it would have got a 400 instead.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            for _, w in idle:
                w.close()
            assert [(tool, r.reason) for tool, r in seen] == [(None, "overloaded")]

    run(go)


# -- the credential is good from its own sandbox only ------------------------------


def test_a_credential_works_only_from_its_sandboxs_address() -> None:
    """A live credential presented from another sandbox's address gets 407,
    exactly like a wrong one; from its own address it works."""

    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        async with upstream(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n") as up, proxy(resolver) as (p, seen):
            grant, token = open_call(p, (f"up.test:{up.port}",), source="127.0.0.2")
            request = f"GET http://up.test:{up.port}/ HTTP/1.1\r\n{auth(token)}\r\n".encode()
            stolen = await exchange(p, request, source="127.0.0.3")
            assert stolen.startswith(b"HTTP/1.1 407 ")
            assert b"X-Airlock-Egress-Reason: unauthenticated" in stolen
            assert up.received == []
            assert grant.records == []  # not the call's attempt: nothing charged to it
            own = await exchange(p, request, source="127.0.0.2")
            assert own.startswith(b"HTTP/1.1 204 ")
            await p.close_call(grant)
            assert [(tool, r.reason or "allowed") for tool, r in seen] == [
                (None, "unauthenticated"),
                ("fetch", "allowed"),
            ]

    run(go)


def test_a_desktop_source_is_served_without_a_credential_only_while_its_call_runs() -> None:
    """A desktop's browser presents no credential: its address finds its
    running call's grant; before and after the call it gets 403 (no
    challenge, which would show a login dialog); another address without a
    credential still gets 407; the call's allowlist still applies."""

    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP], "other.test": [UPSTREAM_IP]})
        async with upstream(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n") as up, proxy(resolver) as (p, seen):
            desktop = ipaddress.ip_address("127.0.0.2")
            p.add_source(desktop)
            request = f"GET http://up.test:{up.port}/ HTTP/1.1\r\n\r\n".encode()
            idle = await exchange(p, request, source="127.0.0.2")
            assert idle.startswith(b"HTTP/1.1 403 ")
            assert b"Proxy-Authenticate" not in idle
            grant, _ = open_call(p, (f"up.test:{up.port}",), source="127.0.0.2")
            assert (await exchange(p, request, source="127.0.0.2")).startswith(b"HTTP/1.1 204 ")
            elsewhere = await exchange(p, request, source="127.0.0.3")
            assert elsewhere.startswith(b"HTTP/1.1 407 ")
            other = await exchange(p, f"GET http://other.test:{up.port}/ HTTP/1.1\r\n\r\n".encode(), source="127.0.0.2")
            assert other.startswith(b"HTTP/1.1 403 ")
            assert b"X-Airlock-Egress-Reason: host_not_allowed" in other
            await p.close_call(grant)
            assert (await exchange(p, request, source="127.0.0.2")).startswith(b"HTTP/1.1 403 ")
            # A second call on the address while one runs is refused, and
            # never takes the running call's place.
            running, _ = open_call(p, (f"up.test:{up.port}",), source="127.0.0.2")
            with pytest.raises(RunRefused):
                open_call(p, ("other.test:443",), source="127.0.0.2")
            assert (await exchange(p, request, source="127.0.0.2")).startswith(b"HTTP/1.1 204 ")
            await p.close_call(running)
            p.remove_source(desktop)
            assert (await exchange(p, request, source="127.0.0.2")).startswith(b"HTTP/1.1 407 ")
            assert len(up.received) == 2
            assert [(r.host, r.reason or "allowed") for r in grant.records] == [
                ("up.test", "allowed"),
                ("other.test", "host_not_allowed"),
            ]
            assert [tool for tool, _ in seen].count(None) == 4

    run(go)


def test_connections_from_outside_the_sandbox_network_are_dropped() -> None:
    async def go() -> None:
        async with proxy(ScriptedResolver({}), sources=ipaddress.ip_network("127.0.0.2/32")) as (p, seen):
            grant, token = open_call(p, ("up.test:443",), source="127.0.0.1")
            try:
                answer = await exchange(p, f"CONNECT up.test:443 HTTP/1.1\r\n{auth(token)}\r\n".encode())
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # dropped unanswered
            await p.close_call(grant)
            assert [(tool, r.reason) for tool, r in seen] == [(None, "unauthenticated")]

    run(go)


# -- no sandbox can starve the others ------------------------------------------------


def test_one_sandbox_holding_idle_connections_cannot_block_another() -> None:
    """The reported attack: one sandbox holds ~300 idle connections to the
    proxy. It keeps MAX_PENDING_PER_SOURCE of them; another sandbox's
    egress still works, every time."""

    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})
        limits = replace(LIMITS, max_connections=8, header_timeout_s=30)
        async with (
            upstream(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n") as up,
            proxy(resolver, limits) as (p, seen),
        ):
            host, port = p.address.split(":")
            idle = [await asyncio.open_connection(host, int(port), local_addr=("127.0.0.66", 0)) for _ in range(300)]
            for _ in range(500):  # until the proxy has taken them all in
                if sum(1 for _, r in seen if r.reason == "overloaded") == 300 - limits.max_pending_per_source:
                    break
                await asyncio.sleep(0.01)
            assert p._pending == limits.max_pending_per_source
            grant, token = open_call(p, (f"up.test:{up.port}",), source="127.0.0.2")
            request = f"GET http://up.test:{up.port}/ HTTP/1.1\r\n{auth(token)}\r\n".encode()
            answers = [await exchange(p, request, source="127.0.0.2") for _ in range(8)]
            assert all(a.startswith(b"HTTP/1.1 204 ") for a in answers)
            for _, w in idle:
                w.close()
            await p.close_call(grant)

    run(go)


def test_open_tunnels_are_capped_in_total() -> None:
    """Tunnels hold two descriptors each; past max_tunnels (derived from the
    open-files limit) a new one is refused with 503 until one closes."""

    async def go() -> None:
        resolver = ScriptedResolver({"up.test": [UPSTREAM_IP]})

        async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await asyncio.start_server(until_eof, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy(resolver, replace(LIMITS, max_tunnels=2)) as (p, _):
            grant, token = open_call(p, (f"up.test:{port}",))
            first = await tunnel(p, token, port)
            second = await tunnel(p, token, port)
            assert first[2].startswith(b"HTTP/1.1 200 ")
            assert second[2].startswith(b"HTTP/1.1 200 ")
            _, third_w, third = await tunnel(p, token, port)
            assert third.startswith(b"HTTP/1.1 503 ")
            assert b"X-Airlock-Egress-Reason: overloaded" in third
            first[1].close()
            for _ in range(500):
                if p._tunnels < 2:
                    break
                await asyncio.sleep(0.01)
            _, fourth_w, fourth = await tunnel(p, token, port)
            assert fourth.startswith(b"HTTP/1.1 200 ")
            for w in (second[1], third_w, fourth_w):
                w.close()
            await p.close_call(grant)
            assert p._tunnels == 0
            assert [r.reason for r in grant.records if not r.allowed] == ["overloaded"]
        server.close()

    run(go)


# -- addresses that are never dialled ------------------------------------------------

# 203.0.113.7, which the calls open with egress_allow_cidrs, in IPv6 spellings.
SIX_TO_FOUR = "2002:cb00:7107::1"
MAPPED = "::ffff:203.0.113.7"
NAT64 = "64:ff9b::cb00:7107"
# Teredo: server 203.0.113.7, client 203.0.113.7 (obfuscated, bits inverted).
TEREDO = "2001:0:cb00:7107::34ff:8ef8"


@pytest.mark.parametrize("address", [SIX_TO_FOUR, MAPPED, NAT64, TEREDO])
def test_ipv6_forms_carrying_an_allowed_ipv4_are_never_dialled(address: str) -> None:
    """Judged by the IPv4 address they carry (allowed here), and still never
    dialled: the proxy would otherwise reach a public relay or translator."""
    assert ipaddress.ip_address(address).version == 6

    async def go() -> None:
        resolver = ScriptedResolver({"only.test": [address]})
        dialler = Dialler()
        async with proxy(resolver, dialler=dialler) as (p, _):
            grant, token = open_call(p, ("only.test:443", f"[{address}]:443"))
            for target in ("only.test:443", f"[{ipaddress.ip_address(address)}]:443"):
                answer = await exchange(p, f"CONNECT {target} HTTP/1.1\r\n{auth(token)}\r\n".encode())
                assert answer.startswith(b"HTTP/1.1 403 "), answer
                assert b"X-Airlock-Egress-Reason: address_denied" in answer
                assert b"never dialled" in answer
            await p.close_call(grant)
            assert dialler.dialled == []
            assert all("never dialled" in r.message for r in grant.records)

    run(go)


def test_a_name_with_a_plain_answer_too_is_dialled_at_the_plain_one() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"mixed.test": [SIX_TO_FOUR, UPSTREAM_IP]})
        dialler = Dialler()
        async with upstream(lambda data: b"echo:" + data) as up, proxy(resolver, dialler=dialler) as (p, _):
            grant, token = open_call(p, (f"mixed.test:{up.port}",))
            hello = client_hello("mixed.test")
            reader, writer, head = await tunnel(p, token, up.port, host="mixed.test", hello=hello)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await asyncio.wait_for(reader.read(), 5) == b"echo:" + hello
            writer.close()
            await p.close_call(grant)
            assert dialler.dialled == [UPSTREAM_IP]

    run(go)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ("2002:a00:1::1", b"carries 10.0.0.1 is a private address"),  # 6to4 of a private address
        ("::ffff:127.0.0.1", b"carries 127.0.0.1 is a loopback address"),
        ("64:ff9b::a9fe:a9fe", b"carries 169.254.169.254 is the cloud metadata address"),
    ],
)
def test_an_embedded_ipv4_that_is_denied_denies_the_name(answer: str, fragment: bytes) -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"evil.test": [UPSTREAM_IP, answer]})
        dialler = Dialler()
        async with proxy(resolver, dialler=dialler) as (p, _):
            grant, token = open_call(p, ("evil.test:443",))
            got = await exchange(p, f"CONNECT evil.test:443 HTTP/1.1\r\n{auth(token)}\r\n".encode())
            assert got.startswith(b"HTTP/1.1 403 ")
            assert fragment in got
            await p.close_call(grant)
            assert dialler.dialled == []

    run(go)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address; egress_allow_cidrs never opens it"),
        ("0.0.0.0", "0.0.0.0 is an unspecified (this-host) address; egress_allow_cidrs never opens it"),
        ("169.254.169.254", "169.254.169.254 is the cloud metadata address; egress_allow_cidrs never opens it"),
        ("169.254.10.1", "169.254.10.1 is a link-local address; egress_allow_cidrs never opens it"),
        ("::1", "::1 is a loopback address; egress_allow_cidrs never opens it"),
        ("fd00:ec2::254", "fd00:ec2::254 is the cloud metadata address; egress_allow_cidrs never opens it"),
        ("fe80::1", "fe80::1 is a link-local address; egress_allow_cidrs never opens it"),
    ],
)
def test_allow_cidrs_never_open_loopback_or_metadata(answer: str, fragment: str) -> None:
    """Whatever the registry lists (here: everything), the host itself and
    the metadata services stay closed, and the record says why."""

    async def go() -> None:
        resolver = ScriptedResolver({"inside.test": [answer]})
        dialler = Dialler()
        async with proxy(resolver, dialler=dialler) as (p, _):
            grant, token = open_call(p, ("inside.test:80",), cidrs=("0.0.0.0/0", "::/0"))
            got = await exchange(p, f"GET http://inside.test/ HTTP/1.1\r\n{auth(token)}\r\n".encode())
            assert got.startswith(b"HTTP/1.1 403 ")
            await p.close_call(grant)
            (record,) = grant.records
            assert (record.allowed, record.reason) == (False, "address_denied")
            assert fragment in record.message
            assert dialler.dialled == []

    run(go)
