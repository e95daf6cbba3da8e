"""ArtifactService end to end: a real gateway (its own process) with the
stack's real OPA deciding data.airlock.artifacts, the real local store
(SQLite) and the real SeaweedFS S3 server, the real audit log and metrics.

Every refusal is checked for its reason code, its audit event and its
metric; another principal's artifact is not found; a session sees its own
artifacts and the shared ones; quotas and the retention sweeper; the CLI
round trip against the stack's gateway; and the store and its credentials
are out of the agent uid's reach."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fixtures.seaweed import ACCESS_KEY, Seaweed
from helpers import (
    HOMES,
    Stack,
    auth,
    decision_from_error,
    make_gateway_config,
    scrape,
    start_daemon,
    stop_daemon,
)

from airlock.common import auditlog
from airlock.gateway._audit import JsonlAuditSink
from airlock.gateway._config import RetentionConfig, load_gateway_config
from airlock.gateway._mask import Masker
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._policy import OpaClient
from airlock.gateway.artifacts import ArtifactDenied, build_artifacts
from airlock.v1 import artifacts_pb2, artifacts_pb2_grpc

pytestmark = pytest.mark.integration

QUOTA = {"max_bytes": 4096, "max_count": 6, "max_artifact_bytes": 2048}


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Gateway:
    """A gateway process of the test's own, with an artifacts section."""

    def __init__(self, stack: Stack, folder: Path, artifacts: dict[str, Any]) -> None:
        self.stack = stack
        self.folder = folder
        self.nobody_token = uuid.uuid4().hex + uuid.uuid4().hex
        config = make_gateway_config(folder, stack, artifacts=artifacts)
        config["agents"] = [
            {"id": "dev-agent", "profile": "default", "token_sha256": _hash_token(stack.token)},
            {"id": "dev-untrusted", "profile": "untrusted", "token_sha256": _hash_token(stack.untrusted_token)},
            # A principal whose profile the grants do not know: the policy denies.
            {"id": "stranger", "profile": "nobody", "token_sha256": _hash_token(self.nobody_token)},
        ]
        self.proc, self.info = start_daemon("gateway", config, folder)
        self.channel = grpc.insecure_channel(self.info["listen"])
        self.stub = artifacts_pb2_grpc.ArtifactServiceStub(self.channel)

    @property
    def audit_path(self) -> Path:
        return self.folder / "audit" / "audit.jsonl"

    def events(self, decision_id: str | None = None) -> list[dict[str, Any]]:
        text = self.audit_path.read_text()
        whole = text[: text.rfind("\n") + 1]
        events = [json.loads(line) for line in whole.split("\n") if line.strip()]
        return [e for e in events if decision_id is None or e["decision_id"] == decision_id]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return scrape(self.info["metrics"], name, labels)

    def close(self) -> None:
        self.channel.close()
        assert stop_daemon(self.proc) == 0


def put(
    stub: artifacts_pb2_grpc.ArtifactServiceStub,
    token: str,
    name: str,
    data: bytes,
    *,
    session: str = "",
    size: int | None = None,
    sha256: str | None = None,
    chunk: int = 1000,
) -> artifacts_pb2.PutArtifactResponse:
    header = artifacts_pb2.PutArtifactHeader(name=name, session_id=session, media_type="text/plain")
    if size is not None:
        header.size = size
    if sha256 is not None:
        header.sha256 = sha256

    def messages() -> Iterator[artifacts_pb2.PutArtifactRequest]:
        yield artifacts_pb2.PutArtifactRequest(header=header)
        for i in range(0, len(data), chunk):
            yield artifacts_pb2.PutArtifactRequest(chunk=data[i : i + chunk])

    resp: artifacts_pb2.PutArtifactResponse = stub.PutArtifact(messages(), metadata=auth(token), timeout=30)
    return resp


def get(stub: artifacts_pb2_grpc.ArtifactServiceStub, token: str, artifact_id: str) -> tuple[Any, bytes]:
    stream = stub.GetArtifact(artifacts_pb2.GetArtifactRequest(id=artifact_id), metadata=auth(token), timeout=30)
    first = next(stream)
    return first, b"".join(m.chunk for m in stream)


