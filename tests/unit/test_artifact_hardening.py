"""Findings of the attack run on artifacts, each pinned: header and name
rules (airlock/gateway/artifacts/_model.py), store failures that must be
StoreUnavailableError with a fixed message (spool, LocalStore's SQLite, S3's
botocore text), the gateway's output spool (_executor_client._Outputs), the
CLI's name resolution and download name, and the sandbox execs' absolute
tool paths. Real parts where cheap (SQLite, botocore against a closed
port); fakes for the disk filling up."""

from __future__ import annotations

import errno
import json
import re
import shlex
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from airlock.cli import _artifacts_cmd
from airlock.cli._client import EXIT_DENIED, EXIT_USAGE, Target
from airlock.common.wire import ArtifactLimits, SkippedOutput
from airlock.executor import _artifacts as transfer
from airlock.gateway import _executor_client
from airlock.gateway._executor_client import _Outputs
from airlock.gateway._input import FIELD_CAPS
from airlock.gateway.artifacts import (
    ArtifactNameError,
    ArtifactNotFoundError,
    LocalStore,
    PutRequest,
    Quota,
    StoreUnavailableError,
    _store,
    check_name,
)
from airlock.gateway.artifacts._model import (
    ArtifactHeaderError,
    check_header,
    check_id,
    check_media_type,
    check_session,
    check_sha256,
)
from airlock.gateway.artifacts.s3 import S3Settings, S3Store
from airlock.v1 import artifacts_pb2, call_pb2, executor_pb2

QUOTA = Quota(max_bytes=1 << 20, max_count=16, max_artifact_bytes=1 << 19)
ID = "art_" + "a" * 32


# -- names, ids, headers ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [" ", "   ", "\u00a0", "\u3000", "\u2003\u2003", " a.txt", "a.txt ", "\u00a0a.txt", "a.txt\u3000", "\ta.txt"],
)
def test_a_blank_or_whitespace_padded_name_is_invalid(name: str) -> None:
    with pytest.raises(ArtifactNameError):
        check_name(name)
    assert transfer.name_problem(name) is not None  # the rule the executor applies (airlock.common.names)


@pytest.mark.parametrize("name", ["a b.txt", "my\u00a0file", "x"])
def test_inner_whitespace_is_fine(name: str) -> None:
    assert check_name(name) == name
    assert transfer.name_problem(name) is None


@pytest.mark.parametrize("bad", [ID + "\n", "x" + ID, ID + "0", ID.upper()])
def test_ids_and_digests_match_whole(bad: str) -> None:
    with pytest.raises(ArtifactNotFoundError):
        check_id(bad)
    with pytest.raises(Exception, match="sha256"):
        check_sha256("a" * 64 + "\n")
    assert check_id(ID) == ID


@pytest.mark.parametrize(
    "media_type",
    [
        "text/plain; charset=utf-8",
        "text/plain\n",
        "text/plain\x00",
        "text /plain",
        "text/",
        "/plain",
        "plain",
        "text/pl\u00e4in",
        "a/b/c",
        "x/" + "y" * 128,
        "x" * 128 + "/y",
        "x/" + "y" * 3_000_000,
    ],
)
def test_a_media_type_is_a_bare_rfc6838_type(media_type: str) -> None:
    with pytest.raises(ArtifactHeaderError) as info:
        check_media_type(media_type)
    assert info.value.code == "artifact_header_invalid"
    assert len(str(info.value)) < 200  # never the value echoed back


@pytest.mark.parametrize("media_type", ["text/csv", "application/vnd.api+json", "image/svg+xml", "x-a/b.c-d_e"])
def test_good_media_types(media_type: str) -> None:
    assert check_media_type(media_type) == media_type


def test_a_session_id_follows_invokes_cap() -> None:
    limit = FIELD_CAPS["session_id"]
    assert check_session("s" * limit) == "s" * limit
    assert check_session("") == ""
    for bad in ("s" * (limit + 1), "a\x00b", "a\nb", "a\u202eb"):
        with pytest.raises(ArtifactHeaderError):
            check_session(bad)


