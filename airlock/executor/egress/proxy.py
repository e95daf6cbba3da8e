"""The egress proxy: the only way out of a sandbox that was granted egress.

It speaks HTTP CONNECT (TLS passes through untouched; the proxy sees only the
host and port) and plain HTTP forward proxying (absolute-form requests).
Each call gets its own credential: the sandbox's HTTP(S)_PROXY carries it,
and the proxy looks the call up by it, so a connection is judged by *its own
call's* allowlist and counted against its own call's limits. The credential
is good only from its call's sandbox: the executor assigns each sandbox its
address on the egress network before the container starts, and a credential
presented from any other address is refused (407) like a wrong one. When the
call ends its credential is revoked and its open connections are closed.

A desktop sandbox's browser cannot present a credential (it would ask the
model for one), so a desktop's address is registered as a *source* instead
(add_source): while one of its calls runs, the call's grant is found by the
connection's source address alone, and between calls its attempts are
refused with 403 (never 407, whose challenge would put a login dialog on
the screen). That address is fixed before the container starts and no other
sandbox of this executor gets it while the session holds it (no sandbox has
CAP_NET_ADMIN or CAP_NET_RAW to take it). Docker frees the address when the
container stops, though: where several executors share one egress network,
another executor's sandbox could be given it in the moments before this
executor notices the desktop died, and inherit a call's grant that long.
Desktops with egress want an egress network per executor (docs/computer-use.md).

No sandbox can starve the others: connections that have not yet sent a
request head are capped per source address and in total, and open tunnels
are capped below the process's file-descriptor limit (ProxyLimits).

For every attempt the proxy normalises the host, matches the allowlist,
resolves the name itself, checks every resolved address, and connects to
the address it checked (never a second lookup, which DNS rebinding would
exploit). IPv6 addresses that carry an IPv4 address (6to4, Teredo, NAT64,
IPv4-mapped) are judged by that address and never dialled. Every attempt
becomes an EgressRecord returned with the run.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from airlock.common.egress_http import HttpRule
from airlock.executor._errors import Denied, HostError, RunRefused
from airlock.executor._model import EgressRecord
from airlock.executor.egress.ca import LeafIssuer
from airlock.executor.egress.inspect import HostRules, Injection, Records, relay
from airlock.executor.egress.rules import (
    Allowlist,
    Host,
    IPAddress,
    IPNetwork,
    address_problem,
    embedded_ipv4,
    normalize_host,
    parse_networks,
    resolve_order,
)
from airlock.executor.egress.sni import MAX_HELLO_BYTES, Hello, read_hello

log = logging.getLogger("airlock.executor.egress")

#: Reason codes of a refused or failed attempt (a closed set: metric labels).
REASONS = (
    "host_not_allowed",
    "port_not_allowed",
    "ip_literal",
    "bad_host",
    "address_denied",
    "resolve_failed",
    "connect_failed",
    "too_many_connections",
    "bad_request",
    "call_ended",
    "unauthenticated",
    "overloaded",
    "host_mismatch",
    "tls_required",
    "upstream_tls_failed",
    "client_tls_failed",
    "secret_wrong_host",
    "secret_misplaced",
)
#: RFC 9110 tchar: what a method or a header name may consist of.
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rf"(?P<method>{_TCHARS}) (?P<target>[\x21-\x7e]+) HTTP/1\.[01]")
_HEADER = re.compile(rf"(?P<name>{_TCHARS}):(?P<value>[\t\x20-\x7e\x80-\xff]*)")
#: Connections not yet tied to a call (no head read yet) the proxy holds at
#: once; beyond it new ones are closed at accept, so sandboxes cannot run the
#: executor out of file descriptors before they authenticate.
MAX_PENDING = 256
#: The same, per source address (one sandbox): a real client sends its head
#: at once, so a handful is plenty, and one sandbox holding idle
#: connections can no longer use up MAX_PENDING for every other call.
MAX_PENDING_PER_SOURCE = 8
#: Open tunnels (allowed connections, two descriptors each) at once, over all
#: calls; Egress lowers it to fit the process's descriptor limit.
MAX_TUNNELS = 1024
#: Threads for DNS lookups, shared by all calls; a call may have at most
#: LOOKUPS_PER_CALL of them busy, so one call cannot starve the others.
RESOLVER_THREADS = 16
LOOKUPS_PER_CALL = 4
#: The longest request head we read (request line plus headers).
MAX_HEAD_BYTES = 16 * 1024
CHUNK = 256 * 1024
#: What an upstream connection buffers before reading pauses (asyncio stops
#: at twice this): with up to max_connections tunnels per call, the memory
#: a sandbox that stops reading can pin stays small.
UPSTREAM_BUFFER = 64 * 1024
#: Hop-by-hop headers a forward proxy must not pass on (RFC 9110 7.6.1),
#: plus our own credential.
_HOP_HEADERS = {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class ProxyLimits:
    max_connections: int
    max_bytes_out: int
    max_bytes_in: int
    connect_timeout_s: float
    header_timeout_s: float
    #: Records kept per call; attempts beyond are only counted.
    max_records: int
    #: Connections without a request head yet, in total and per source address.
    max_pending: int = MAX_PENDING
    max_pending_per_source: int = MAX_PENDING_PER_SOURCE
    #: Upstream connections open at once over all calls; beyond, 503 overloaded.
    max_tunnels: int = MAX_TUNNELS


@dataclass
class CallGrant:
    """One call's egress: its allowlist, limits, counters and records."""

    run_id: str
    tool: str
    allowlist: Allowlist
    allow_networks: tuple[IPNetwork, ...]
    limits: ProxyLimits
    #: The sandbox's address: the only source the credential is good from
    #: (None: any source, for a proxy without a sandbox network).
    source: IPAddress | None = None
    attempts: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    records: list[EgressRecord] = field(default_factory=list)
    unrecorded: int = 0
    closed: bool = False
    #: The address is a session sandbox's, held beyond this call.
    keeps_address: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    lookups: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LOOKUPS_PER_CALL))
    #: Allowlist entries whose connections the proxy terminates (issue 17),
    #: each with its rules and secrets; the first whose entry matches wins.
    inspect: tuple[Inspection, ...] = ()

    def placeholders(self) -> set[bytes]:
        found: set[bytes] = set()
        for entry in self.inspect:
            found.update(entry.foreign)
            found.update(i.placeholder for i in entry.injections)
        return found

    def inspection_for(self, host: Host, port: int) -> HostRules | None:
        """The rules of the entry naming this host: an exact entry before
        any glob (a glob must never shadow an exact host's rules), then the
        longest glob."""
        matching = [e for e in self.inspect if e.match.check(host, port) is None]
        if not matching:
            return None
        entry = min(matching, key=lambda e: ("*" in e.entry, -len(e.entry)))
        return HostRules(host, port, entry.rules, entry.injections, entry.foreign)


