"""A call's artifacts on the gateway side, with fakes for the seams: the
policy's artifacts obligation, the tool's inputs argument, inputs opened
through the artifacts seam and sent to the executor, outputs stored and
reported, every refusal with its own code. The real executor, store and
policy are in tests/integration/test_artifacts_e2e.py."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from airlock.common.wire import ArtifactLimits, InputFile, SkippedOutput
from airlock.gateway._answer import parse_answer
from airlock.gateway._core import CoreSettings, Gateway, InputsError
from airlock.gateway._errors import PolicyError
from airlock.gateway._executor_client import _Outputs
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Call, CallInput, OutputFile, Principal, RunOutcome, RunSpec
from airlock.gateway._policy import PolicyResult
from airlock.gateway._registry import load_registry
from airlock.gateway.artifacts import ArtifactError, ArtifactNotFoundError, QuotaExceededError
from airlock.v1 import audit_pb2, executor_pb2

MiB = 1024 * 1024
ALICE = Principal("alice", "default", "token")
LIMITS = {
    "memory_bytes": 256 * MiB,
    "cpu_millis": 500,
    "pids": 64,
    "timeout_ms": 10_000,
    "output_bytes": MiB,
    "tmpfs_bytes": 16 * MiB,
}
ARTS = {
    "max_outputs": 4,
    "max_output_bytes": 1000,
    "max_output_file_bytes": 600,
    "max_inputs": 2,
    "max_input_bytes": 100,
}
REGISTRY = {
    "version": 1,
    "tools": {
        "python": {
            "description": "Run Python.",
            "image": "sandbox-python:test",
            "argv": ["python3", "-c", "{code}"],
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "inputs": {"type": "array", "items": {"type": "string"}}},
                "required": ["code"],
            },
            "artifacts": {"inputs": "inputs", "outputs": True},
        }
    },
}


@dataclass(frozen=True)
class Record:
    id: str
    name: str
    sha256: str
    size: int
    media_type: str = ""


class FakeArtifacts:
    """The seam: a dict of the principal's artifacts, a byte quota."""

    def __init__(self, items: dict[str, tuple[str, bytes]], quota: int = 10_000) -> None:
        self.items = items
        self.quota = quota
        self.saved: list[tuple[str, str, str, bytes, str]] = []

    async def open_inputs(
        self, principal: Principal, session: str, ids: Sequence[str], max_bytes: int | None = None
    ) -> list[tuple[Record, bytes]]:
        if max_bytes is not None and sum(len(self.items[i][1]) for i in ids if i in self.items) > max_bytes:
            raise InputsError("inputs_too_large", "over")
        out = []
        for i in ids:
            if i not in self.items:
                raise ArtifactNotFoundError(f"no artifact {i!r}")
            name, content = self.items[i]
            out.append((Record(i, name, "0" * 64, len(content)), content))
        return out

    async def save_output(
        self, principal: Principal, session: str, name: str, content: IO[bytes] | bytes, media_type: str = ""
    ) -> Record:
        data = content if isinstance(content, bytes) else content.read()
        if len(data) > self.quota:
            raise QuotaExceededError("over quota")
        self.quota -= len(data)
        self.saved.append((principal.id, session, name, data, media_type))
        return Record(f"art_{len(self.saved):032x}", name, "1" * 64, len(data), media_type)


class FakeExecutor:
    def __init__(self, outcome: RunOutcome) -> None:
        self.outcome = outcome
        self.calls: list[tuple[RunSpec, list[InputFile]]] = []

    async def run(self, plan: RunSpec, inputs: Sequence[InputFile] = ()) -> RunOutcome:
        self.calls.append((plan, list(inputs)))
        return self.outcome


class FakePolicy:
    def __init__(self, arts: dict[str, int] | None) -> None:
        self.doc: dict[str, Any] = {
            "allow": True,
            "reasons": [{"code": "allowed", "message": "ok"}],
            "obligations": {"limits": LIMITS, "network": {"mode": "none"}},
        }
        if arts is not None:
            self.doc["obligations"]["artifacts"] = arts

    async def evaluate(self, path: str, input_doc: Any) -> PolicyResult:
        return PolicyResult(self.doc, "rev-1")

    async def close(self) -> None:
        pass


class FakeAudit:
    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        copied = audit_pb2.AuditEvent()
        copied.CopyFrom(event)
        self.events.append(copied)

    def close(self) -> None:
        pass


def spooled(data: bytes) -> IO[bytes]:
    f = tempfile.SpooledTemporaryFile()  # noqa: SIM115 - closed by the gateway
    f.write(data)
    f.seek(0)
    return f