def test_a_negative_size_is_a_header_error_not_too_large(tmp_path: Path) -> None:
    with pytest.raises(ArtifactHeaderError):
        check_header(session="", media_type="", size=-1)
    check_header(session="", media_type="", size=0)
    store = LocalStore(tmp_path / "s")
    for data in ([b""], [b"abc"]):
        with pytest.raises(ArtifactHeaderError):
            store.put(PutRequest("alice", "a.txt", expected_size=-1), data, QUOTA)
    with pytest.raises(ArtifactHeaderError):
        store.put(PutRequest("alice", "a.txt", media_type="x" * 1000), [b"abc"], QUOTA)
    assert store.list_artifacts("alice") == []


# -- store failures ---------------------------------------------------------------


def test_spool_disk_failures_are_store_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    req = PutRequest("alice", "a.txt")

    def no_temp(**_kw: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "secret-host-path"))

    monkeypatch.setattr(_store.tempfile, "TemporaryFile", no_temp)
    with pytest.raises(StoreUnavailableError) as info:
        _store.spool(req, [b"abc"], QUOTA, 0, folder=str(tmp_path))
    assert str(info.value) == "cannot spool the artifact"
    monkeypatch.undo()

    class Full:
        def __init__(self) -> None:
            self.closed = False

        def write(self, _data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.closed = True

    full = Full()
    monkeypatch.setattr(_store.tempfile, "TemporaryFile", lambda **_kw: full)
    with pytest.raises(StoreUnavailableError):
        _store.spool(req, [b"abc"], QUOTA, 0, folder=str(tmp_path))
    assert full.closed
    monkeypatch.undo()

    def no_fsync(_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_store.os, "fsync", no_fsync)
    with pytest.raises(StoreUnavailableError):
        _store.spool(req, [b"abc"], QUOTA, 0, folder=str(tmp_path))


def test_a_failing_stream_is_not_taken_for_the_store(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a"
        raise OSError("the caller's stream broke")

    with pytest.raises(OSError, match="stream broke"):
        _store.spool(PutRequest("alice", "a.txt"), chunks(), QUOTA, 0, folder=str(tmp_path))


def test_local_database_failures_are_store_unavailable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "secret-host-path")
    record = store.put(PutRequest("alice", "a.txt"), [b"abc"], QUOTA)
    store._db.close()  # every later statement: sqlite3.ProgrammingError
    calls = {
        "stat": lambda: store.stat("alice", record.id),
        "read": lambda: store.read("alice", record.id),
        "list": lambda: store.list_artifacts("alice"),
        "usage": lambda: store.usage("alice"),
        "older_than": lambda: store.older_than(1e12),
        "delete": lambda: store.delete("alice", record.id),
        "put": lambda: store.put(PutRequest("alice", "b.txt"), [b"x"], QUOTA),
        "remove_orphans": store.remove_orphans,
    }
    for what, call in calls.items():
        with pytest.raises(StoreUnavailableError) as info:
            call()
        assert "secret-host-path" not in str(info.value), what
        assert isinstance(info.value.__cause__, sqlite3.Error), what


def test_local_insert_failure_is_store_unavailable(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    record = store.put(PutRequest("alice", "a.txt"), [b"abc"], QUOTA)
    with pytest.raises(StoreUnavailableError):
        store._insert(record)  # the same id again: sqlite3.IntegrityError
    assert [r.id for r in store.list_artifacts("alice")] == [record.id]


def test_local_blob_write_failure_is_a_fixed_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "secret-host-path")

    def full(*_a: Any, **_kw: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "secret-host-path" / "blobs"))

    monkeypatch.setattr("os.replace", full)  # the blob's rename into place (the spool uses none)
    with pytest.raises(StoreUnavailableError) as info:
        store.put(PutRequest("alice", "a.txt"), [b"abc"], QUOTA)
    assert str(info.value) == "cannot write the artifact"
    monkeypatch.undo()
    assert store.list_artifacts("alice") == []


