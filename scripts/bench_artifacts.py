"""Benchmarks artifacts (issue 14) and prints numbers (no asserts, no targets).

Starts its own `airlock up` (whose gateway has the local store), a SeaweedFS
S3 server on loopback and a second gateway with the S3 backend, then
measures on this machine, in this run:
  1. a 64 MiB artifact put and got through ArtifactService (gRPC, 256 KiB
     chunks, the content checked by sha256 on the way in), on the local and
     the S3 backend; against the floors: `cp` of the same file on the same
     disk, and the bare boto3 client putting and getting the same object on
     the same SeaweedFS;
  2. the latency a python call adds when it reads one 1 KiB input artifact
     and leaves one 1 KiB output artifact, against the same call without
     artifacts, and each part on its own (ephemeral calls, interleaved, each
     timed by the client).

Usage: .venv/bin/python scripts/bench_artifacts.py [--runs 5] [--calls 30]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import grpc
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]

from fixtures.seaweed import ACCESS_KEY, Seaweed  # noqa: E402
from helpers import (  # noqa: E402
    HOMES,
    Stack,
    make_gateway_config,
    new_home,
    start_daemon,
    start_stack,
    stop_daemon,
    stop_stack,
)

from airlock import agent  # noqa: E402
from airlock.v1 import artifacts_pb2, artifacts_pb2_grpc  # noqa: E402

MiB = 1024 * 1024
CHUNK = 256 * 1024


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def put(stub: Any, token: str, path: Path, sha: str) -> str:
    def parts() -> Iterator[artifacts_pb2.PutArtifactRequest]:
        header = artifacts_pb2.PutArtifactHeader(name="bench.bin", size=path.stat().st_size, sha256=sha)
        yield artifacts_pb2.PutArtifactRequest(header=header)
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield artifacts_pb2.PutArtifactRequest(chunk=chunk)

    return str(stub.PutArtifact(parts(), metadata=auth(token), timeout=120).artifact.id)


def get(stub: Any, token: str, artifact_id: str, dest: Path) -> None:
    stream = stub.GetArtifact(artifacts_pb2.GetArtifactRequest(id=artifact_id), metadata=auth(token), timeout=120)
    with dest.open("wb") as f:
        for message in stream:
            if message.WhichOneof("part") == "chunk":
                f.write(message.chunk)


def rm(stub: Any, token: str, artifact_id: str) -> None:
    stub.DeleteArtifact(artifacts_pb2.DeleteArtifactRequest(id=artifact_id), metadata=auth(token), timeout=30)


def rate(seconds: list[float], size: int) -> str:
    med = statistics.median(seconds)
    return f"{size / MiB / med:7.1f} MiB/s  (median {med * 1000:6.0f} ms, min {min(seconds) * 1000:.0f} ms)"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput(stack: Stack, s3_gateway: str, seaweed: Seaweed, runs: int, work: Path) -> None:
    src = work / "src.bin"
    src.write_bytes(os.urandom(64 * MiB))
    size = src.stat().st_size
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    print(f"\n1. a 64 MiB artifact ({size} bytes), {runs} runs each")

    cp_times: list[float] = []
    for i in range(runs):
        dst = work / f"cp-{i}.bin"
        t0 = time.perf_counter()
        subprocess.run(["cp", str(src), str(dst)], check=True)
        cp_times.append(time.perf_counter() - t0)
        dst.unlink()
    print(f"   floor: cp (same disk)                 {rate(cp_times, size)}")

    s3 = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=seaweed.secret,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    ups, downs = [], []
    for i in range(runs):
        key = f"bench/boto3-{i}"
        t0 = time.perf_counter()
        s3.upload_file(str(src), seaweed.bucket, key)
        ups.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        s3.download_file(seaweed.bucket, key, str(work / "boto.bin"))
        downs.append(time.perf_counter() - t0)
        s3.delete_object(Bucket=seaweed.bucket, Key=key)
    print(f"   floor: boto3 put (SeaweedFS)          {rate(ups, size)}")
    print(f"   floor: boto3 get (SeaweedFS)          {rate(downs, size)}")

    for label, address in (("local", stack.gateway), ("s3", s3_gateway)):
        with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 8 * MiB)]) as channel:
            stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
            puts, gets = [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                artifact_id = put(stub, stack.token, src, sha)
                puts.append(time.perf_counter() - t0)
                dest = work / "got.bin"
                t0 = time.perf_counter()
                get(stub, stack.token, artifact_id, dest)
                gets.append(time.perf_counter() - t0)
                if hashlib.sha256(dest.read_bytes()).hexdigest() != sha:
                    raise SystemExit(f"{label}: the artifact came back different")
                rm(stub, stack.token, artifact_id)
        print(f"   ArtifactService put, {label:5} backend    {rate(puts, size)}")
        print(f"   ArtifactService get, {label:5} backend    {rate(gets, size)}")


def latency(stack: Stack, calls: int) -> None:
    print(f"\n2. one python call, ephemeral, {calls} calls each (interleaved), client-timed")
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = artifacts_pb2_grpc.ArtifactServiceStub(channel)
        data = os.urandom(512).hex().encode()  # 1 KiB
        header = artifacts_pb2.PutArtifactHeader(name="in.txt")
        parts = [artifacts_pb2.PutArtifactRequest(header=header), artifacts_pb2.PutArtifactRequest(chunk=data)]
        input_id = str(stub.PutArtifact(iter(parts), metadata=auth(stack.token), timeout=30).artifact.id)
    write = "open('/outputs/out.txt', 'wb').write(b'x' * 1024); "
    read = "d = open('/inputs/in.txt', 'rb').read(); "
    kinds = {
        # The call without artifacts, then the same with each part added.
        "no artifacts (python)": ("python", {"code": "print(1024)"}),
        "python_files, nothing in or out": ("python_files", {"code": "print(1024)", "inputs": []}),
        "python_files, 1 KiB out": ("python_files", {"code": write + "print(1024)", "inputs": []}),
        "python_files, 1 KiB in": ("python_files", {"code": read + "print(len(d))", "inputs": [input_id]}),
        "python_files, 1 KiB in + 1 KiB out": (
            "python_files",
            {"code": read + write + "print(len(d))", "inputs": [input_id]},
        ),
    }
    times: dict[str, list[float]] = {label: [] for label in kinds}
    with agent.GatewayClient(stack.gateway, stack.token) as gateway:

        def call(tool: str, args: dict[str, Any]) -> agent.ToolResult:
            return gateway.invoke(f"call_{uuid.uuid4().hex[:12]}", "function_call", tool, json.dumps(args), "")

        for tool, args in kinds.values():  # warm every path
            call(tool, args)
        for _ in range(calls):
            for label, (tool, args) in kinds.items():
                time.sleep(0.3)  # let the pool refill between calls, as in scripts/bench.py
                t0 = time.perf_counter()
                result = call(tool, args)
                times[label].append(time.perf_counter() - t0)
                if result.outcome != "ok" or result.stdout != "1024\n":
                    raise SystemExit(f"{label}: {result.outcome} {result.error} {result.stderr}")
                if len(result.artifacts) != (1 if "write" in args["code"] else 0):
                    raise SystemExit(f"{label}: stored {len(result.artifacts)} artifacts")
    base = statistics.median(times["no artifacts (python)"])
    for label, values in times.items():
        med = statistics.median(values)
        print(
            f"   {label:38} p50 {med * 1000:6.0f} ms  p90 {pct(values, 0.9) * 1000:6.0f} ms"
            f"  (+{(med - base) * 1000:4.0f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="puts and gets per backend (default 5)")
    parser.add_argument("--calls", type=int, default=30, help="calls per kind for the latency (default 30)")
    args = parser.parse_args()
    stack = start_stack(new_home("bench-artifacts"))
    work = Path(tempfile.mkdtemp(prefix="airlock-bench-artifacts-"))
    seaweed = Seaweed(work / "seaweed")
    seaweed.start()
    folder = HOMES / f"bench-artifacts-s3-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o700, parents=True)
    creds = folder / "s3.yaml"
    creds.write_text(json.dumps({"access_key_id": ACCESS_KEY, "secret_access_key": seaweed.secret}))
    creds.chmod(0o600)
    s3 = {
        "backend": "s3",
        "path": str(folder / "spool"),
        "s3": {
            "endpoint_url": seaweed.endpoint,
            "bucket": seaweed.bucket,
            "prefix": "bench",
            "credentials_file": str(creds),
        },
    }
    config = make_gateway_config(folder, stack, artifacts=s3)
    proc, info = start_daemon("gateway", config, folder)
    try:
        print(f"machine: {os.cpu_count()} cores; stack {stack.home}; SeaweedFS {seaweed.endpoint}")
        throughput(stack, str(info["listen"]), seaweed, args.runs, work)
        latency(stack, args.calls)
    finally:
        stop_daemon(proc)
        seaweed.stop()
        stop_stack(stack)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