def gateway(
    tmp_path: Path, outcome: RunOutcome, *, artifacts: FakeArtifacts | None, arts: dict[str, int] | None = ARTS
) -> tuple[Gateway, FakeExecutor, FakeAudit, CollectorRegistry]:
    path = tmp_path / "tool_registry.yaml"
    path.write_text(yaml.safe_dump(REGISTRY), encoding="utf-8")
    registry = load_registry(path)
    prom = CollectorRegistry()
    executor = FakeExecutor(outcome)
    audit = FakeAudit()
    gw = Gateway(
        registry=registry,
        policy=FakePolicy(arts),
        executor=executor,
        audit=audit,
        metrics=GatewayMetrics(prom, registry.tools.keys()),
        settings=CoreSettings("airlock/decision", "airlock/granted_tools", 4096),
        artifacts=artifacts,
    )
    return gw, executor, audit, prom


def invoke_input(arguments: str) -> CallInput:
    return CallInput(Call("c-1", "function_call", "python", arguments, session_id="s-1"), ALICE, "Invoke")


OK = RunOutcome("ok", 0, b"", b"", False, 5)


def test_inputs_are_opened_and_sent_to_the_executor(tmp_path: Path) -> None:
    store = FakeArtifacts({"art_a": ("a.csv", b"x,y\n"), "art_b": ("b.txt", b"hello")})
    gw, executor, audit, _ = gateway(tmp_path, OK, artifacts=store)
    result = asyncio.run(gw.invoke(invoke_input('{"code": "1", "inputs": ["art_a", "art_b"]}')))
    assert result.run is not None
    assert result.run.outcome == "ok"
    ((plan, inputs),) = executor.calls
    assert [(f.name, f.content) for f in inputs] == [("a.csv", b"x,y\n"), ("b.txt", b"hello")]
    assert plan.artifacts == ArtifactLimits(**ARTS)
    execution = next(e for e in audit.events if e.kind == "execution")
    assert [(a.id, a.name, a.size) for a in execution.execution.inputs] == [
        ("art_a", "a.csv", 4),
        ("art_b", "b.txt", 5),
    ]


@pytest.mark.parametrize(
    ("arguments", "items", "code"),
    [
        ('{"code": "1", "inputs": ["art_x"]}', {}, "artifact_not_found"),
        ('{"code": "1", "inputs": ["a", "b", "c"]}', {}, "inputs_too_many"),
        ('{"code": "1", "inputs": ["a", "a"]}', {"a": ("n", b"1")}, "inputs_invalid"),
        ('{"code": "1", "inputs": ["a", "b"]}', {"a": ("n", b"1"), "b": ("n", b"2")}, "input_name_duplicate"),
        ('{"code": "1", "inputs": ["a", "b"]}', {"a": ("n", b"1" * 60), "b": ("m", b"2" * 60)}, "inputs_too_large"),
    ],
)
def test_input_refusals_run_nothing(tmp_path: Path, arguments: str, items: dict[str, Any], code: str) -> None:
    gw, executor, audit, _ = gateway(tmp_path, OK, artifacts=FakeArtifacts(items))
    result = asyncio.run(gw.invoke(invoke_input(arguments)))
    assert result.run is not None
    assert result.run.outcome == "error"
    assert result.run.error.startswith(f"{code}: ")
    assert executor.calls == []
    execution = next(e for e in audit.events if e.kind == "execution")
    assert execution.execution.error.startswith(code)


def test_inputs_without_a_store_fail_closed(tmp_path: Path) -> None:
    gw, executor, _, _ = gateway(tmp_path, OK, artifacts=None)
    result = asyncio.run(gw.invoke(invoke_input('{"code": "1", "inputs": ["art_a"]}')))
    assert result.run is not None
    assert result.run.error.startswith("artifact_store_unavailable: ")
    assert executor.calls == []


def test_without_a_store_nothing_is_collected(tmp_path: Path) -> None:
    gw, executor, _, _ = gateway(tmp_path, OK, artifacts=None)
    asyncio.run(gw.invoke(invoke_input('{"code": "1"}')))
    ((plan, _),) = executor.calls
    assert plan.artifacts == ArtifactLimits()


def test_a_policy_without_artifacts_grants_none(tmp_path: Path) -> None:
    store = FakeArtifacts({"art_a": ("a", b"1")})
    gw, executor, _, _ = gateway(tmp_path, OK, artifacts=store, arts=None)
    result = asyncio.run(gw.invoke(invoke_input('{"code": "1", "inputs": ["art_a"]}')))
    assert result.run is not None
    assert result.run.error.startswith("inputs_too_many: ")
    asyncio.run(gw.invoke(invoke_input('{"code": "1"}')))
    ((plan, _),) = executor.calls
    assert plan.artifacts.max_outputs == 0