def test_s3_errors_name_no_endpoint_bucket_or_prefix(tmp_path: Path) -> None:
    store = S3Store(
        S3Settings(
            endpoint_url="http://127.0.0.1:1",
            bucket="secret-bucket-name",
            access_key_id="k",
            secret_access_key="s",
            prefix="secret-prefix",
        ),
        spool_dir=str(tmp_path),
    )
    calls = {
        "stat": lambda: store.stat("alice", ID),
        "list": lambda: store.list_artifacts("alice"),
        "usage": lambda: store.usage("alice"),
        "put": lambda: store.put(PutRequest("alice", "a.txt"), [b"abc"], QUOTA),
        "older_than": lambda: store.older_than(1e12),
    }
    for what, call in calls.items():
        with pytest.raises(StoreUnavailableError) as info:
            call()
        message = str(info.value)
        for secret in ("127.0.0.1", ":1", "http", "secret-bucket-name", "secret-prefix", "/meta/", "/blobs/", ID):
            assert secret not in message, (what, message)
        assert re.fullmatch(r"[a-z' ]+ \([A-Za-z0-9_.-]+\)", message), (what, message)


# -- the gateway's output spool -----------------------------------------------------


def _chunk(name: str, data: bytes, *, eof: bool = False, size: int = 0) -> executor_pb2.OutputFileChunk:
    return executor_pb2.OutputFileChunk(name=name, data=data, eof=eof, size=size)


def test_a_refused_chunk_does_not_count_against_the_total() -> None:
    out = _Outputs(ArtifactLimits(max_outputs=5, max_output_bytes=10, max_output_file_bytes=10))
    out.add(_chunk("a", b"x" * 8, eof=True, size=8))
    out.add(_chunk("b", b"y" * 5, eof=True, size=5))  # 13 > 10: refused, never written
    out.add(_chunk("c", b"zz", eof=True, size=2))  # 8 + 2 = 10: fits
    files, skipped = out.finish()
    assert [(f.name, f.file.read()) for f in files] == [("a", b"x" * 8), ("c", b"zz")]
    assert skipped == (SkippedOutput("b", "total_limit"),)
    out.discard()


def test_a_full_disk_skips_one_output_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tempfile.SpooledTemporaryFile

    class Full:
        def __init__(self, *a: Any, **kw: Any) -> None:
            self._file = real(*a, **kw)

        def write(self, _data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self._file.close()

    out = _Outputs(ArtifactLimits(max_outputs=5, max_output_bytes=100, max_output_file_bytes=100))
    out.add(_chunk("a", b"12345", eof=True, size=5))
    monkeypatch.setattr(_executor_client.tempfile, "SpooledTemporaryFile", Full)
    out.add(_chunk("b", b"xx"))
    out.add(_chunk("b", b"yy", eof=True, size=4))  # the rest of the skipped file: ignored
    monkeypatch.undo()

    def no_spool(*_a: Any, **_kw: Any) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_executor_client.tempfile, "SpooledTemporaryFile", no_spool)
    out.add(_chunk("c", b"zz", eof=True, size=2))
    monkeypatch.undo()
    out.add(_chunk("d", b"w" * 95, eof=True, size=95))  # the skipped bytes count for nothing
    files, skipped = out.finish()
    assert [f.name for f in files] == ["a", "d"]
    assert skipped == (SkippedOutput("b", "collection_failed"), SkippedOutput("c", "collection_failed"))
    out.discard()


# -- the CLI ------------------------------------------------------------------------


def _listed(artifact_id: str, name: str, created_at: float) -> artifacts_pb2.ListedArtifact:
    ref = call_pb2.ArtifactRef(id=artifact_id, name=name, sha256="0" * 64, size=0)
    return artifacts_pb2.ListedArtifact(artifact=ref, created_at=created_at)


