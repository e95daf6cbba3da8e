"""The egress proxy on loopback: real sockets, a scripted resolver.

The integration suite (tests/integration/test_egress.py) runs the proxy for
real sandboxes; these cases pin the protocol details that are awkward to
provoke from a sandbox: what is forwarded, credential revocation, the
single lookup per attempt, and the limits.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from executor.egress import proxy as proxy_module
from executor.egress.proxy import CallGrant, EgressProxy, ProxyLimits
from executor.egress.rules import IPAddress

LIMITS = ProxyLimits(
    max_connections=4,
    max_bytes_out=64 * 1024,
    max_bytes_in=64 * 1024,
    connect_timeout_s=2,
    header_timeout_s=1,
    max_records=3,
)


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


@asynccontextmanager
async def proxy(
    resolver: ScriptedResolver, limits: ProxyLimits = LIMITS
) -> AsyncIterator[tuple[EgressProxy, list[Any]]]:
    seen: list[Any] = []
    p = EgressProxy(limits, resolver, lambda tool, record: seen.append((tool, record)))
    await p.start("127.0.0.1")
    try:
        yield p, seen
    finally:
        await p.stop()


def open_call(p: EgressProxy, allow: tuple[str, ...]) -> tuple[CallGrant, str]:
    grant, url = p.open_call("run-1", "fetch", allow, ("127.0.0.0/8",))
    return grant, url.removeprefix("http://").split("@")[0].split(":")[1]


async def tunnel(p: EgressProxy, token: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Opens a CONNECT tunnel to up.test:port; returns the streams and the proxy's answer head."""
    host, pport = p.address.split(":")
    reader, writer = await asyncio.open_connection(host, int(pport))
    writer.write(f"CONNECT up.test:{port} HTTP/1.1\r\n{auth(token)}\r\n".encode())
    return reader, writer, await reader.readuntil(b"\r\n\r\n")


async def exchange(p: EgressProxy, request: bytes) -> bytes:
    host, port = p.address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
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
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
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
                "127.0.0.1",
            )
            assert record.bytes_in == len(answer)
            assert record.bytes_out == len(up.received[0])
            assert seen == [("fetch", record)]

    run(go)


def test_connect_tunnels_bytes_both_ways() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
        async with upstream(lambda data: b"echo:" + data) as up, proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{up.port}",))
            reader, writer, head = await tunnel(p, token, up.port)
            assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
            writer.write(b"opaque-tls-bytes")
            assert await asyncio.wait_for(reader.read(), 5) == b"echo:opaque-tls-bytes"
            writer.close()
            await p.close_call(grant)
            assert up.received == [b"opaque-tls-bytes"]
            assert grant.records[0].method == "CONNECT"

    run(go)


def test_missing_wrong_and_revoked_credentials_get_407() -> None:
    async def go() -> None:
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
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
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
        hold = asyncio.Event()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await hold.wait()
            writer.close()

        server = await asyncio.start_server(slow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with proxy(resolver) as (p, _):
            grant, token = open_call(p, (f"up.test:{port}",))
            reader, writer, _ = await tunnel(p, token, port)
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
        resolver = ScriptedResolver({"rebind.test": ["127.0.0.1", "10.0.0.1"], "up.test": ["127.0.0.1"]})
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
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
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
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
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
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
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
        resolver = ScriptedResolver({"up.test": ["127.0.0.1"]})
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


def test_connections_before_authentication_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle connections that never send a head cannot pile up without bound."""
    monkeypatch.setattr(proxy_module, "MAX_PENDING", 2)

    async def go() -> None:
        async with proxy(ScriptedResolver({})) as (p, seen):
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
