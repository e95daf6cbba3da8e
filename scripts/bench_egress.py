#!/usr/bin/env python3
"""Egress proxy cost (issue 17): added latency per new connection and per
request, inspected versus pass-through versus direct, and throughput.

The proxy (airlock/executor/egress/proxy.py, the code the executor runs)
serves on 127.0.0.1 in a thread with its own event loop, as it does in the
executor, with TLS inspection wired as the executor wires it: leaves from an
EgressCA for the sandbox side, upstream_context for its own TLS upstream.
The upstream runs in a child process on a private address of this host (the
docker0 bridge's, or the first private IPv4 found), so the proxy dials it
with its real connector and its real address checks: it never opens
loopback, whatever egress_allow_cidrs says. The upstream serves HTTPS with a
certificate for up.test and *.up.test from a second EgressCA (the proxy
trusts it as an extra anchor), and plain HTTP for the forwarded case. The
client, in this process's main thread, uses blocking sockets:

1. new connection + one GET (1 KiB): direct TLS; CONNECT pass-through (the
   client's TLS goes through to the upstream); CONNECT inspected (the
   client's TLS ends at the proxy's leaf, the proxy's goes upstream); plain
   HTTP direct and forwarded;
2. one kept-alive connection, M sequential GETs: per request;
3. one connection downloading SIZE bytes in one response: MB/s;
4. inspected, first connection to a host (its leaf issued) versus the next
   one (its leaf cached).

"inspected + secret" rows set a secret on every request, so the answer is
scrubbed and re-framed as chunked (inspect.py); plain "inspected" rows have
no secrets and no rules. Every TLS handshake is a full one (no session
resumption), as a sandbox's first connection to a host would be.

Usage: .venv/bin/python scripts/bench_egress.py [--connections 200]
  [--requests 2000] [--hosts 100] [--mib 256]
Prints p50 and p99 (ms), and MB/s; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import cProfile
import functools
import io
import ipaddress
import multiprocessing
import pstats
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airlock.executor.egress.ca import EgressCA, LeafIssuer, upstream_context
from airlock.executor.egress.inspect import Injection
from airlock.executor.egress.proxy import TLS, EgressProxy, Inspection, ProxyLimits
from airlock.executor.egress.rules import Allowlist, IPAddress

HOST = "up.test"
SMALL = b"x" * 1024
BLOCK = 256 * 1024
SECRET = b"bench-secret-value-0123456789"
PLACEHOLDER = b"airlock-secret-token-placeholder-bench"
WARMUP = 20


def upstream_address() -> str:
    """A private, non-loopback IPv4 address of this host."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    found = [(line.split()[1], line.split()[3].split("/")[0]) for line in out.splitlines()]
    private = [a for _, a in found if ipaddress.ip_address(a).is_private and not ipaddress.ip_address(a).is_loopback]
    if not private:
        raise SystemExit("bench_egress: no private IPv4 address on this host for the upstream")
    docker = [a for name, a in found if name == "docker0"]
    return docker[0] if docker else private[0]


# -- the upstream (child process) -------------------------------------------


