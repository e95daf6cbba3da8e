"""The seam between the gateway and where artifacts live: one Protocol, two
backends (a local directory with SQLite, and S3-compatible object storage),
and the spooling both use so that a put is checked whole -- size, quota,
sha256 -- before anything becomes visible."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Protocol

from airlock.gateway.artifacts._model import (
    ArtifactRecord,
    ArtifactTooLargeError,
    ArtifactTruncatedError,
    ChecksumMismatchError,
    PutRequest,
    Quota,
    QuotaExceededError,
    StoreUnavailableError,
    check_header,
    check_name,
    check_sha256,
)

log = logging.getLogger("airlock.gateway.artifacts")

#: Bytes per chunk when reading a blob back.
CHUNK_BYTES = 256 * 1024


def unavailable(what: str, exc: BaseException) -> StoreUnavailableError:
    """A backend failure as the caller (and the model) sees it: a fixed
    message and at most an error code -- never a host path, an endpoint, a
    bucket or a key. The whole error goes to the log."""
    log.warning("artifact store: %s: %r", what, exc)
    return StoreUnavailableError(what)


def owner_digest(principal: str) -> str:
    """The principal's folder or key segment: a digest, so no principal id
    can spell a path."""
    return hashlib.sha256(principal.encode("utf-8")).hexdigest()[:32]


class ArtifactStore(Protocol):
    """Every method is synchronous (the gateway calls them in a thread) and
    scoped by principal: one principal's ids do not exist for another."""

    def put(self, req: PutRequest, chunks: Iterable[bytes], quota: Quota) -> ArtifactRecord: ...

    def stat(self, principal: str, artifact_id: str) -> ArtifactRecord: ...

    def read(self, principal: str, artifact_id: str) -> Iterator[bytes]: ...

    def list_artifacts(
        self, principal: str, *, session: str | None = None, prefix: str = ""
    ) -> list[ArtifactRecord]: ...

    def delete(self, principal: str, artifact_id: str) -> ArtifactRecord: ...

    def usage(self, principal: str) -> tuple[int, int]:
        """(bytes, count) the principal holds."""
        ...

    def older_than(self, cutoff: float) -> list[ArtifactRecord]:
        """Every artifact created before ``cutoff`` (for the retention sweeper)."""
        ...


@dataclass(frozen=True)
class Spooled:
    """A put's content, checked and on local disk, not yet visible."""

    file: IO[bytes]
    sha256: str
    size: int


def new_id() -> str:
    return f"art_{uuid.uuid4().hex}"


def spool(
    req: PutRequest, chunks: Iterable[bytes], quota: Quota, used_bytes: int, folder: str | None = None
) -> Spooled:
    """Writes ``chunks`` to an unnamed temporary file while hashing and
    counting; refuses as soon as the artifact or the principal's quota would
    be exceeded, and at the end on a short upload or a sha256 mismatch. The
    caller closes the file (which removes it)."""
    check_name(req.name)
    check_header(session=req.session, media_type=req.media_type, size=req.expected_size)
    if req.expected_sha256 is not None:
        check_sha256(req.expected_sha256)
    # The remaining quota is checked by the backend once the content is known
    # (bytes it already holds count once); here only what can never fit.
    limit = min(quota.max_artifact_bytes, quota.max_bytes)
    if req.expected_size is not None and req.expected_size > quota.max_artifact_bytes:
        raise ArtifactTooLargeError(
            f"{req.expected_size} bytes is over the {quota.max_artifact_bytes}-byte artifact limit"
        )
    try:
        file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - handed to the caller, who closes it
    except OSError as exc:
        raise unavailable("cannot spool the artifact", exc) from exc
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            _check_running(req, quota, used_bytes, size, limit)
            digest.update(chunk)
            _write(file, chunk)
        sha = digest.hexdigest()
        _check_whole(req, size, sha)
        try:
            file.flush()
            os.fsync(file.fileno())
            file.seek(0)
        except OSError as exc:
            raise unavailable("cannot spool the artifact", exc) from exc
    except BaseException:
        file.close()
        raise
    return Spooled(file, sha, size)


def _write(file: IO[bytes], chunk: bytes) -> None:
    # Only the spool's own writes: an OSError out of ``chunks`` is the
    # caller's stream failing, not the store.
    try:
        file.write(chunk)
    except OSError as exc:
        raise unavailable("cannot spool the artifact", exc) from exc


def _check_running(req: PutRequest, quota: Quota, used_bytes: int, size: int, limit: int) -> None:
    if req.expected_size is not None and size > req.expected_size:
        raise ArtifactTooLargeError(f"more than the declared {req.expected_size} bytes arrived")
    if size <= limit:
        return
    if size > quota.max_artifact_bytes:
        raise ArtifactTooLargeError(f"over the {quota.max_artifact_bytes}-byte artifact limit")
    raise QuotaExceededError(f"the principal's {quota.max_bytes}-byte quota ({used_bytes} used) would be exceeded")


def _check_whole(req: PutRequest, size: int, sha: str) -> None:
    if req.expected_size is not None and size < req.expected_size:
        raise ArtifactTruncatedError(f"{size} of the declared {req.expected_size} bytes arrived")
    if req.expected_sha256 is not None and sha != req.expected_sha256:
        raise ChecksumMismatchError("the content does not hash to the declared sha256")


def read_chunks(file: IO[bytes]) -> Iterator[bytes]:
    with file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def make_record(req: PutRequest, spooled: Spooled, created_at: float) -> ArtifactRecord:
    return ArtifactRecord(
        id=new_id(),
        principal=req.principal,
        session=req.session,
        name=req.name,
        sha256=spooled.sha256,
        size=spooled.size,
        media_type=req.media_type,
        created_at=created_at,
    )
