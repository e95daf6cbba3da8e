#!/usr/bin/env python3
"""Egress proxy cost on loopback: added latency per request and throughput.

The proxy (airlock/executor/egress/proxy.py, the code the executor runs)
serves on 127.0.0.1 in a thread with its own event loop, as it does in the
executor. An upstream server runs in a child process on a private address
of this host (the docker0 bridge's, or the first private IPv4 found): the
proxy never opens loopback, whatever egress_allow_cidrs says. The client, in this
process, compares the same work direct and through the proxy:

- latency: N fresh connections, each one plain-HTTP GET (forwarded) and one
  CONNECT + request/response (tunnelled), against the same GET made directly;
- throughput: one CONNECT tunnel carrying SIZE bytes downstream, against the
  same transfer direct.

Usage: .venv/bin/python scripts/bench_egress.py [--requests 500] [--mib 256]
Prints medians and p99; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import multiprocessing
import socket
import statistics
import subprocess
import threading
import time

from airlock.executor.egress.proxy import EgressProxy, ProxyLimits
from airlock.executor.egress.rules import IPAddress

BODY = b"x" * 1024
CHUNK = 256 * 1024


def upstream_address() -> str:
    """A private, non-loopback IPv4 address of this host."""
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    private = [a for a in found if ipaddress.ip_address(a).is_private and not ipaddress.ip_address(a).is_loopback]
    if not private:
        raise SystemExit("bench_egress: no private IPv4 address on this host for the upstream")
    docker = [line.split()[3].split("/")[0] for line in out.splitlines() if line.split()[1] == "docker0"]
    return docker[0] if docker else private[0]


UPSTREAM = upstream_address()


def serve_upstream(port_out: multiprocessing.connection.Connection) -> None:  # type: ignore[name-defined]
    """GET /n -> 1 KiB body; "STREAM <bytes>\\n" -> that many bytes."""
    srv = socket.create_server((UPSTREAM, 0))
    port_out.send(srv.getsockname()[1])

    def handle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\n" not in data:
                more = conn.recv(4096)
                if not more:
                    return
                data += more
            if data.startswith(b"STREAM "):
                left = int(data.split()[1])
                block = b"y" * CHUNK
                while left > 0:
                    n = min(left, CHUNK)
                    conn.sendall(block[:n])
                    left -= n
                return
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY)

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


class Pinned:
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        del host, port
        return [ipaddress.ip_address(UPSTREAM)]


def start_proxy(upstream_port: int, total_bytes: int) -> tuple[str, int, str]:
    limits = ProxyLimits(
        max_connections=10**9,
        max_bytes_out=10**12,
        max_bytes_in=max(total_bytes * 4, 10**10),
        connect_timeout_s=5,
        header_timeout_s=5,
        max_records=16,
    )
    ready = threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()

        async def main() -> None:
            proxy = EgressProxy(limits, Pinned(), lambda _tool, _record: None)
            port = await proxy.start("127.0.0.1")
            _, url = proxy.open_call("bench", "bench", (f"up.test:{upstream_port}",), (f"{UPSTREAM}/32",))
            box.update(port=port, token=url.split(":")[2].split("@")[0])
            ready.set()
            await asyncio.Event().wait()

        loop.run_until_complete(main())

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return "127.0.0.1", int(box["port"]), str(box["token"])  # type: ignore[call-overload]


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def get_direct(port: int) -> None:
    with socket.create_connection((UPSTREAM, port)) as s:
        s.sendall(b"GET /n HTTP/1.1\r\nHost: up.test\r\n\r\n")
        assert read_all(s).endswith(BODY)


def get_forwarded(proxy: tuple[str, int, str], up: int) -> None:
    host, port, token = proxy
    auth = base64.b64encode(f"airlock:{token}".encode()).decode()
    with socket.create_connection((host, port)) as s:
        s.sendall(f"GET http://up.test:{up}/n HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
        assert read_all(s).endswith(BODY)


def open_tunnel(proxy: tuple[str, int, str], up: int) -> socket.socket:
    host, port, token = proxy
    auth = base64.b64encode(f"airlock:{token}".encode()).decode()
    s = socket.create_connection((host, port))
    s.sendall(f"CONNECT up.test:{up} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)  # nothing follows the 200 until we send
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def get_tunnelled(proxy: tuple[str, int, str], up: int) -> None:
    with open_tunnel(proxy, up) as s:
        s.sendall(b"GET /n HTTP/1.1\r\nHost: up.test\r\n\r\n")
        assert read_all(s).endswith(BODY)


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    total = args.mib * 1024 * 1024

    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve_upstream, args=(child,), daemon=True)
    server.start()
    up = parent.recv()
    proxy = start_proxy(up, total)

    for fn in (lambda: get_direct(up), lambda: get_forwarded(proxy, up), lambda: get_tunnelled(proxy, up)):
        timed(fn, 20)  # warm up
    direct = timed(lambda: get_direct(up), args.requests)
    forwarded = timed(lambda: get_forwarded(proxy, up), args.requests)
    tunnelled = timed(lambda: get_tunnelled(proxy, up), args.requests)
    print(f"latency, {args.requests} fresh connections each, 1 KiB response (ms):")
    for name, values in (("direct", direct), ("HTTP forward", forwarded), ("CONNECT tunnel", tunnelled)):
        print(f"  {name:15s} median {statistics.median(values):6.3f}   p99 {pct(values, 0.99):6.3f}")
    for name, values in (("HTTP forward", forwarded), ("CONNECT tunnel", tunnelled)):
        print(f"  added by proxy ({name}): median {statistics.median(values) - statistics.median(direct):.3f} ms")

    def stream(sock: socket.socket) -> float:
        t0 = time.perf_counter()
        sock.sendall(b"STREAM %d\n" % total)
        got = 0
        while data := sock.recv(1 << 20):
            got += len(data)
        assert got == total, got
        return total / (time.perf_counter() - t0) / 1e6

    with socket.create_connection((UPSTREAM, up)) as s:
        direct_mbs = stream(s)
    with open_tunnel(proxy, up) as s:
        proxied_mbs = stream(s)
    print(f"throughput, one connection, {args.mib} MiB downstream (MB/s):")
    print(f"  direct {direct_mbs:8.1f}   through CONNECT tunnel {proxied_mbs:8.1f}")
    server.terminate()


if __name__ == "__main__":
    main()
