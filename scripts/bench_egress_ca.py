#!/usr/bin/env python3
"""Cost of the egress CA's leaves (airlock/executor/egress/ca.py): what the
proxy pays to start inspecting TLS to a host it has not seen, and to a host
it has.

- uncached: LeafIssuer.server_context for N distinct hosts (a fresh P-256
  key, a signed leaf, an SSLContext loaded with leaf + CA), per call;
- cached: the same lookups again, all hits.

The CA is made in a temporary folder. Usage:
.venv/bin/python scripts/bench_egress_ca.py [--hosts 200] [--lookups 100000]
Prints p50 and p99; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from airlock.executor.egress.ca import EgressCA, LeafIssuer


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--lookups", type=int, default=100_000)
    args = parser.parse_args()
    hosts = [f"host-{i}.bench.test" for i in range(args.hosts)]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        ca = EgressCA.load_or_create(Path(folder) / "egress-ca")
        print(f"CA created in {(time.perf_counter() - started) * 1e3:.2f} ms")
        issuer = LeafIssuer(ca, max_cached=args.hosts)
        issue_ms: list[float] = []
        for host in hosts:
            t0 = time.perf_counter()
            issuer.server_context(host)
            issue_ms.append((time.perf_counter() - t0) * 1e3)
        print(
            f"uncached leaf context ({args.hosts} hosts): p50 {statistics.median(issue_ms):.3f} ms, "
            f"p99 {percentile(issue_ms, 0.99):.3f} ms"
        )
        lookup_us: list[float] = []
        for i in range(args.lookups):
            host = hosts[i % len(hosts)]
            t0 = time.perf_counter()
            issuer.server_context(host)
            lookup_us.append((time.perf_counter() - t0) * 1e6)
        print(
            f"cached lookup ({args.lookups} lookups): p50 {statistics.median(lookup_us):.2f} us, "
            f"p99 {percentile(lookup_us, 0.99):.2f} us"
        )


if __name__ == "__main__":
    main()