@dataclass(frozen=True)
class Inspection:
    """One inspected allowlist entry of a call: its HTTP rules, the secrets
    set on its requests, and the placeholders that must never go there."""

    entry: str
    match: Allowlist
    rules: tuple[HttpRule, ...] = ()
    injections: tuple[Injection, ...] = ()
    foreign: Mapping[bytes, str] = field(default_factory=dict)


class TLS(NamedTuple):
    """What inspection needs: leaf certificates for the sandbox side, and
    the verifying client context for the upstream side."""

    issuer: LeafIssuer
    upstream: ssl.SSLContext


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The host's resolver (getaddrinfo), after a static hosts table.

    The table works like /etc/hosts for the proxy alone: operators pin names
    to addresses with it, and tests map test names to the servers they start.
    Its answers are checked exactly like DNS answers.
    """

    def __init__(self, hosts: Mapping[str, tuple[str, ...]]) -> None:
        self._hosts = {normalize_host(k).name: [ipaddress.ip_address(a) for a in v] for k, v in hosts.items()}
        # getaddrinfo blocks a thread for as long as the name servers take,
        # and a sandbox can pick slow names. Lookups get threads of their
        # own, so they can never hold up the Docker calls in asyncio's pool.
        self._pool = concurrent.futures.ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="dns")

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        if host in self._hosts:
            return list(self._hosts[host])
        infos = await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        )
        return resolve_order(infos)

    def close(self) -> None:
        # A lookup stuck on a dead name server must not hold up shutdown.
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Cut(Exception):  # noqa: N818 - control flow: a limit ended the connection
    pass


#: Told of every attempt: the call's tool, or None when no call owns it.
Observer = Callable[[str | None, EgressRecord], None]


class Connector(Protocol):
    """Opens the upstream connection (asyncio.open_connection; unit tests
    redirect a documentation address to their loopback servers)."""

    async def __call__(
        self, host: str, port: int, *, limit: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


async def open_connection(host: str, port: int, *, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, limit=limit)


class EgressProxy:
    def __init__(
        self,
        limits: ProxyLimits,
        resolver: Resolver,
        observe: Observer,
        connect: Connector = open_connection,
        tls: TLS | None = None,
    ) -> None:
        self._limits = limits
        self._tls = tls
        self._resolver = resolver
        self._observe = observe
        self._connect_upstream = connect
        self._grants: dict[bytes, CallGrant] = {}
        #: Desktop sandboxes' addresses, each with its running call's grant
        #: (None between calls).
        self._by_source: dict[IPAddress, CallGrant | None] = {}
        self._pending = 0
        self._pending_by_source: dict[str, int] = {}
        self._tunnels = 0
        self._sources: IPNetwork | None = None
        self._server: asyncio.Server | None = None
        self.address = ""

    def set_tls(self, tls: TLS) -> None:
        """Inspection's parts, once the executor has made its CA."""
        self._tls = tls

    async def start(self, host: str, port: int = 0, sources: IPNetwork | None = None) -> int:
        """Listens on host:port; with ``sources``, connections from any other
        address (the host's own processes, say) are dropped at accept."""
        self._sources = sources
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD_BYTES)
        bound = int(self._server.sockets[0].getsockname()[1])
        self.address = f"{host}:{bound}"
        return bound

    async def stop(self) -> None:
        for grant in list(self._grants.values()):
            await self.close_call(grant)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def open_call(
        self,
        run_id: str,
        tool: str,
        allowlist: tuple[str, ...],
        allow_cidrs: tuple[str, ...],
        source: IPAddress | None = None,
        *,
        inspect: tuple[Inspection, ...] = (),
    ) -> tuple[CallGrant, str]:
        """Registers a call; returns its grant and the proxy URL (with its
        credential). ``source`` is the sandbox's address, fixed before it
        starts; for a registered source (add_source) the grant is also found
        by that address alone while the call runs."""
        held = self._by_source.get(source) if source is not None else None
        if held is not None and not held.closed:
            # Never silently take over a running call's address: fail closed.
            raise RunRefused("egress_unavailable", f"desktop address {source} already has a running call")
        if inspect and self._tls is None:
            raise RunRefused("egress_unavailable", "this executor's egress proxy cannot inspect TLS (no CA)")
        grant = CallGrant(run_id, tool, Allowlist(allowlist), parse_networks(allow_cidrs), self._limits, source)
        grant.inspect = inspect
        token = secrets.token_urlsafe(24)
        self._grants[_key(token)] = grant
        if source is not None and source in self._by_source:
            self._by_source[source] = grant
        return grant, f"http://airlock:{token}@{self.address}"

    def add_source(self, source: IPAddress) -> None:
        """A desktop sandbox's address: its calls' grants are found by it."""
        self._by_source[source] = None

    def remove_source(self, source: IPAddress) -> None:
        self._by_source.pop(source, None)

    async def close_call(self, grant: CallGrant) -> None:
        """Revokes the credential and closes the call's open connections."""
        grant.closed = True
        for key, g in list(self._grants.items()):
            if g is grant:
                del self._grants[key]
        if grant.source is not None and self._by_source.get(grant.source) is grant:
            self._by_source[grant.source] = None
        tasks = list(grant.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- one client connection ----------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._authenticate_and_serve(reader, writer)
        except asyncio.CancelledError:
            # The call ended (or the proxy stops): drop the socket at once
            # rather than wait for a peer that may not be reading.
            writer.transport.abort()
            raise
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _authenticate_and_serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_ip(writer)
        if peer is None or (self._sources is not None and peer not in self._sources):
            # Not a sandbox on the egress network: nothing here is for it.
            self._observe(None, EgressRecord("HTTP", "", 0, reason="unauthenticated"))
            writer.transport.abort()
            return
        source = str(peer)
        self._pending += 1
        self._pending_by_source[source] = self._pending_by_source.get(source, 0) + 1
        try:
            if (
                self._pending > self._limits.max_pending
                or self._pending_by_source[source] > self._limits.max_pending_per_source
            ):
                self._observe(None, EgressRecord("HTTP", "", 0, reason="overloaded"))
                writer.transport.abort()
                return
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._limits.header_timeout_s)
            method, target, headers = _parse_head(head)
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError, ValueError, ConnectionError):
            self._observe(None, EgressRecord("HTTP", "", 0, reason="bad_request"))
            await _respond(writer, 400, "bad_request", "airlock egress proxy: malformed or incomplete request")
            return
        finally:
            self._pending -= 1
            left = self._pending_by_source[source] - 1
            if left:
                self._pending_by_source[source] = left
            else:
                del self._pending_by_source[source]
        grant = self._grants.get(_key(_credential(headers)))
        if grant is not None and grant.source is not None and grant.source != peer:
            # A live credential, but not from its own sandbox (leaked to
            # another call): treated exactly like a wrong one.
            log.debug("egress credential of run %s presented from %s, not %s", grant.run_id, peer, grant.source)
            grant = None
        if grant is None and peer in self._by_source:
            # A desktop's browser: its running call's grant, if any.
            grant = self._by_source[peer]
            if grant is None or grant.closed:
                self._observe(None, EgressRecord("HTTP", "", 0, reason="unauthenticated"))
                why = "airlock egress proxy: no call of this desktop is running"
                await _respond(writer, 403, "unauthenticated", why)
                return
        if grant is None or grant.closed:
            # Not a live call's credential: nothing to attribute it to.
            self._observe(None, EgressRecord("HTTP", "", 0, reason="unauthenticated"))
            await _respond(
                writer, 407, "unauthenticated", "airlock egress proxy: missing or expired call credential",
                extra=(("Proxy-Authenticate", 'Basic realm="airlock"'),),
            )  # fmt: skip
            return
        task = asyncio.current_task()
        assert task is not None
        grant.tasks.add(task)
        try:
            await self._serve(grant, reader=reader, writer=writer, method=method, target=target, headers=headers)
        finally:
            grant.tasks.discard(task)

    async def _serve(
        self,
        grant: CallGrant,
        *,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
    ) -> None:
        started = time.monotonic()
        kind: Literal["CONNECT", "HTTP"] = "CONNECT" if method == "CONNECT" else "HTTP"
        record = EgressRecord(kind, target[:255], 0)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                _count_attempt(grant)
                host, port, forward = _destination(method, target, headers)
                record.host, record.port = host.text, port
                _no_placeholders(grant, forward)
                up_reader, upstream, address = await self._connect(grant, host, port)
                record.address = str(address)
            except Denied as exc:
                record.reason, record.message = exc.code, str(exc)
                await _respond(writer, exc.status, exc.code, f"airlock egress proxy denied {record.host}: {exc}")
                return
            record.allowed = True
            if forward is None:
                await self._tunnel(grant, record, host, (reader, writer), (up_reader, upstream))
            else:
                # Exactly one request: the head we built, the body its
                # Content-Length announced, and nothing more from the sandbox;
                # then the answer until the server closes (Connection: close).
                head, body_bytes = forward
                await self._send(grant, record, upstream, head)
                await self._pump(grant, record, reader, upstream, direction="out", upto=body_bytes)
                await self._pump(grant, record, up_reader, writer, direction="in")
        except _Cut:
            pass
        except asyncio.CancelledError:
            # The call ended: drop both sockets now, without waiting for a
            # peer that may not be reading.
            record.cut = record.cut or "call_ended"
            if not record.allowed:
                record.reason = record.reason or "call_ended"
            writer.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
        except (ConnectionError, OSError):
            pass  # either side went away; the record shows how far it got
        finally:
            if upstream is not None:
                self._tunnels -= 1  # taken in _connect
                upstream.close()
            record.duration_ms = round((time.monotonic() - started) * 1000)
            if len(grant.records) < grant.limits.max_records:
                grant.records.append(record)
            else:
                grant.unrecorded += 1
            self._observe(grant.tool, record)

    async def _connect(
        self, grant: CallGrant, host: Host, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, IPAddress]:
        problem = grant.allowlist.check(host, port)
        if problem is not None:
            raise Denied(*problem)
        if host.ip is not None:
            addresses: list[IPAddress] = [host.ip]
        else:
            try:
                async with asyncio.timeout(grant.limits.connect_timeout_s), grant.lookups:
                    addresses = await self._resolver.resolve(host.name, port)
            except (OSError, TimeoutError) as exc:
                raise Denied("resolve_failed", f"cannot resolve {host.name}: {exc}", 502) from exc
        address = _address_to_dial(host, addresses, grant.allow_networks)
        # Each tunnel holds two descriptors: the total stays below the
        # process's limit, whoever opens them. Released by _serve.
        if self._tunnels >= self._limits.max_tunnels:
            raise Denied("overloaded", "the egress proxy is at its limit of open connections; retry later", 503)
        self._tunnels += 1
        try:
            up_reader, up_writer = await asyncio.wait_for(
                self._connect_upstream(str(address), port, limit=UPSTREAM_BUFFER), grant.limits.connect_timeout_s
            )
        except BaseException as exc:
            self._tunnels -= 1
            if isinstance(exc, (OSError, TimeoutError)):
                raise Denied(
                    "connect_failed", f"cannot connect to {address} port {port}: {exc or 'timeout'}", 502
                ) from exc
            raise
        return up_reader, up_writer, address

    async def _tunnel(
        self,
        grant: CallGrant,
        record: EgressRecord,
        host: Host,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        """A CONNECT tunnel, passed through once its ClientHello checked out."""
        reader, writer = client
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        rules = grant.inspection_for(host, record.port)
        if rules is not None:
            await self._inspect(grant, record, rules, client, up)
            return
        hello = await self._client_hello(grant, record, reader, host)
        if hello is None:
            writer.transport.abort()  # after the 200 only a close can say no
            return
        await self._send(grant, record, up[1], hello)
        await self._splice(grant, record, client_r=reader, client_w=writer, up_r=up[0], up_w=up[1])

    async def _inspect(
        self,
        grant: CallGrant,
        record: EgressRecord,
        rules: HostRules,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        """An inspected tunnel: the sandbox's TLS ends here with a leaf for
        the CONNECT host (its SNI must name that host), the proxy's own
        verified TLS goes upstream, and HTTP/1.1 is relayed request by
        request (egress/inspect.py)."""
        assert self._tls is not None  # open_call refused inspection without it
        host = rules.host
        record.inspected = True
        leaf = self._tls.issuer.server_context(host.text)
        if leaf.sni_callback is None:
            # Set once per host: the leaf's context is cached per host, so
            # its SNI check knows the one name it may be asked for.
            leaf.sni_callback = _sni_check(None if host.ip is not None else host.name)
        try:
            await client[1].start_tls(leaf, ssl_handshake_timeout=grant.limits.header_timeout_s)
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            why = exc.reason if isinstance(exc, ssl.SSLError) else ""
            record.allowed = False
            if why == "CALLBACK_FAILED":  # the SNI check said no
                record.reason = "host_mismatch"
                record.message = f"the TLS ClientHello does not name {host.text}, the tunnel's host"
            elif isinstance(exc, TimeoutError) or why in _NOT_TLS:
                record.reason = "tls_required"
                record.message = f"no TLS handshake for {host.text}: {why or 'timeout'}"
            else:
                # Past the hello: the sandbox refused the leaf (it does not
                # trust the executor's CA, or pins its own) and closed.
                record.reason = "client_tls_failed"
                record.message = f"the sandbox ended the TLS handshake for {host.text}: {type(exc).__name__} {exc}"
            client[1].transport.abort()
            return
        try:
            await up[1].start_tls(
                self._tls.upstream,
                server_hostname=host.name if host.ip is None else str(host.ip),
                ssl_handshake_timeout=grant.limits.connect_timeout_s,
            )
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            record.reason = "upstream_tls_failed"
            record.message = f"the TLS connection to {host.text} failed: {exc}"
            record.allowed = False
            client[1].transport.abort()
            return
        records = Records(record.requests, grant.limits.max_records)
        try:
            ended = await relay(
                client, up, rules, _GrantMeter(grant, record), records, idle_timeout_s=grant.limits.header_timeout_s
            )
        finally:
            record.requests_unrecorded = records.unrecorded
            record.request_outcomes = dict(records.outcomes)
        if ended in {"bytes_out_limit", "bytes_in_limit"}:
            record.cut = ended

    async def _client_hello(
        self, grant: CallGrant, record: EgressRecord, reader: asyncio.StreamReader, host: Host
    ) -> bytes | None:
        """The tunnel's first bytes, once they are a TLS ClientHello whose SNI
        names the CONNECT host (none for an IP literal); else None, with the
        record turned into a refusal. Nothing has gone upstream yet."""
        data = b""
        hello = Hello("more")
        try:
            async with asyncio.timeout(grant.limits.header_timeout_s):
                while hello.kind == "more":
                    chunk = await reader.read(MAX_HELLO_BYTES - len(data))
                    if not chunk:
                        break
                    data += chunk
                    hello = read_hello(data)
        except TimeoutError:
            pass
        if hello.kind == "tls":
            asked = _sni_host(hello.server_name)
            if asked == (None if host.ip is not None else host.name):
                return data
            record.message = (
                f"the TLS ClientHello asks for {hello.server_name!r}, but the tunnel is for {host.text}"
                if hello.server_name
                else f"the TLS ClientHello names no server, but the tunnel is for {host.text}"
            )
            record.reason = "host_mismatch"
        elif data:
            record.reason = "tls_required"
            record.message = f"a CONNECT tunnel to {host.text} must start with a TLS ClientHello"
        else:
            # Closed or silent before a whole hello: nothing was sent on.
            record.reason = "tls_required"
            record.message = f"no complete TLS ClientHello for {host.text} within the header timeout"
        record.allowed = False
        return None

    async def _send(self, grant: CallGrant, record: EgressRecord, dst: asyncio.StreamWriter, data: bytes) -> None:
        room = grant.limits.max_bytes_out - grant.bytes_out
        if len(data) > room:
            record.cut = "bytes_out_limit"
            raise _Cut
        grant.bytes_out += len(data)
        record.bytes_out += len(data)
        dst.write(data)
        await dst.drain()

    async def _pump(
        self,
        grant: CallGrant,
        record: EgressRecord,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        *,
        direction: Literal["out", "in"],
        upto: int | None = None,
    ) -> None:
        """Copies src to dst until EOF (or ``upto`` bytes), within the call's
        byte budget for that direction; a cut raises _Cut."""
        limit = grant.limits.max_bytes_out if direction == "out" else grant.limits.max_bytes_in
        left = upto
        while left is None or left > 0:
            data = await src.read(CHUNK if left is None else min(CHUNK, left))
            if not data:
                break
            if left is not None:
                left -= len(data)
            used = grant.bytes_out if direction == "out" else grant.bytes_in
            keep = data[: max(limit - used, 0)]
            if direction == "out":
                grant.bytes_out += len(keep)
                record.bytes_out += len(keep)
            else:
                grant.bytes_in += len(keep)
                record.bytes_in += len(keep)
            if keep:
                dst.write(keep)
                await dst.drain()
            if len(keep) < len(data):
                record.cut = f"bytes_{direction}_limit"
                raise _Cut

    async def _splice(
        self,
        grant: CallGrant,
        record: EgressRecord,
        *,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        """Both ways, for a CONNECT tunnel."""

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: Literal["out", "in"]) -> None:
            await self._pump(grant, record, src, dst, direction=direction)
            if dst.can_write_eof():
                with contextlib.suppress(OSError):
                    dst.write_eof()

        out = asyncio.ensure_future(pump(client_r, up_w, "out"))
        back = asyncio.ensure_future(pump(up_r, client_w, "in"))
        try:
            done, _ = await asyncio.wait({out, back}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raises a cut or a connection error
            if back not in done:
                # The sandbox finished sending; the answer may still be coming.
                await back
        finally:
            for task in (out, back):
                task.cancel()
            await asyncio.gather(out, back, return_exceptions=True)


def _no_placeholders(grant: CallGrant, forward: tuple[bytes, int] | None) -> None:
    """Plain HTTP is never inspected, so no secret goes there: a forwarded
    request that carries a placeholder is refused."""
    if forward is not None and any(token in forward[0] for token in grant.placeholders()):
        raise Denied("secret_wrong_host", "a secret's placeholder may go only to its own host, over TLS")


class _GrantMeter:
    """An inspected connection's bytes, against its call's budgets."""

    def __init__(self, grant: CallGrant, record: EgressRecord) -> None:
        self._grant = grant
        self._record = record

    def take_out(self, n: int) -> bool:
        if self._grant.bytes_out + n > self._grant.limits.max_bytes_out:
            return False
        self._grant.bytes_out += n
        self._record.bytes_out += n
        return True

    def take_in(self, n: int) -> bool:
        if self._grant.bytes_in + n > self._grant.limits.max_bytes_in:
            return False
        self._grant.bytes_in += n
        self._record.bytes_in += n
        return True


#: OpenSSL's reasons for first bytes that are no TLS ClientHello at all.
_NOT_TLS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL", "UNSUPPORTED_PROTOCOL",
     "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNEXPECTED_MESSAGE", "NO_SHARED_CIPHER"}
)  # fmt: skip


def _sni_check(expected: str | None) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    """An SNI callback that lets only ``expected`` (None: no SNI) through."""

    def check(_obj: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> int | None:
        return None if _sni_host(name) == expected else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    return check


def _sni_host(name: str | None) -> str | None:
    """A ClientHello's SNI as a normalised name (None: none, or not a name)."""
    if not name:
        return None
    try:
        host = normalize_host(name)
    except HostError:
        return f"invalid:{name}"  # never equal to a normalised host
    return host.name if host.ip is None else f"ip:{host.name}"


def _address_to_dial(host: Host, addresses: list[IPAddress], allowed: tuple[IPNetwork, ...]) -> IPAddress:
    """The address to connect to, after every answer was checked."""
    if not addresses:
        raise Denied("resolve_failed", f"{host.name} has no addresses", 502)
    # Every answer must pass, not just the first: a name that mixes a
    # public and a private address is a rebinding setup.
    for address in addresses:
        why = address_problem(address, allowed)
        if why is not None:
            raise Denied("address_denied", f"{host.text} resolves to {why}")
    # An address carrying an IPv4 address passed on that address's merits,
    # but it is never dialled: 6to4 and Teredo go through public relays,
    # NAT64 through a translator, and a mapped one is an IPv4 address in
    # disguise. A plain answer of the same name is used instead.
    dialable = [a for a in addresses if embedded_ipv4(a) is None]
    if not dialable:
        kinds = sorted({found[0] for a in addresses if (found := embedded_ipv4(a)) is not None})
        raise Denied(
            "address_denied",
            f"{host.text} has only {'/'.join(kinds)} addresses, which carry an IPv4 address and are never dialled",
        )
    return dialable[0]


def _count_attempt(grant: CallGrant) -> None:
    """Every attempt counts against the call's limit, refused or not."""
    grant.attempts += 1
    if grant.attempts > grant.limits.max_connections:
        raise Denied("too_many_connections", f"the call's limit of {grant.limits.max_connections} connections")


def _peer_ip(writer: asyncio.StreamWriter) -> IPAddress | None:
    peer = writer.get_extra_info("peername")
    try:
        return ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except (TypeError, IndexError, ValueError):
        return None


def _key(token: str) -> bytes:
    # Looked up by digest, so the dict never compares secrets byte by byte.
    return hashlib.sha256(token.encode()).digest()


def _credential(headers: list[tuple[str, str]]) -> str:
    for name, value in headers:
        if name.lower() == "proxy-authorization":
            scheme, _, encoded = value.strip().partition(" ")
            if scheme.lower() == "basic":
                with contextlib.suppress(ValueError):
                    return base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[2]
    return ""


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """Request line and headers, strictly (RFC 9112): a token method, a
    target of visible ASCII, token header names and values without control
    characters. Anything looser is refused, because a bare LF or CR that we
    pass on is a line break to some upstream servers: it would smuggle a
    second request, with a Host of the sandbox's choosing, past our
    rewrite."""
    lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ValueError("malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        header = _HEADER.fullmatch(line)
        if header is None:
            raise ValueError("malformed header")
        headers.append((header["name"], header["value"].strip(" \t")))
    return match["method"], match["target"], headers


def _destination(
    method: str, target: str, headers: list[tuple[str, str]]
) -> tuple[Host, int, tuple[bytes, int] | None]:
    """Host, port and, for a forwarded HTTP request, the head to send
    upstream and the length of the body that follows it."""
    try:
        if method == "CONNECT":
            host_text, sep, port_text = target.rpartition(":")
            if not sep:
                raise Denied("bad_request", f"CONNECT target {target!r} is not host:port", 400)
            return normalize_host(host_text), _port(port_text), None
        try:
            url = urllib.parse.urlsplit(target)
            url_port = url.port
        except ValueError as exc:  # bad brackets or a port out of range
            raise Denied("bad_request", f"cannot parse the request URL: {exc}", 400) from exc
        if url.scheme.lower() != "http" or not url.hostname:
            raise Denied(
                "bad_request", "only CONNECT and absolute http:// requests are proxied (use CONNECT for https)", 400
            )
        if url.username is not None or url.password is not None or "@" in url.netloc:
            raise Denied("bad_request", "user info in the request URL is refused", 400)
        netloc_host = url.netloc.rpartition(":")[0] if url_port is not None else url.netloc
        host = normalize_host(netloc_host)
        port = _port(str(url_port)) if url_port is not None else 80
    except HostError as exc:
        raise Denied(exc.code, str(exc)) from exc
    path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
    # The Host header names the host we checked, whatever the sandbox put there.
    authority = host.text if port == 80 else f"{host.text}:{port}"  # noqa: PLR2004 - http's default port
    body_bytes = _body_length(headers)
    kept = [(n, v) for n, v in headers if n.lower() not in _HOP_HEADERS and n.lower() != "host"]
    lines = [f"{method} {path} HTTP/1.1", f"Host: {authority}", *(f"{n}: {v}" for n, v in kept), "Connection: close"]
    return host, port, (("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body_bytes)


def _body_length(headers: list[tuple[str, str]]) -> int:
    """The request body's length from Content-Length; a chunked body is
    refused (use CONNECT), since forwarding it would mean parsing chunks
    to know where the one request ends."""
    if any(n.lower() == "transfer-encoding" for n, _ in headers):
        raise Denied("bad_request", "Transfer-Encoding request bodies are not forwarded; use CONNECT (https)", 400)
    lengths = {v for n, v in headers if n.lower() == "content-length"}
    if not lengths:
        return 0
    if len(lengths) > 1 or not re.fullmatch(r"[0-9]{1,15}", next(iter(lengths))):
        raise Denied("bad_request", "Content-Length is malformed or repeated with different values", 400)
    return int(next(iter(lengths)))


def _port(text: str) -> int:
    # ASCII digits only: str.isdigit() accepts "²", which int() then rejects.
    if not re.fullmatch(r"[0-9]{1,5}", text) or not 0 < int(text) <= 65535:  # noqa: PLR2004 - the port range
        raise Denied("bad_request", f"port {text!r} is not a number from 1 to 65535", 400)
    return int(text)


async def _respond(
    writer: asyncio.StreamWriter, status: int, code: str, message: str, extra: tuple[tuple[str, str], ...] = ()
) -> None:
    phrase = {
        400: "Bad Request",
        403: "Forbidden",
        407: "Proxy Authentication Required",
        502: "Bad Gateway",
        503: "Service Unavailable",
    }[status]
    body = (message + "\n").encode()
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"X-Airlock-Egress-Reason: {code}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{n}: {v}" for n, v in extra),
    ]
    with contextlib.suppress(OSError):
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