def test_outputs_are_stored_and_refusals_reported(tmp_path: Path) -> None:
    files = (OutputFile("summary.csv", 4, spooled(b"a,b\n")), OutputFile("big.bin", 20, spooled(b"z" * 20)))
    outcome = OutputsOutcome(files, (SkippedOutput("link", "not_regular"),))
    store = FakeArtifacts({}, quota=10)
    gw, _, audit, _ = gateway(tmp_path, outcome, artifacts=store)
    result = asyncio.run(gw.invoke(invoke_input('{"code": "1"}')))
    assert result.run is not None
    assert [(a.name, a.size, a.media_type) for a in result.run.artifacts] == [("summary.csv", 4, "text/csv")]
    assert result.run.skipped_outputs == (
        SkippedOutput("link", "not_regular"),
        SkippedOutput("big.bin", "artifact_quota_exceeded"),
    )
    assert store.saved == [("alice", "s-1", "summary.csv", b"a,b\n", "text/csv")]
    assert all(f.file.closed for f in files)
    execution = next(e for e in audit.events if e.kind == "execution")
    assert [a.name for a in execution.execution.artifacts] == ["summary.csv"]
    assert [(s.name, s.reason) for s in execution.execution.skipped_outputs] == [
        ("link", "not_regular"),
        ("big.bin", "artifact_quota_exceeded"),
    ]


def OutputsOutcome(files: tuple[OutputFile, ...], skipped: tuple[SkippedOutput, ...]) -> RunOutcome:  # noqa: N802
    return RunOutcome("ok", 0, b"", b"", False, 5, outputs=files, skipped_outputs=skipped)


# -- the decision's artifacts obligation ----------------------------------------


def answer(arts: Any) -> dict[str, Any]:
    return {
        "allow": True,
        "reasons": [{"code": "allowed", "message": "ok"}],
        "obligations": {"limits": LIMITS, "network": {"mode": "none"}, "artifacts": arts},
    }


def test_artifacts_obligation_parsed() -> None:
    assert parse_answer(answer(ARTS)).obligations.artifacts == ArtifactLimits(**ARTS)
    assert parse_answer(answer({})).obligations.artifacts == ArtifactLimits()


@pytest.mark.parametrize(
    "arts", [[], {"max_outputs": -1}, {"max_outputs": True}, {"max_outputs": 1.5}, {"max_files": 3}]
)
def test_malformed_artifacts_obligation_is_policy_malformed(arts: Any) -> None:
    with pytest.raises(PolicyError) as err:
        parse_answer(answer(arts))
    assert err.value.code == "policy_malformed"


# -- the registry's artifacts declaration ---------------------------------------


@pytest.mark.parametrize(
    ("artifacts", "message"),
    [
        ({"inputs": "code"}, "must be a parameter of type array"),
        ({"inputs": "nope"}, "must be a parameter of type array"),
        ({"outputs": "yes"}, "outputs"),
    ],
)
def test_registry_artifacts_checked(tmp_path: Path, artifacts: dict[str, Any], message: str) -> None:
    doc = yaml.safe_load(yaml.safe_dump(REGISTRY))
    doc["tools"]["python"]["artifacts"] = artifacts
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(Exception, match=message):
        load_registry(path)


# -- the executor client's output spooling --------------------------------------


def chunk(name: str, data: bytes, *, eof: bool = False, size: int = 0) -> executor_pb2.OutputFileChunk:
    return executor_pb2.OutputFileChunk(name=name, data=data, eof=eof, size=size)


def test_outputs_spooled_and_checked_again() -> None:
    out = _Outputs(ArtifactLimits(max_outputs=2, max_output_bytes=100, max_output_file_bytes=60))
    out.add(chunk("a", b"12"))
    out.add(chunk("a", b"34", eof=True, size=4))
    out.add(chunk("b", b"x" * 61, eof=True, size=61))  # over the per-file limit
    out.add(chunk("c", b"y" * 10))  # cut: the next file starts before its end
    out.add(chunk("d", b"z", eof=True, size=2))  # the size does not match
    out.add(chunk("e", b"w", eof=True, size=1))
    out.add(chunk("f", b"v", eof=True, size=1))  # a third file: over the count
    files, skipped = out.finish()
    got = [(f.name, f.size, f.file.read()) for f in files]
    for f in files:
        f.file.close()
    assert got == [("a", 4, b"1234"), ("e", 1, b"w")]
    assert skipped == (
        SkippedOutput("b", "too_large"),
        SkippedOutput("c", "collection_failed"),
        SkippedOutput("d", "collection_failed"),
        SkippedOutput("f", "count_limit"),
    )


def test_outputs_discarded_on_failure() -> None:
    out = _Outputs(ArtifactLimits(max_outputs=2, max_output_bytes=100, max_output_file_bytes=60))
    out.add(chunk("a", b"1", eof=True, size=1))
    out.add(chunk("b", b"2"))
    out.discard()
    files, skipped = out.finish()
    assert files == ()
    assert skipped == ()


def test_artifact_error_codes_are_stable() -> None:
    assert issubclass(ArtifactNotFoundError, ArtifactError)
    assert ArtifactNotFoundError.code == "artifact_not_found"
