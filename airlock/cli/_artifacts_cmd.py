"""``airlock artifacts put|get|ls|rm|stat``: the gateway's ArtifactService
from the command line, printing JSON like ``airlock call`` (one object per
line for ``ls``) and exiting 0 (done), 3 (refused: the reason code is in the
JSON) or 4 (the gateway could not be reached)."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status

from airlock.cli._client import EXIT_DENIED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, Target, _decision_json, _emit
from airlock.common import wire
from airlock.v1 import artifacts_pb2, artifacts_pb2_grpc, call_pb2

#: Bytes per streamed message.
CHUNK_BYTES = 256 * 1024
_ID = re.compile(r"art_[0-9a-f]{32}")
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}


class _Refused(Exception):  # noqa: N818 - a control-flow signal, not an error type
    def __init__(self, out: dict[str, Any], code: int) -> None:
        super().__init__(out.get("message", ""))
        self.out = out
        self.code = code


def _stub(target: Target) -> tuple[grpc.Channel, artifacts_pb2_grpc.ArtifactServiceStub]:
    channel = target.channel()
    return channel, artifacts_pb2_grpc.ArtifactServiceStub(channel)


def _metadata(target: Target) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {target.token}"),) if target.token else ()


def _ref_json(ref: call_pb2.ArtifactRef) -> dict[str, Any]:
    return {"id": ref.id, "name": ref.name, "sha256": ref.sha256, "size": ref.size, "media_type": ref.media_type}


def _refused(exc: grpc.RpcError) -> _Refused:
    out: dict[str, Any] = {"decision": "deny", "status": exc.code().name, "message": exc.details() or ""}
    decision = wire.decision_from_status(rpc_status.from_call(exc))
    if decision is not None:
        out.update(_decision_json(decision))
    return _Refused(out, EXIT_UNAVAILABLE if exc.code() in _UNAVAILABLE and decision is None else EXIT_DENIED)


def _run(target: Target, timeout_s: float, action: Any) -> int:
    channel, stub = _stub(target)
    try:
        with channel:
            opts = {"metadata": _metadata(target), "timeout": timeout_s}
            for out in action(stub, opts):
                _emit(out)
    except grpc.RpcError as exc:
        refused = _refused(exc)
        _emit(refused.out)
        return refused.code
    except _Refused as refused:
        _emit(refused.out)
        return refused.code
    return EXIT_OK


def _resolve(stub: artifacts_pb2_grpc.ArtifactServiceStub, ref: str, opts: dict[str, Any]) -> str:
    """An artifact id as given, or the one artifact with exactly this name;
    a name several artifacts share is refused with their ids (never a
    guess: the names come from sandboxes)."""
    if _ID.fullmatch(ref):
        return ref
    listed = stub.ListArtifacts(artifacts_pb2.ListArtifactsRequest(prefix=ref), **opts)
    named = [a for a in listed.artifacts if a.artifact.name == ref]
    if not named:
        raise _Refused(
            {"decision": "deny", "status": "NOT_FOUND", "message": f"artifact_not_found: no artifact named {ref!r}"},
            EXIT_DENIED,
        )
    if len(named) > 1 or listed.truncated:
        raise _Refused(
            {
                "decision": "deny",
                "status": "AMBIGUOUS",
                "message": f"artifact_name_ambiguous: {len(named)} artifacts are named {ref!r}; pass an id",
                "ids": [a.artifact.id for a in sorted(named, key=lambda a: a.created_at)],
            },
            EXIT_DENIED,
        )
    only: str = named[0].artifact.id
    return only


def _local_name(name: str) -> Path:
    """The artifact's name as a file in the current folder, for ``get``
    without ``-o``: a plain name only (a hidden file or an option-like one
    from a sandbox is refused)."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or name[0] in ".-":
        raise _Refused(
            {
                "decision": "deny",
                "status": "LOCAL",
                "message": f"will not write a file named {name!r} (it starts with . or - or is not a plain name); "
                "pass -o FILE",
            },
            EXIT_USAGE,
        )
    return Path(name)


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def put(target: Target, path: Path, *, name: str | None, session: str, media_type: str, timeout_s: float) -> int:
    try:
        size, sha = _digest(path)
    except OSError as exc:
        _emit({"decision": "deny", "status": "LOCAL", "message": f"cannot read {path}: {exc.strerror}"})
        return EXIT_USAGE

    def messages() -> Iterator[artifacts_pb2.PutArtifactRequest]:
        header = artifacts_pb2.PutArtifactHeader(
            name=name or path.name, session_id=session, media_type=media_type, size=size, sha256=sha
        )
        yield artifacts_pb2.PutArtifactRequest(header=header)
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield artifacts_pb2.PutArtifactRequest(chunk=chunk)

    def action(stub: artifacts_pb2_grpc.ArtifactServiceStub, opts: dict[str, Any]) -> Iterator[dict[str, Any]]:
        resp = stub.PutArtifact(messages(), **opts)
        yield {**_decision_json(resp.decision), "artifact": _ref_json(resp.artifact), "session_id": resp.session_id}

    return _run(target, timeout_s, action)