class _Channel:
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


class _Stub:
    def __init__(self, listed: list[artifacts_pb2.ListedArtifact], download: list[Any] | None = None) -> None:
        self.listed = listed
        self.download = download or []
        self.asked: list[str] = []
        self.truncated = False

    def ListArtifacts(self, request: Any, **_kw: Any) -> artifacts_pb2.ListArtifactsResponse:  # noqa: N802
        return artifacts_pb2.ListArtifactsResponse(artifacts=self.listed, truncated=self.truncated)

    def GetArtifact(self, request: Any, **_kw: Any) -> Iterator[Any]:  # noqa: N802
        self.asked.append(request.id)
        return iter(self.download)

    def DeleteArtifact(self, request: Any, **_kw: Any) -> Any:  # noqa: N802
        self.asked.append(request.id)
        return artifacts_pb2.DeleteArtifactResponse(artifact=call_pb2.ArtifactRef(id=request.id))


def _use(monkeypatch: pytest.MonkeyPatch, stub: _Stub) -> Target:
    monkeypatch.setattr(_artifacts_cmd, "_stub", lambda _target: (_Channel(), stub))
    return Target("unused:0", None)


def test_a_name_several_artifacts_share_is_refused_with_their_ids(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = "art_" + "1" * 32, "art_" + "2" * 32
    stub = _Stub([_listed(a, "out.csv", 1.0), _listed(b, "out.csv", 2.0), _listed("art_" + "3" * 32, "out.csv2", 3)])
    target = _use(monkeypatch, stub)
    assert _artifacts_cmd.rm(target, "out.csv", timeout_s=5) == EXIT_DENIED
    out = json.loads(capsys.readouterr().out)
    assert out["ids"] == [a, b]
    assert out["message"].startswith("artifact_name_ambiguous")
    assert stub.asked == []  # nothing deleted
    stub.listed = stub.listed[1:]
    assert _artifacts_cmd.rm(target, "out.csv", timeout_s=5) == 0
    assert stub.asked == [b]


def test_ls_says_on_stderr_when_the_listing_was_cut(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stub = _Stub([_listed(ID, "a", 1.0)])
    stub.truncated = True
    assert _artifacts_cmd.ls(_use(monkeypatch, stub), session="", prefix="", shared=False, timeout_s=5) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["id"] for line in out.splitlines()] == [ID]
    assert "newest 1" in err


@pytest.mark.parametrize("name", [".bashrc", "-rf", "--help", ".."])
def test_get_without_o_writes_no_hidden_or_option_like_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    first = artifacts_pb2.GetArtifactResponse(artifact=call_pb2.ArtifactRef(id=ID, name=name, sha256="0" * 64))
    target = _use(monkeypatch, _Stub([], [first]))
    monkeypatch.chdir(tmp_path)
    assert _artifacts_cmd.get(target, ID, output=None, timeout_s=5) == EXIT_USAGE
    assert "-o" in json.loads(capsys.readouterr().out)["message"]
    assert list(tmp_path.iterdir()) == []


# -- the sandbox execs ------------------------------------------------------------

_BUILTINS = {"set", "cd", "exec", "kill"}


@pytest.mark.parametrize(
    "argv",
    [
        transfer.COPY_IN_ARGV,
        transfer.CLEAR_INPUTS_ARGV,
        transfer.CLEAR_OUTPUTS_ARGV,
        transfer.LIST_ARGV,
        tuple(transfer.tar_argv(["a"])),
    ],
)
def test_the_sandbox_execs_run_tools_by_absolute_path(argv: tuple[str, ...]) -> None:
    assert argv[0].startswith("/")
    words = shlex.split(argv[2].replace(";", " ; ").replace("&&", " && "))
    commands = [w for prev, w in zip([";", *words], words, strict=False) if prev in {";", "&&", "exec", "-exec"}]
    assert commands
    for command in commands:
        assert command.startswith("/") or command in _BUILTINS, (command, argv[2])