def upstream_cert(folder: Path) -> tuple[Path, Path]:
    """A leaf for up.test and *.up.test from a CA of its own (not the
    proxy's); returns (chain file, CA file)."""
    ca = EgressCA.load_or_create(folder / "upstream-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST), x509.DNSName(f"*.{HOST}")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    leaf = ca.sign_leaf(builder)
    chain = folder / "upstream-chain.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + ca.cert_pem
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, ca.directory / "ca.pem"


def serve_upstream(address: str, chain: str, ports_out: Connection) -> None:
    """HTTPS and plain HTTP: GET /bytes/<n> -> n bytes, anything else -> 1 KiB.
    HTTPS keeps connections alive; plain HTTP closes after one answer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    context.set_alpn_protocols(["http/1.1"])
    secure = socket.create_server((address, 0), backlog=512)
    plain = socket.create_server((address, 0), backlog=512)
    ports_out.send((secure.getsockname()[1], plain.getsockname()[1]))

    def accept(server: socket.socket, tls: ssl.SSLContext | None) -> None:
        while True:
            conn, _ = server.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=answer, args=(conn, tls), daemon=True).start()

    threading.Thread(target=accept, args=(plain, None), daemon=True).start()
    accept(secure, context)


def answer(conn: socket.socket, tls: ssl.SSLContext | None) -> None:
    """One upstream connection: its requests (GETs, no bodies) in turn."""
    try:
        sock: socket.socket = tls.wrap_socket(conn, server_side=True) if tls else conn
    except (ssl.SSLError, OSError):
        conn.close()
        return
    block = memoryview(b"y" * BLOCK)
    buf = b""
    with sock:
        while True:
            while b"\r\n\r\n" not in buf:
                try:
                    more = sock.recv(65536)
                except (ssl.SSLError, OSError):
                    return
                if not more:
                    return
                buf += more
            head, _, buf = buf.partition(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            size = int(path.rpartition(b"/")[2]) if path.startswith(b"/bytes/") else len(SMALL)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            if size == len(SMALL):
                sock.sendall(SMALL)
            else:
                for start in range(0, size, BLOCK):
                    sock.sendall(block[: min(BLOCK, size - start)])
            if tls is None or b"connection: close" in head.lower():
                return


# -- the proxy (a thread with its own loop) ---------------------------------


class Pinned:
    """Every name resolves to the upstream's address."""

    def __init__(self, address: str) -> None:
        self._address = ipaddress.ip_address(address)

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        del host, port
        return [self._address]


class Proxy(NamedTuple):
    port: int
    loop: asyncio.AbstractEventLoop
    proxy: EgressProxy
    ca_pem: bytes


def start_proxy(upstream: str, folder: Path, anchor: Path) -> Proxy:
    limits = ProxyLimits(
        max_connections=10**9,
        max_bytes_out=10**15,
        max_bytes_in=10**15,
        connect_timeout_s=5,
        header_timeout_s=5,
        max_records=16,
    )
    ca = EgressCA.load_or_create(folder / "egress-ca")
    tls = TLS(LeafIssuer(ca), upstream_context([anchor]))
    proxy = EgressProxy(limits, Pinned(upstream), lambda _tool, _record: None, tls=tls)
    started: concurrent.futures.Future[tuple[int, asyncio.AbstractEventLoop]] = concurrent.futures.Future()

    def run() -> None:
        loop = asyncio.new_event_loop()

        async def main() -> None:
            started.set_result((await proxy.start("127.0.0.1"), loop))
            await asyncio.Event().wait()

        loop.run_until_complete(main())

    threading.Thread(target=run, daemon=True, name="proxy").start()
    port, loop = started.result(10)
    return Proxy(port, loop, proxy, ca.cert_pem)


def open_call(proxy: Proxy, upstream: str, ports: tuple[int, ...], *, inspect: bool, secret: bool = False) -> str:
    """A call allowed up.test and *.up.test on ``ports``, inspected or
    passed through; returns its credential. Registered on the proxy's loop:
    the proxy is not thread-safe."""
    entries = tuple(f"{h}:{p}" for p in ports for h in (HOST, f"*.{HOST}"))
    injections = (Injection("bench_token", b"authorization", b"Bearer " + SECRET, SECRET, PLACEHOLDER),)
    inspections = (
        tuple(Inspection(e, Allowlist((e,)), (), injections if secret else ()) for e in entries) if inspect else ()
    )

    async def register() -> str:
        _, url = proxy.proxy.open_call("bench", "bench", entries, (f"{upstream}/32",), inspect=inspections)
        return url.removeprefix("http://").split("@")[0].split(":")[1]

    return asyncio.run_coroutine_threadsafe(register(), proxy.loop).result(10)


# -- the client (blocking sockets, main thread) -----------------------------


class Client:
    """HTTP/1.1 over one socket: GETs with a Content-Length or chunked
    answer, the body counted and dropped."""

    def __init__(self, sock: socket.socket, authority: str) -> None:
        self.sock = sock
        self.authority = authority
        self.buf = b""
        self.scratch = bytearray(1 << 20)

    def get(self, path: str, *, close: bool = False) -> int:
        extra = "Connection: close\r\n" if close else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.authority}\r\n{extra}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"bench_egress: {lines[0]!r}")
        fields = {n.strip().lower(): v.strip() for n, _, v in (line.partition(b":") for line in lines[1:])}
        if b"content-length" in fields:
            return self._skip(int(fields[b"content-length"]))
        if fields.get(b"transfer-encoding", b"").lower() != b"chunked":
            raise RuntimeError(f"bench_egress: an answer without framing: {head!r}")
        total = 0
        while True:
            while b"\r\n" not in self.buf:
                self._fill()
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            self._skip(size + 2)
            if size == 0:
                return total
            total += size

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("bench_egress: closed mid-answer")
        self.buf += data

    def _skip(self, n: int) -> int:
        take = min(n, len(self.buf))
        self.buf = self.buf[take:]
        left = n - take
        while left > 0:
            got = self.sock.recv_into(self.scratch, min(left, len(self.scratch)))
            if not got:
                raise ConnectionError("bench_egress: closed mid-body")
            left -= got
        return n

    def read_to_close(self) -> int:
        n = len(self.buf)
        while got := self.sock.recv_into(self.scratch):
            n += got
        return n

    def close(self) -> None:
        self.sock.close()