def _receive(stream: Iterator[artifacts_pb2.GetArtifactResponse], fd: int, sha256: str) -> None:
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out:
        for message in stream:
            digest.update(message.chunk)
            out.write(message.chunk)
    if digest.hexdigest() != sha256:
        raise _Refused(
            {"decision": "deny", "status": "LOCAL", "message": "artifact_checksum_mismatch: the download"},
            EXIT_UNAVAILABLE,
        )


def get(target: Target, ref: str, *, output: Path | None, timeout_s: float) -> int:
    def action(stub: artifacts_pb2_grpc.ArtifactServiceStub, opts: dict[str, Any]) -> Iterator[dict[str, Any]]:
        artifact_id = _resolve(stub, ref, opts)
        stream = stub.GetArtifact(artifacts_pb2.GetArtifactRequest(id=artifact_id), **opts)
        first = next(stream)
        dest = output if output is not None else _local_name(first.artifact.name)
        if output is None and dest.exists():
            raise _Refused(
                {"decision": "deny", "status": "LOCAL", "message": f"{dest} exists; pass -o FILE"}, EXIT_USAGE
            )
        folder = dest.resolve().parent
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{dest.name}.", suffix=".partial")
        try:
            _receive(stream, fd, first.artifact.sha256)
            Path(tmp).replace(dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        yield {**_decision_json(first.decision), "artifact": _ref_json(first.artifact), "path": str(dest)}

    return _run(target, timeout_s, action)


def _listed_json(a: artifacts_pb2.ListedArtifact) -> dict[str, Any]:
    return {**_ref_json(a.artifact), "session_id": a.session_id, "created_at": a.created_at}


def ls(target: Target, *, session: str, prefix: str, shared: bool, timeout_s: float) -> int:
    def action(stub: artifacts_pb2_grpc.ArtifactServiceStub, opts: dict[str, Any]) -> Iterator[dict[str, Any]]:
        request = artifacts_pb2.ListArtifactsRequest(session_id=session, prefix=prefix, shared_only=shared)
        resp = stub.ListArtifacts(request, **opts)
        for a in resp.artifacts:
            yield _listed_json(a)
        if resp.truncated:
            # stderr: every stdout line stays one artifact.
            print(
                f"airlock: only the newest {len(resp.artifacts)} are listed; narrow with --session or --prefix",
                file=sys.stderr,
            )

    return _run(target, timeout_s, action)


def rm(target: Target, ref: str, *, timeout_s: float) -> int:
    def action(stub: artifacts_pb2_grpc.ArtifactServiceStub, opts: dict[str, Any]) -> Iterator[dict[str, Any]]:
        artifact_id = _resolve(stub, ref, opts)
        resp = stub.DeleteArtifact(artifacts_pb2.DeleteArtifactRequest(id=artifact_id), **opts)
        yield {**_decision_json(resp.decision), "artifact": _ref_json(resp.artifact), "deleted": True}

    return _run(target, timeout_s, action)


def stat(target: Target, ref: str, *, timeout_s: float) -> int:
    def action(stub: artifacts_pb2_grpc.ArtifactServiceStub, opts: dict[str, Any]) -> Iterator[dict[str, Any]]:
        artifact_id = _resolve(stub, ref, opts)
        resp = stub.StatArtifact(artifacts_pb2.StatArtifactRequest(id=artifact_id), **opts)
        yield {
            **_decision_json(resp.decision),
            "artifact": _ref_json(resp.artifact),
            "session_id": resp.session_id,
            "created_at": resp.created_at,
        }

    return _run(target, timeout_s, action)