def refused(call: Any) -> tuple[grpc.StatusCode, str, str]:
    """(status, reason code, decision id) of a refusal."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    decision = decision_from_error(info.value)
    return info.value.code(), decision.reasons[0].code, decision.decision_id


@pytest.fixture(scope="module")
def local_gw(stack: Stack) -> Iterator[Gateway]:
    folder = HOMES / f"artifacts-gw-{uuid.uuid4().hex[:8]}"
    gw = Gateway(
        stack,
        folder,
        {
            "path": str(folder / "store"),
            "quota": QUOTA,
            "retention_seconds": 3600,
            "sweep_interval_seconds": 3600,
        },
    )
    yield gw
    gw.close()


def test_round_trip_is_audited_with_sha256_and_size_never_content(local_gw: Gateway, stack: Stack) -> None:
    data = b"alpha,beta\n1,2\n" * 10
    sha = hashlib.sha256(data).hexdigest()
    resp = put(local_gw.stub, stack.token, "round.csv", data, size=len(data), sha256=sha)
    ref = resp.artifact
    assert (ref.name, ref.size, ref.sha256, ref.media_type) == ("round.csv", len(data), sha, "text/plain")
    assert resp.decision.reasons[0].code == "allowed"

    stat = local_gw.stub.StatArtifact(artifacts_pb2.StatArtifactRequest(id=ref.id), metadata=auth(stack.token))
    assert stat.artifact == ref
    first, content = get(local_gw.stub, stack.token, ref.id)
    assert first.artifact == ref
    assert content == data
    listed = local_gw.stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(prefix="round"), metadata=auth(stack.token))
    assert [a.artifact.id for a in listed.artifacts] == [ref.id]
    deleted = local_gw.stub.DeleteArtifact(artifacts_pb2.DeleteArtifactRequest(id=ref.id), metadata=auth(stack.token))
    assert deleted.artifact == ref

    ops = {}
    for decision_id in (resp.decision.decision_id, stat.decision.decision_id, first.decision.decision_id):
        (event,) = local_gw.events(decision_id)
        assert event["kind"] == "artifact"
        assert event["decision"] == "allow"
        assert event["principal"] == "dev-agent"
        assert event["path"] == "airlock/artifacts/decision"
        assert event["artifact"]["ref"]["sha256"] == sha
        assert int(event["artifact"]["ref"]["size"]) == len(data)
        ops[event["artifact"]["operation"]] = event
    assert set(ops) == {"put", "stat", "get"}
    assert "alpha,beta" not in local_gw.audit_path.read_text()
    assert local_gw.metric("airlock_gateway_artifact_operations_total", {"operation": "put", "outcome": "allow"}) >= 1
    assert local_gw.metric("airlock_gateway_artifact_transfer_bytes_total", {"direction": "out"}) >= len(data)


def _check_refusal(
    gw: Gateway, call: Any, status: grpc.StatusCode, code: str, operation: str, principal: str = "dev-agent"
) -> None:
    labels = {"operation": operation, "outcome": "deny", "reason": code}
    before = gw.metric("airlock_gateway_artifact_operations_total", labels)
    got_status, got_code, decision_id = refused(call)
    assert (got_status, got_code) == (status, code)
    (event,) = gw.events(decision_id)
    assert event["kind"] == "artifact"
    assert event["decision"] == "deny"
    assert event["reasons"][0]["code"] == code
    assert event["artifact"]["operation"] == operation
    assert event["principal"] == principal
    assert gw.metric("airlock_gateway_artifact_operations_total", labels) == before + 1


def test_every_refusal_has_its_code_an_audit_event_and_a_metric(local_gw: Gateway, stack: Stack) -> None:
    stub, token = local_gw.stub, stack.token
    data = b"x" * 100
    for bad in ("../etc", "a/b", "nul\x00", "é" * 200, "."):
        _check_refusal(
            local_gw, lambda bad=bad: put(stub, token, bad, data), grpc.StatusCode.INVALID_ARGUMENT,
            "artifact_name_invalid", "put",
        )  # fmt: skip
    missing = f"art_{uuid.uuid4().hex}"
    _check_refusal(
        local_gw,
        lambda: stub.StatArtifact(artifacts_pb2.StatArtifactRequest(id=missing), metadata=auth(token)),
        grpc.StatusCode.NOT_FOUND,
        "artifact_not_found",
        "stat",
    )
    _check_refusal(
        local_gw, lambda: get(stub, token, "not-an-id"), grpc.StatusCode.NOT_FOUND, "artifact_not_found", "get"
    )
    _check_refusal(
        local_gw, lambda: put(stub, token, "big.bin", b"b" * 3000), grpc.StatusCode.RESOURCE_EXHAUSTED,
        "artifact_too_large", "put",
    )  # fmt: skip
    _check_refusal(
        local_gw, lambda: put(stub, token, "short.bin", data, size=200), grpc.StatusCode.INVALID_ARGUMENT,
        "artifact_truncated", "put",
    )  # fmt: skip
    _check_refusal(
        local_gw, lambda: put(stub, token, "sum.bin", data, sha256="0" * 64), grpc.StatusCode.INVALID_ARGUMENT,
        "artifact_checksum_mismatch", "put",
    )  # fmt: skip
    # The policy: a principal whose profile the grants do not know.
    _check_refusal(
        local_gw, lambda: put(stub, local_gw.nobody_token, "p.txt", data), grpc.StatusCode.PERMISSION_DENIED,
        "unknown_profile", "put", principal="stranger",
    )  # fmt: skip
    # No identity: refused and recorded, like every other refusal.
    _check_refusal(
        local_gw, lambda: put(stub, "not-a-token-at-all", "p.txt", data), grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated", "put", principal="",
    )  # fmt: skip
    # Nothing refused is visible.
    listed = stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(), metadata=auth(token))
    assert not {a.artifact.name for a in listed.artifacts} & {"big.bin", "short.bin", "sum.bin", "p.txt"}


def test_quota_per_principal(local_gw: Gateway, stack: Stack) -> None:
    stub, token = local_gw.stub, stack.untrusted_token  # a principal of its own for this test
    ids = [put(stub, token, f"q{i}.txt", os.urandom(1000)).artifact.id for i in range(4)]
    # Bytes: 4000 of 4096 held, so 100 more do not fit.
    _check_refusal(
        local_gw, lambda: put(stub, token, "q-bytes.txt", os.urandom(100)), grpc.StatusCode.RESOURCE_EXHAUSTED,
        "artifact_quota_exceeded", "put", principal="dev-untrusted",
    )  # fmt: skip
    ids += [put(stub, token, f"q{i}.txt", b"%d" % i).artifact.id for i in (4, 5)]
    # Count: 6 of 6 held.
    _check_refusal(
        local_gw, lambda: put(stub, token, "q-count.txt", b"1"), grpc.StatusCode.RESOURCE_EXHAUSTED,
        "artifact_quota_exceeded", "put", principal="dev-untrusted",
    )  # fmt: skip
    for artifact_id in ids:
        stub.DeleteArtifact(artifacts_pb2.DeleteArtifactRequest(id=artifact_id), metadata=auth(token))
    put(stub, token, "q-count.txt", b"1")


def test_another_principals_artifact_is_not_found(local_gw: Gateway, stack: Stack) -> None:
    mine = put(local_gw.stub, stack.token, "mine.txt", b"secret-ish").artifact
    other = stack.untrusted_token
    for call, op in (
        (lambda: get(local_gw.stub, other, mine.id), "get"),
        (
            lambda: local_gw.stub.StatArtifact(artifacts_pb2.StatArtifactRequest(id=mine.id), metadata=auth(other)),
            "stat",
        ),
        (
            lambda: local_gw.stub.DeleteArtifact(artifacts_pb2.DeleteArtifactRequest(id=mine.id), metadata=auth(other)),
            "delete",
        ),
    ):
        _check_refusal(local_gw, call, grpc.StatusCode.NOT_FOUND, "artifact_not_found", op, principal="dev-untrusted")
    listed = local_gw.stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(), metadata=auth(other))
    assert mine.id not in {a.artifact.id for a in listed.artifacts}
    # Still there for its owner.
    assert get(local_gw.stub, stack.token, mine.id)[1] == b"secret-ish"


def test_list_by_session_and_shared(local_gw: Gateway, stack: Stack) -> None:
    stub, token = local_gw.stub, stack.token
    s1 = put(stub, token, "ls-s1.txt", b"1", session="ls-s1").artifact.id
    s2 = put(stub, token, "ls-s2.txt", b"2", session="ls-s2").artifact.id
    shared = put(stub, token, "ls-shared.txt", b"3").artifact.id

    def ids(**kw: Any) -> set[str]:
        resp = stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(prefix="ls-", **kw), metadata=auth(token))
        return {a.artifact.id for a in resp.artifacts}

    assert ids() == {s1, s2, shared}
    assert ids(session_id="ls-s1") == {s1}
    assert ids(shared_only=True) == {shared}


def _access_parts(stack: Stack, tmp_path: Path, store_dir: Path) -> tuple[Any, JsonlAuditSink]:
    """ArtifactAccess as the gateway's main builds it, with the stack's real
    OPA, a real local store and a real audit log."""
    cfg_path = tmp_path / "gateway.yaml"
    key = tmp_path / "audit.pem"
    auditlog.generate_signing_key(key, tmp_path / "audit.pub")
    (tmp_path / "audit").mkdir(mode=0o700)
    token = tmp_path / "opa.token"
    token.write_text(stack.opa_token)
    token.chmod(0o600)
    cfg_path.write_text(
        json.dumps(
            {
                "version": 1,
                "registry": "unused.yaml",
                "executor": {"socket": "/nonexistent.sock", "token_file": "/nonexistent"},
                "audit": {"path": str(tmp_path / "audit" / "audit.jsonl")},
                "agents": [{"id": "dev-agent", "token_sha256": "0" * 64}],
                "artifacts": {"path": str(store_dir), "quota": QUOTA},
            }
        )
    )
    cfg = load_gateway_config(cfg_path)
    assert cfg.artifacts is not None
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    sink = JsonlAuditSink(
        Path(cfg.audit.path),
        signing_key=auditlog.load_signing_key(key),
        masker=Masker((), None, ()),
        max_bytes=1 << 20,
        checkpoint_events=1000,
        checkpoint_seconds=60,
        retention=RetentionConfig(),
    )
    policy = OpaClient(f"unix://{stack.info['opa_socket']}", 2000, token=stack.opa_token)
    metrics = GatewayMetrics(CollectorRegistry(), ())
    runtime = build_artifacts(cfg.artifacts, policy=policy, record=sink.write, metrics=metrics, agents=cfg.agents)
    return runtime, sink


def test_a_session_sees_its_own_artifacts_and_the_shared_ones(stack: Stack, tmp_path: Path) -> None:
    runtime, sink = _access_parts(stack, tmp_path, tmp_path / "store")
    access = runtime.access

    async def scenario() -> None:
        own = await access.save_output("dev-agent", "s1", "own.csv", b"a,b\n1,2\n", "text/csv")
        other = await access.save_output("dev-agent", "s2", "other.csv", b"x")
        shared = (await runtime.ops.put(_put_op("shared.txt"), [b"shared"])).record
        assert shared is not None
        got = await access.open_inputs("dev-agent", "s1", [own.id, shared.id])
        assert [(r.name, data) for r, data in got] == [("own.csv", b"a,b\n1,2\n"), ("shared.txt", b"shared")]
        with pytest.raises(ArtifactDenied) as info:
            await access.open_inputs("dev-agent", "s1", [other.id])
        assert info.value.code == "artifact_session_denied"
        with pytest.raises(ArtifactDenied) as info:
            await access.open_inputs("dev-untrusted", "s1", [own.id])
        assert info.value.code == "artifact_not_found"
        with pytest.raises(ArtifactDenied) as info:
            await access.save_output("dev-agent", "s1", "../escape", b"x")
        assert info.value.code == "artifact_name_invalid"
        with pytest.raises(ArtifactDenied) as info:
            await access.save_output("dev-agent", "s1", "huge", b"h" * 3000)
        assert info.value.code == "artifact_too_large"
        await runtime.ops._policy.close()

    asyncio.run(scenario())
    sink.close()
    events = [json.loads(line) for line in (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()]
    artifact_events = [e for e in events if e["kind"] == "artifact"]
    by_op = [(e["artifact"]["operation"], e["decision"], e["reasons"][0]["code"]) for e in artifact_events]
    assert ("input", "deny", "artifact_session_denied") in by_op
    assert ("input", "deny", "artifact_not_found") in by_op
    assert ("output", "allow", "allowed") in by_op
    assert sum(1 for op in by_op if op[:2] == ("input", "allow")) == 2


def _put_op(name: str) -> Any:
    from airlock.gateway._model import Principal  # noqa: PLC0415
    from airlock.gateway.artifacts import ArtifactOp  # noqa: PLC0415

    return ArtifactOp("put", Principal("dev-agent", "default"), rpc="test", name=name)


def test_the_sweeper_removes_what_is_past_retention(stack: Stack) -> None:
    folder = HOMES / f"artifacts-sweep-{uuid.uuid4().hex[:8]}"
    gw = Gateway(stack, folder, {"path": str(folder / "store"), "retention_seconds": 2, "sweep_interval_seconds": 1})
    try:
        ref = put(gw.stub, stack.token, "old.txt", b"old").artifact
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listed = gw.stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(), metadata=auth(stack.token))
            if not listed.artifacts:
                break
            time.sleep(0.5)
        assert not listed.artifacts
        assert refused(lambda: get(gw.stub, stack.token, ref.id))[1] == "artifact_not_found"
        assert gw.metric("airlock_gateway_artifacts_swept_total") >= 1
        swept = [e for e in gw.events() if e["kind"] == "artifact" and e["artifact"]["operation"] == "sweep"]
        assert swept
        assert swept[0]["reasons"][0]["code"] == "retention"
        assert swept[0]["artifact"]["ref"]["sha256"] == hashlib.sha256(b"old").hexdigest()
        assert gw.metric("airlock_gateway_artifacts_stored") == 0
    finally:
        gw.close()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    server = Seaweed(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


def test_s3_backend_round_trip_and_an_outage(stack: Stack, seaweed: Seaweed) -> None:
    folder = HOMES / f"artifacts-s3-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o700, parents=True)
    creds = folder / "s3.yaml"
    creds.write_text(json.dumps({"access_key_id": ACCESS_KEY, "secret_access_key": seaweed.secret}))
    creds.chmod(0o600)
    gw = Gateway(
        stack,
        folder,
        {
            "backend": "s3",
            "path": str(folder / "spool"),
            "s3": {
                "endpoint_url": seaweed.endpoint,
                "bucket": seaweed.bucket,
                "prefix": f"gw-{uuid.uuid4().hex[:8]}",
                "credentials_file": str(creds),
            },
            "quota": QUOTA,
        },
    )
    try:
        data = os.urandom(1500)
        ref = put(gw.stub, stack.token, "s3.bin", data, size=len(data)).artifact
        assert get(gw.stub, stack.token, ref.id)[1] == data
        assert refused(lambda: get(gw.stub, stack.untrusted_token, ref.id))[1] == "artifact_not_found"
        seaweed.stop()
        try:
            _check_refusal(
                gw, lambda: put(gw.stub, stack.token, "down.bin", b"d"), grpc.StatusCode.UNAVAILABLE,
                "artifact_store_unavailable", "put",
            )  # fmt: skip
        finally:
            seaweed.start()
        put(gw.stub, stack.token, "down.bin", b"d")
    finally:
        gw.close()


def _cli(stack: Stack, *args: str, cwd: Path) -> tuple[int, list[dict[str, Any]]]:
    proc = subprocess.run(
        [sys.executable, "-m", "airlock.cli", "--home", str(stack.home), "artifacts", *args, "--as-root"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_cli_round_trip_against_the_stack(stack: Stack, tmp_path: Path) -> None:
    # A name of its own: the stack is shared, and a name two artifacts have
    # is ambiguous to the CLI (artifact_name_ambiguous).
    name = f"summary-{uuid.uuid4().hex[:8]}.csv"
    src = tmp_path / name
    src.write_bytes(b"k,v\na,1\n")
    code, (out,) = _cli(stack, "put", str(src), "--session", "cli-s", cwd=tmp_path)
    assert code == 0, out
    ref = out["artifact"]
    assert (ref["name"], ref["size"], out["session_id"]) == (name, 8, "cli-s")
    assert out["decision"] == "allow"
    code, listed = _cli(stack, "ls", "--session", "cli-s", cwd=tmp_path)
    assert code == 0
    assert [a["id"] for a in listed] == [ref["id"]]
    code, (stat,) = _cli(stack, "stat", name, cwd=tmp_path)
    assert code == 0
    assert stat["artifact"] == ref
    dest = tmp_path / "back.csv"
    code, (got,) = _cli(stack, "get", ref["id"], "-o", str(dest), cwd=tmp_path)
    assert code == 0, got
    assert dest.read_bytes() == b"k,v\na,1\n"
    code, (gone,) = _cli(stack, "rm", ref["id"], cwd=tmp_path)
    assert code == 0
    assert gone["deleted"] is True
    code, (missing,) = _cli(stack, "get", ref["id"], "-o", str(dest), cwd=tmp_path)
    assert code == 3
    assert missing["status"] == "NOT_FOUND"
    assert missing["reasons"][0]["code"] == "artifact_not_found"


@pytest.mark.skipif(os.geteuid() != 0, reason="uids are separated only when the stack starts as root")
def test_the_agent_uid_cannot_read_the_store_or_the_s3_credentials(stack: Stack, tmp_path: Path) -> None:
    """The stack's gateway runs as airlock-gateway; its store is its own
    (0700), so the agent's uid reads neither the database nor a blob; an S3
    credentials file is the gateway's, 0600."""
    with grpc.insecure_channel(stack.gateway) as channel:
        ref = put(artifacts_pb2_grpc.ArtifactServiceStub(channel), stack.token, "private.txt", b"p").artifact
    store = stack.layout.gateway_dir / "artifacts"
    gateway_uid = pwd.getpwnam("airlock-gateway").pw_uid
    assert store.stat().st_uid == gateway_uid
    assert store.stat().st_mode & 0o077 == 0
    (blob,) = (store / "blobs").glob(f"*/sha256/{ref.sha256[:2]}/{ref.sha256[2:4]}/{ref.sha256}")
    assert blob.stat().st_uid == gateway_uid
    creds = tmp_path / "s3.yaml"
    creds.write_text("access_key_id: a\nsecret_access_key: b\n")
    creds.chmod(0o600)
    tmp_path.chmod(0o755)
    agent = pwd.getpwnam("airlock-agent")
    for path in (store / "artifacts.sqlite3", blob, creds):
        proc = subprocess.run(
            [sys.executable, "-c", f"open({str(path)!r}, 'rb').read()"],
            user=agent.pw_uid,
            group=agent.pw_gid,
            extra_groups=[],
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode != 0, path
        assert "PermissionError" in proc.stderr, proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as the agent's uid")
def test_the_agent_uid_cannot_use_the_s3_server_without_the_gateways_credentials(seaweed: Seaweed) -> None:
    """The bucket answers only signed requests; the agent's uid holds no
    credentials (they are in the gateway's 0600 file), so it gets nothing."""
    agent = pwd.getpwnam("airlock-agent")
    code = f"""
import urllib.error, urllib.request
for method, url in (("GET", "{seaweed.endpoint}/{seaweed.bucket}?list-type=2"),
                    ("PUT", "{seaweed.endpoint}/{seaweed.bucket}/planted")):
    req = urllib.request.Request(url, data=b"x" if method == "PUT" else None, method=method)
    try:
        urllib.request.urlopen(req, timeout=10)
        print(method, "ALLOWED")
    except urllib.error.HTTPError as exc:
        print(method, exc.code)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        user=agent.pw_uid,
        group=agent.pw_gid,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ALLOWED" not in proc.stdout
    assert proc.stdout.split() == ["GET", "403", "PUT", "403"]


def test_a_malformed_put_header_is_refused_audited_and_counted(local_gw: Gateway, stack: Stack) -> None:
    """A 3 MB media type, control characters in a session id, a negative
    size: refused before the policy, one small audit event each, counted."""
    stub, token = local_gw.stub, stack.token

    def put_with(**fields: Any) -> Any:
        header = artifacts_pb2.PutArtifactHeader(name="h.txt", **fields)
        messages = iter([artifacts_pb2.PutArtifactRequest(header=header), artifacts_pb2.PutArtifactRequest(chunk=b"x")])
        return stub.PutArtifact(messages, metadata=auth(token), timeout=30)

    before = local_gw.audit_path.stat().st_size
    for fields in (
        {"media_type": "x/" + "y" * (3 << 20)},
        {"media_type": "text/plain\x00"},
        {"session_id": "s\x00" * 10},
        {"session_id": "s" * 257},
        {"size": -1},
    ):
        _check_refusal(
            local_gw, lambda f=fields: put_with(**f), grpc.StatusCode.INVALID_ARGUMENT, "artifact_header_invalid", "put"
        )
    assert local_gw.audit_path.stat().st_size - before < 5 * 4096
    listed = stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(prefix="h.txt"), metadata=auth(token))
    assert list(listed.artifacts) == []
    assert not listed.truncated
