"""The artifact decision module (airlock/gateway/artifacts/_ops.py) with a
scripted policy engine and an audit list: every way the policy can fail
denies with its own code, every operation is recorded, a refusal after the
store leaves nothing visible. The store is the real LocalStore (SQLite in
tmp_path); the integration tier (tests/integration/test_artifacts_api.py)
repeats the paths that matter against real OPA and a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from google.rpc import status_pb2
from prometheus_client import CollectorRegistry

from airlock.common import wire
from airlock.gateway import _server
from airlock.gateway._errors import AdmissionError, AuditError, PolicyError
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Principal, Reason
from airlock.gateway._policy import PolicyResult
from airlock.gateway.artifacts import (
    ArtifactAccess,
    ArtifactDenied,
    ArtifactOp,
    ArtifactOps,
    ArtifactRecord,
    LocalStore,
    Quota,
    _ops,
)
from airlock.gateway.artifacts._model import MAX_LISTED
from airlock.v1 import artifacts_pb2, audit_pb2

ALICE = Principal("alice", "default")
ALLOW = {"allow": True, "reasons": [{"code": "allowed", "message": "ok"}]}


def deny(code: str) -> dict[str, Any]:
    return {"allow": False, "reasons": [{"code": code, "message": f"{code} said the policy"}]}


class ArtifactPolicy:
    """Answers from a script: a result document, or a PolicyError to raise.
    ``by_size`` overrides the answer for artifacts above a size."""

    def __init__(self, answer: Any = None, *, max_size: int | None = None) -> None:
        self.answer = ALLOW if answer is None else answer
        self.max_size = max_size
        self.inputs: list[Mapping[str, Any]] = []

    async def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> PolicyResult:
        self.inputs.append(input_doc)
        if isinstance(self.answer, PolicyError):
            raise self.answer
        size = (input_doc.get("artifact") or {}).get("size")
        if self.max_size is not None and isinstance(size, int) and size > self.max_size:
            return PolicyResult(deny("artifact_size_denied"), "rev-1")
        return PolicyResult(self.answer, "rev-1")

    async def close(self) -> None:
        return None


class AuditList:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[audit_pb2.AuditEvent] = []
        self.fail = fail

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        if self.fail:
            raise AuditError("disk full")
        self.events.append(event)


def make_ops(
    tmp_path: Path, policy: ArtifactPolicy, audit: AuditList, prom: CollectorRegistry, **quota: int
) -> tuple[ArtifactOps, GatewayMetrics]:
    metrics = GatewayMetrics(prom, ())
    limits = {"max_bytes": 10_000, "max_count": 10, "max_artifact_bytes": 5_000, **quota}
    ops = ArtifactOps(
        store=LocalStore(tmp_path / "store"),
        policy=policy,
        record=audit.write,
        metrics=metrics,
        quota=Quota(**limits),
        decision_path="airlock/artifacts/decision",
    )
    return ops, metrics


def put_op(name: str = "a.txt", **kw: Any) -> ArtifactOp:
    return ArtifactOp("put", ALICE, rpc="PutArtifact", name=name, **kw)


def count(prom: CollectorRegistry, op: str, outcome: str, reason: str) -> float:
    value = prom.get_sample_value(
        "airlock_gateway_artifact_operations_total", {"operation": op, "outcome": outcome, "reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (ALLOW, "ok", "allowed"),
        (deny("artifact_operation_not_granted"), "permission_denied", "artifact_operation_not_granted"),
        (deny("artifact_not_found"), "not_found", "artifact_not_found"),
        (PolicyError("down", code="policy_unreachable"), "permission_denied", "policy_unreachable"),
        (PolicyError("slow", code="policy_timeout"), "permission_denied", "policy_timeout"),
        (PolicyError("nothing", code="policy_undefined"), "permission_denied", "policy_undefined"),
        ({"allow": "yes", "reasons": []}, "permission_denied", "policy_malformed"),
        ({"allow": True, "reasons": []}, "permission_denied", "policy_malformed"),
        ({"allow": False}, "permission_denied", "policy_malformed"),
        ([], "permission_denied", "policy_malformed"),
    ],
)
def test_the_policy_decides_a_put(tmp_path: Path, prom: CollectorRegistry, answer: Any, status: str, code: str) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(answer), audit, prom)
    answer_ = asyncio.run(ops.put(put_op(), [b"hello"]))
    assert (answer_.decision.status, answer_.decision.code) == (status, code)
    (event,) = audit.events
    assert event.kind == "artifact"
    assert event.decision == ("allow" if status == "ok" else "deny")
    assert event.reasons[0].code == code
    assert event.artifact.operation == "put"
    stored = ops.store.list_artifacts("alice")
    assert len(stored) == (1 if status == "ok" else 0)
    label = (
        code
        if code in {"allowed", "artifact_operation_not_granted", "artifact_not_found"} or code.startswith("policy_")
        else "policy_other"
    )
    assert count(prom, "put", "allow" if status == "ok" else "deny", label) == 1


def test_the_policy_input_carries_principal_session_operation_and_artifact(
    tmp_path: Path, prom: CollectorRegistry
) -> None:
    policy = ArtifactPolicy()
    ops, _ = make_ops(tmp_path, policy, AuditList(), prom)
    asyncio.run(ops.put(put_op("r.csv", session="s1", size=3, media_type="text/csv"), [b"abc"]))
    doc = policy.inputs[0]
    assert doc["operation"] == "put"
    assert doc["principal"]["id"] == "alice"
    assert doc["principal"]["profile"] == "default"
    assert doc["session"] == "s1"
    assert doc["artifact"]["name"] == "r.csv"
    assert doc["artifact"]["size"] == 3
    assert doc["artifact"]["session"] == "s1"


def test_a_put_of_unknown_size_is_decided_again_with_its_size(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(max_size=4), audit, prom)
    small = asyncio.run(ops.put(put_op("small"), [b"1234"]))
    assert small.decision.allowed
    big = asyncio.run(ops.put(put_op("big"), [b"12345"]))
    assert big.decision.code == "artifact_size_denied"
    assert [r.name for r in ops.store.list_artifacts("alice")] == ["small"]
    assert big.record is not None  # recorded with what was refused
    assert audit.events[-1].artifact.ref.size == 5


def test_unauthenticated_is_refused_and_recorded(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)
    op = ArtifactOp("get", None, rpc="GetArtifact", authn_error="unknown token", artifact_id="art_" + "0" * 32)
    answer = asyncio.run(ops.read(op))
    assert (answer.decision.status, answer.decision.code) == ("unauthenticated", "unauthenticated")
    assert audit.events[0].principal == ""
    assert count(prom, "get", "deny", "unauthenticated") == 1


@pytest.mark.parametrize(
    ("op", "chunks", "status", "code"),
    [
        (put_op("../x"), [b"1"], "invalid_argument", "artifact_name_invalid"),
        (put_op(size=10), [b"1"], "invalid_argument", "artifact_truncated"),
        (put_op(sha256="0" * 64), [b"1"], "invalid_argument", "artifact_checksum_mismatch"),
        (put_op(), [b"x" * 6000], "resource_exhausted", "artifact_too_large"),
    ],
)
def test_store_refusals_keep_their_codes(
    tmp_path: Path, prom: CollectorRegistry, op: ArtifactOp, chunks: list[bytes], status: str, code: str
) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)
    answer = asyncio.run(ops.put(op, chunks))
    assert (answer.decision.status, answer.decision.code) == (status, code)
    assert audit.events[-1].reasons[0].code == code
    assert ops.store.list_artifacts("alice") == []
    assert count(prom, "put", "deny", code) == 1


def test_an_allowed_put_that_cannot_be_recorded_leaves_nothing(tmp_path: Path, prom: CollectorRegistry) -> None:
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), AuditList(fail=True), prom)
    answer = asyncio.run(ops.put(put_op(), [b"data"]))
    assert (answer.decision.status, answer.decision.code) == ("unavailable", "audit_failed")
    assert ops.store.list_artifacts("alice") == []


def test_a_streamed_put_and_a_client_that_goes_away(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)

    async def stream(parts: list[bytes], hang: bool = False) -> AsyncIterator[bytes]:
        for part in parts:
            yield part
        if hang:
            await asyncio.Event().wait()

    async def scenario() -> None:
        done = await ops.put(put_op("streamed"), stream([b"ab", b"cd"]))
        assert done.record is not None
        assert done.record.size == 4
        task = asyncio.ensure_future(ops.put(put_op("cut"), stream([b"ab"], hang=True)))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The shielded put still ends, recorded as truncated, nothing kept.
        for _ in range(100):
            if len(audit.events) == 2:
                break
            await asyncio.sleep(0.05)
        assert audit.events[1].reasons[0].code == "artifact_truncated"

    asyncio.run(scenario())
    assert [r.name for r in ops.store.list_artifacts("alice")] == ["streamed"]


def test_access_inputs_and_outputs(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    policy = ArtifactPolicy()
    ops, _ = make_ops(tmp_path, policy, audit, prom)
    access = ArtifactAccess(ops, {"alice": ALICE})

    async def scenario() -> None:
        out = await access.save_output("alice", "s1", "summary.csv", b"a,b\n", "text/csv")
        assert out.session == "s1"
        got = await access.open_inputs("alice", "s1", [out.id])
        assert got == [(out, b"a,b\n")]
        with pytest.raises(ArtifactDenied) as info:
            await access.open_inputs("bob", "s1", [out.id])
        assert info.value.code == "artifact_not_found"
        with pytest.raises(ArtifactDenied) as info:
            await access.open_inputs("alice", "s1", ["art_" + "f" * 32])
        assert info.value.code == "artifact_not_found"
        policy.answer = deny("artifact_session_denied")
        with pytest.raises(ArtifactDenied) as info:
            await access.open_inputs("alice", "s2", [out.id])
        assert info.value.code == "artifact_session_denied"
        assert info.value.decision is not None

    asyncio.run(scenario())
    ops_seen = [(e.artifact.operation, e.decision) for e in audit.events]
    assert ops_seen == [
        ("output", "allow"),
        ("input", "allow"),
        ("input", "deny"),
        ("input", "deny"),
        ("input", "deny"),
    ]
    assert policy.inputs[1]["operation"] == "input"
    assert policy.inputs[1]["artifact"]["session"] == "s1"


def test_the_sweeper_removes_old_artifacts(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)

    async def scenario() -> int:
        await ops.put(put_op("old"), [b"old"])
        return await ops.sweep(60, now=10**12)

    assert asyncio.run(scenario()) == 1
    assert ops.store.list_artifacts("alice") == []
    assert prom.get_sample_value("airlock_gateway_artifacts_swept_total") == 1
    assert prom.get_sample_value("airlock_gateway_artifacts_stored") == 0
    assert audit.events[-1].artifact.operation == "sweep"
    assert audit.events[-1].reasons[0].code == "retention"


def test_service_calls_are_admitted_and_a_refusal_is_recorded(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)
    entered: list[str] = []

    @contextlib.contextmanager
    def admitted(principal: Principal) -> Iterator[None]:
        if principal.id == "flooder":
            raise AdmissionError("over its rate", code="rate_limited")
        entered.append(principal.id)
        yield

    ops.bind_admission(admitted)
    answer = asyncio.run(ops.list(ArtifactOp("list", Principal("flooder", "default"), rpc="ListArtifacts")))
    assert (answer.decision.status, answer.decision.code) == ("resource_exhausted", "rate_limited")
    assert audit.events[-1].reasons[0].code == "rate_limited"
    assert count(prom, "list", "deny", "rate_limited") == 1
    asyncio.run(ops.put(put_op(), [b"x"]))
    assert entered == ["alice"]
    # A call's outputs ride on the Invoke's own admission.
    asyncio.run(ArtifactAccess(ops, {"alice": ALICE}).save_output("alice", "s", "o.txt", b"o"))
    assert entered == ["alice"]


def test_an_unauthenticated_flood_is_summarised_not_recorded_one_by_one(
    tmp_path: Path, prom: CollectorRegistry
) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)
    op = ArtifactOp("list", None, rpc="ListArtifacts", authn_error="unknown token")

    async def scenario() -> None:
        for _ in range(50):
            answer = await ops.list(op)
            assert answer.decision.code == "unauthenticated"
        await ops.close()

    asyncio.run(scenario())
    kinds = [e.kind for e in audit.events]
    assert kinds.count("artifact") == 20
    (summary,) = [e for e in audit.events if e.kind == "unauthenticated_summary"]
    assert summary.input["suppressed"] == 30
    assert count(prom, "list", "deny", "unauthenticated") == 50


def test_a_rate_limited_flood_is_summarised_per_principal(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)

    @contextlib.contextmanager
    def refuse(principal: Principal) -> Iterator[None]:
        raise AdmissionError("over its rate", code="rate_limited")
        yield  # pragma: no cover - a generator, never reached

    ops.bind_admission(refuse)
    flooder = ArtifactOp("list", Principal("flooder", "default"), rpc="ListArtifacts")

    async def scenario() -> None:
        for _ in range(50):
            answer = await ops.list(flooder)
            assert answer.decision.code == "rate_limited"
        await ops.flush_summaries()

    asyncio.run(scenario())
    one_by_one = [e for e in audit.events if e.kind == "artifact"]
    summaries = [e for e in audit.events if e.kind == "rate_limited_summary"]
    assert len(one_by_one) == 20
    (summary,) = summaries
    assert summary.principal == "flooder"
    assert count(prom, "list", "deny", "rate_limited") == 50


def test_a_delete_whose_allow_cannot_be_recorded_deletes_nothing(tmp_path: Path, prom: CollectorRegistry) -> None:
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)
    put = asyncio.run(ops.put(put_op(), [b"keep me"]))
    assert put.record is not None
    audit.fail = True
    answer = asyncio.run(ops.delete(ArtifactOp("delete", ALICE, rpc="DeleteArtifact", artifact_id=put.record.id)))
    assert answer.decision.code == "audit_failed"
    assert [r.id for r in ops.store.list_artifacts("alice")] == [put.record.id]


async def _hanging(first: bytes = b"") -> AsyncIterator[bytes]:
    """An upload that sends its first bytes, then nothing, for ever."""
    if first:
        yield first
    await asyncio.Event().wait()


def test_stalled_uploads_starve_neither_the_audit_threads_nor_others(
    tmp_path: Path, prom: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An attack run froze every call with six uploads that sent a header and
    # then nothing: each held a thread of the default pool, which the audit
    # writer uses. Uploads now run in the store's own threads, two per
    # principal at most.
    monkeypatch.setattr(_ops, "PUT_QUEUE_S", 0.3)
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)
    bob = Principal("bob", "default")

    async def scenario() -> None:
        stalled = [asyncio.ensure_future(ops.put(put_op(f"s{i}"), _hanging(b"x"))) for i in range(8)]
        await asyncio.sleep(0.5)
        # The default executor (the audit writer's) is free.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 1.0) == 42
        # The flooder's third and later uploads are refused, not queued for ever.
        refused = [t for t in stalled if t.done()]
        assert len(refused) == 6
        assert {t.result().decision.code for t in refused} == {"artifact_store_busy"}
        # Another principal's upload goes through at once.
        other = await asyncio.wait_for(
            ops.put(ArtifactOp("put", bob, rpc="PutArtifact", name="b.txt"), [b"bob's"]), 2.0
        )
        assert other.decision.allowed
        for task in stalled:
            task.cancel()
        await asyncio.gather(*stalled, return_exceptions=True)

    asyncio.run(scenario())
    assert count(prom, "put", "deny", "artifact_store_busy") == 6


def test_inputs_over_the_byte_budget_are_refused_before_any_is_read(tmp_path: Path, prom: CollectorRegistry) -> None:
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), AuditList(), prom)
    ids = []
    for i in range(3):
        answer = asyncio.run(ops.put(put_op(f"in{i}"), [bytes([i]) * 100]))
        assert answer.record is not None
        ids.append(answer.record.id)
    reads: list[str] = []
    real_read = ops.store.read

    def counting_read(principal: str, artifact_id: str) -> Iterator[bytes]:
        reads.append(artifact_id)
        return real_read(principal, artifact_id)

    ops.store.read = counting_read  # type: ignore[method-assign]
    access = ArtifactAccess(ops, {"alice": ALICE})
    with pytest.raises(ArtifactDenied) as err:
        asyncio.run(access.open_inputs(ALICE, "", ids, max_bytes=250))
    assert err.value.code == "inputs_too_large"
    assert reads == []
    opened = asyncio.run(access.open_inputs(ALICE, "", ids, max_bytes=300))
    assert [len(content) for _, content in opened] == [100, 100, 100]


# -- the servicer's header checks and list cap (security findings M1, L3b) --------


class _Aborted(Exception):  # noqa: N818 - a control-flow signal, as grpc's abort
    pass


class _Context:
    """Enough of a grpc ServicerContext: an abort records its status and raises."""

    def __init__(self) -> None:
        self.status: Any = None

    async def abort_with_status(self, status: Any) -> None:
        self.status = status
        raise _Aborted

    async def abort(self, code: Any, details: str) -> None:
        self.status = (code, details)
        raise _Aborted


async def _put_messages(header: Any, data: bytes = b"abc") -> AsyncIterator[Any]:
    yield artifacts_pb2.PutArtifactRequest(header=header)
    yield artifacts_pb2.PutArtifactRequest(chunk=data)


def _servicer_put(ops: ArtifactOps, **header: Any) -> _Context:
    async def run() -> _Context:
        context = _Context()
        token = _server._AUTHN.set((ALICE, ""))
        try:
            servicer = _server.ArtifactServicer(ops)
            with pytest.raises(_Aborted):
                await servicer.PutArtifact(_put_messages(artifacts_pb2.PutArtifactHeader(**header)), context)
        finally:
            _server._AUTHN.reset(token)
        return context

    return asyncio.run(run())


@pytest.mark.parametrize(
    "header",
    [
        {"media_type": "x/" + "y" * 3_000_000},
        {"media_type": "text/plain\x00"},
        {"media_type": "text/plain; charset=utf-8"},
        {"media_type": "text/pla\nin"},
        {"media_type": "texte/é"},
        {"media_type": "plain"},
        {"session_id": "s" * 257},
        {"session_id": "s1\x00"},
        {"session_id": "s1\x1b[2J"},
        {"size": -1},
    ],
)
def test_a_malformed_put_header_is_refused_before_the_policy_audited_and_counted(
    tmp_path: Path, prom: CollectorRegistry, header: dict[str, Any]
) -> None:
    policy, audit = ArtifactPolicy(), AuditList()
    ops, _ = make_ops(tmp_path, policy, audit, prom)
    context = _servicer_put(ops, name="a.txt", **header)
    details = dict(context.status.trailing_metadata)["grpc-status-details-bin"]
    decision = wire.decision_from_status(status_pb2.Status.FromString(details))
    assert decision is not None
    assert decision.reasons[0].code == "artifact_header_invalid"
    assert policy.inputs == []  # refused before the policy saw it
    (event,) = audit.events
    assert event.reasons[0].code == "artifact_header_invalid"
    assert event.ByteSize() < 8192  # the oversized field is not in the audit line
    assert count(prom, "put", "deny", "artifact_header_invalid") == 1
    assert ops.store.list_artifacts("alice") == []


def test_a_well_formed_header_at_the_caps_is_stored(tmp_path: Path, prom: CollectorRegistry) -> None:
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), AuditList(), prom)
    media_type = "application/vnd." + "a" * 111  # 127-character subtype
    header = artifacts_pb2.PutArtifactHeader(name="a.txt", session_id="s" * 256, media_type=media_type, size=3)

    async def run() -> Any:
        token = _server._AUTHN.set((ALICE, ""))
        try:
            return await _server.ArtifactServicer(ops).PutArtifact(_put_messages(header), _Context())
        finally:
            _server._AUTHN.reset(token)

    resp = asyncio.run(run())
    assert resp.artifact.media_type == media_type
    assert resp.session_id == "s" * 256


def test_a_negative_size_in_the_store_is_a_header_refusal(tmp_path: Path, prom: CollectorRegistry) -> None:
    # The same rule below the servicer (an output, another caller): never artifact_too_large.
    audit = AuditList()
    ops, _ = make_ops(tmp_path, ArtifactPolicy(), audit, prom)
    for data in ([b""], [b"abc"]):
        answer = asyncio.run(ops.put(put_op(size=-5), data))
        assert answer.decision.code == "artifact_header_invalid"
    assert ops.store.list_artifacts("alice") == []


def test_list_answers_at_most_max_listed_the_newest_and_says_truncated() -> None:
    records = tuple(
        ArtifactRecord(f"art_{i:032x}", "alice", "", f"n{i}", "0" * 64, 1, "text/plain", float(i))
        for i in range(MAX_LISTED + 5)
    )
    allow = _ops.ArtifactDecision("d", True, (Reason("allowed", "ok"),), "ok", principal="alice")

    class Ops:
        def __init__(self, found: tuple[ArtifactRecord, ...]) -> None:
            self.found = found

        async def list(self, op: ArtifactOp) -> _ops.Answer:
            return _ops.Answer(allow, records=self.found)

    async def run(found: tuple[ArtifactRecord, ...]) -> Any:
        token = _server._AUTHN.set((ALICE, ""))
        try:
            servicer = _server.ArtifactServicer(Ops(found))  # type: ignore[arg-type]
            return await servicer.ListArtifacts(artifacts_pb2.ListArtifactsRequest(), _Context())
        finally:
            _server._AUTHN.reset(token)

    resp = asyncio.run(run(records))
    assert len(resp.artifacts) == MAX_LISTED
    assert resp.truncated
    assert [a.artifact.id for a in resp.artifacts] == [r.id for r in records[5:]]  # the newest, oldest first
    small = asyncio.run(run(records[:3]))
    assert len(small.artifacts) == 3
    assert not small.truncated


def test_artifact_header_invalid_is_an_invalid_argument() -> None:
    # Bad input, like artifact_header_missing: not a policy denial.
    assert _ops.STATUS_BY_CODE.get("artifact_header_invalid") == "invalid_argument"
