"""Coverage-guided fuzz target (atheris) for the egress proxy's request-head
parser: what a sandbox sends before the proxy decides anything.

A head is either refused (ValueError from the strict parser, Denied from
the destination check) or becomes exactly one request to forward: one head
ending in a single blank line, no bare CR or LF inside it, exactly one Host
header and it names the host the proxy checked. Any other exception, or a
forwarded head that breaks one of those rules (request smuggling), is a
finding.

    python tests/fuzz/fuzz_proxy_head.py tests/fuzz/corpus/proxy_head -max_total_time=60
"""

from __future__ import annotations

# Heavy dependencies first, uninstrumented: coverage guidance is for our code.
import asyncio  # noqa: F401
import sys
import urllib.parse  # noqa: F401

import atheris
import idna  # noqa: F401

from airlock.executor._errors import Denied

with atheris.instrument_imports(include=["executor"]):
    from airlock.executor.egress.proxy import _destination, _parse_head


def test_one_input(data: bytes) -> None:
    head = data if data.endswith(b"\r\n\r\n") else data + b"\r\n\r\n"
    if head.count(b"\r\n\r\n") != 1 or not head.endswith(b"\r\n\r\n"):
        return  # the proxy reads up to the first blank line; the rest is body
    try:
        method, target, headers = _parse_head(head)
        host, _port, forward = _destination(method, target, headers)
    except (ValueError, Denied):
        return
    if forward is None:
        return  # CONNECT: nothing of the head is forwarded
    out, body_length = forward
    if body_length < 0:
        raise AssertionError("negative body length")
    if not out.endswith(b"\r\n\r\n") or out.count(b"\r\n\r\n") != 1:
        raise AssertionError(f"forwarded head is not exactly one request: {out!r}")
    lines = out[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise AssertionError(f"bare CR or LF in a forwarded line: {line!r}")
    hosts = [line for line in lines if line.lower().startswith(b"host:")]
    if len(hosts) != 1:
        raise AssertionError(f"forwarded head has {len(hosts)} Host headers: {out!r}")
    if host.text.encode() not in hosts[0]:
        raise AssertionError(f"forwarded Host {hosts[0]!r} is not the checked host {host.text!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