class Setup(NamedTuple):
    upstream: str
    tls_port: int
    plain_port: int
    proxy_port: int
    upstream_ctx: ssl.SSLContext
    proxy_ctx: ssl.SSLContext
    passing: str
    inspecting: str
    secret: str


def _tunnel(s: Setup, token: str, host: str, port: int) -> socket.socket:
    auth = base64.b64encode(f"airlock:{token}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", s.proxy_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        more = sock.recv(4096)  # nothing follows the 200 until we send
        if not more:
            raise ConnectionError(f"bench_egress: the proxy closed the CONNECT: {head!r}")
        head += more
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"bench_egress: CONNECT refused: {head!r}")
    return sock


def connect(s: Setup, mode: str, host: str = HOST) -> Client:
    """A connection to host, TLS done for ``mode`` direct, pass, inspect or
    secret; plain HTTP straight to the upstream for plain-direct. (A
    forwarded request has no connection of its own: see fresh_get.)"""
    if mode == "plain-direct":
        return Client(socket.create_connection((s.upstream, s.plain_port)), f"{host}:{s.plain_port}")
    if mode == "direct":
        raw = socket.create_connection((s.upstream, s.tls_port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = s.upstream_ctx
    else:
        token = {"pass": s.passing, "inspect": s.inspecting, "secret": s.secret}[mode]
        raw = _tunnel(s, token, host, s.tls_port)
        context = s.upstream_ctx if mode == "pass" else s.proxy_ctx
    return Client(context.wrap_socket(raw, server_hostname=host), f"{host}:{s.tls_port}")


def fresh_get(s: Setup, mode: str, host: str = HOST) -> None:
    if mode == "forward":
        auth = base64.b64encode(f"airlock:{s.passing}".encode()).decode()
        with socket.create_connection(("127.0.0.1", s.proxy_port)) as sock:
            sock.sendall(
                f"GET http://{host}:{s.plain_port}/n HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode()
            )
            if Client(sock, "").read_to_close() < len(SMALL):
                raise RuntimeError("bench_egress: short forwarded answer")
        return
    client = connect(s, mode, host)
    try:
        client.get("/n", close=mode == "plain-direct")
    finally:
        client.close()


# -- measuring ----------------------------------------------------------------


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def row(name: str, values: list[float], base: list[float] | None) -> str:
    p50, p99 = statistics.median(values), pct(values, 0.99)
    added = f"{p50 - statistics.median(base):+8.3f}" if base is not None else " " * 8
    return f"  {name:28s} {p50:8.3f} {p99:8.3f}   {added}"


HEADER = f"  {'':28s} {'p50':>8s} {'p99':>8s}   {'added p50':>9s}"

MODES = {
    "direct": "direct TLS",
    "pass": "CONNECT pass-through",
    "inspect": "CONNECT inspected",
    "secret": "CONNECT inspected + secret",
}


def profiled(proxy: Proxy, work: Callable[[], object]) -> None:
    """cProfile of the proxy's thread (its loop) while ``work`` runs here."""
    profile = cProfile.Profile()
    asyncio.run_coroutine_threadsafe(_call(profile.enable), proxy.loop).result(10)
    try:
        work()
    finally:
        asyncio.run_coroutine_threadsafe(_call(profile.disable), proxy.loop).result(10)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())


async def _call(fn: Callable[[], object]) -> None:
    fn()


def new_connections(s: Setup, n: int, proxy: Proxy, *, profile: bool) -> None:
    """1. A new connection and one GET, every mode in turn (so drift hits
    them alike); plain HTTP direct and forwarded too."""
    fresh = {**MODES, "plain-direct": "direct plain HTTP", "forward": "HTTP forward (plain)"}
    for mode in fresh:
        for _ in range(WARMUP):
            fresh_get(s, mode)
    took: dict[str, list[float]] = {mode: [] for mode in fresh}

    def run() -> None:
        for _ in range(n):
            for mode in fresh:
                t0 = time.perf_counter()
                fresh_get(s, mode)
                took[mode].append((time.perf_counter() - t0) * 1000)

    run()
    print(f"\n1. new connection + one GET (1 KiB answer), {n} each, ms; added vs direct:")
    print(HEADER)
    for mode, name in fresh.items():
        base = took["plain-direct"] if mode == "forward" else took["direct"]
        print(row(name, took[mode], None if mode in {"direct", "plain-direct"} else base))
    if profile:
        print("\nproxy thread profile, inspected new connections + one GET (tottime):")
        profiled(proxy, functools.partial(timed, functools.partial(fresh_get, s, "inspect"), n))


def kept_alive(s: Setup, n: int, proxy: Proxy, *, profile: bool) -> None:
    """2. One kept-alive connection per mode, n sequential GETs."""
    kept: dict[str, list[float]] = {}
    for mode in MODES:
        client = connect(s, mode)
        for _ in range(WARMUP):
            client.get("/n")
        kept[mode] = timed(functools.partial(client.get, "/n"), n)
        client.close()
    print(f"\n2. one kept-alive connection, {n} sequential GETs (1 KiB), ms per request:")
    print(HEADER)
    for mode, name in MODES.items():
        print(row(name, kept[mode], None if mode == "direct" else kept["direct"]))
    if profile:
        print("\nproxy thread profile, inspected kept-alive GETs (tottime):")
        client = connect(s, "inspect")
        profiled(proxy, functools.partial(timed, functools.partial(client.get, "/n"), n))
        client.close()


def throughput(s: Setup, mib: int) -> None:
    """3. One answer of ``mib`` MiB on one connection per mode."""
    size = mib * 1024 * 1024
    print(f"\n3. throughput, one connection, one {mib} MiB answer, MB/s:")
    direct = 0.0
    for mode, name in MODES.items():
        client = connect(s, mode)
        client.get("/bytes/65536")  # the handshake and a first answer out of the way
        t0 = time.perf_counter()
        got = client.get(f"/bytes/{size}")
        rate = size / (time.perf_counter() - t0) / 1e6
        client.close()
        if got != size:
            raise RuntimeError(f"bench_egress: {name}: {got} bytes, not {size}")
        direct = direct or rate
        ratio = "" if mode == "direct" else f"   ({rate / direct:.0%} of direct)"
        print(f"  {name:28s} {rate:8.1f}{ratio}")


def leaves(s: Setup, hosts: int) -> None:
    """4. Each new host's first inspected connection (its leaf issued), then
    its second (the leaf cached)."""
    first: list[float] = []
    again: list[float] = []
    for i in range(hosts):
        host = f"h{i}.{HOST}"
        first.extend(timed(functools.partial(fresh_get, s, "inspect", host), 1))
        again.extend(timed(functools.partial(fresh_get, s, "inspect", host), 1))
    print(f"\n4. inspected new connection + one GET, {hosts} new hosts, ms; added vs the cached leaf:")
    print(HEADER)
    print(row("first (leaf issued)", first, again))
    print(row("second (leaf cached)", again, None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=200, help="new connections per mode (1)")
    parser.add_argument("--requests", type=int, default=2000, help="GETs on one kept-alive connection (2)")
    parser.add_argument("--mib", type=int, default=256, help="MiB in the one throughput answer (3)")
    parser.add_argument("--hosts", type=int, default=100, help="new hosts for leaf issuance (4)")
    parser.add_argument("--profile", action="store_true", help="cProfile the proxy on the inspected paths of 1 and 2")
    args = parser.parse_args()
    address = upstream_address()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        chain, anchor = upstream_cert(folder)
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve_upstream, args=(address, str(chain), child), daemon=True)
        server.start()
        tls_port, plain_port = parent.recv()
        proxy = start_proxy(address, folder, anchor)
        ports = (tls_port, plain_port)
        s = Setup(
            address,
            tls_port,
            plain_port,
            proxy.port,
            ssl.create_default_context(cafile=str(anchor)),
            ssl.create_default_context(cadata=proxy.ca_pem.decode()),
            open_call(proxy, address, ports, inspect=False),
            open_call(proxy, address, ports, inspect=True),
            open_call(proxy, address, ports, inspect=True, secret=True),
        )
        print(
            f"bench_egress: {ssl.OPENSSL_VERSION}, {multiprocessing.cpu_count()} CPUs; upstream on {address} "
            f"(child process), proxy on 127.0.0.1:{proxy.port} (thread), client in the main thread"
        )
        new_connections(s, args.connections, proxy, profile=args.profile)
        kept_alive(s, args.requests, proxy, profile=args.profile)
        throughput(s, args.mib)
        leaves(s, args.hosts)
        print(
            "\ntargets (issue 17): <= 2 ms added per new inspected connection, <= 0.5 ms per kept-alive "
            "request, >= 100 MB/s: see 'added p50' in 1 and 2, MB/s in 3"
        )
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
