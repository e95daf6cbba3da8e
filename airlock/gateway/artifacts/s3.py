"""S3-compatible object storage, for gateways that share a bucket or
outgrow a disk. Everything -- blobs and metadata -- lives in the bucket, so
every gateway that points at the same bucket and prefix sees the same
artifacts:

- ``<prefix>/blobs/<owner>/<sha256>``: the content, once per principal
  (``<owner>`` is a digest of the principal id, so no id can spell a path);
- ``<prefix>/meta/<owner>/<artifact id>.json``: one small JSON record per
  artifact.

A put spools and checks the content locally first (size, quota, sha256),
uploads the blob with ``Content-MD5`` (the server refuses a body that does
not match it: BadDigest) and checks the returned ETag, and only then writes
the metadata object. So a record never names a missing blob; a put that
fails halfway leaves at most a blob no record names, which the orphan pass
removes. Quotas are checked against a listing at put time: gateways racing
on one principal's last bytes can overshoot by one artifact each (the local
backend's check is atomic).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from airlock.gateway.artifacts._model import (
    ArtifactNotFoundError,
    ArtifactRecord,
    PutRequest,
    Quota,
    QuotaExceededError,
    StoreUnavailableError,
    check_id,
)
from airlock.gateway.artifacts._store import CHUNK_BYTES, make_record, owner_digest, spool, unavailable

#: Connect and read timeouts (seconds) and attempts: a stopped server fails a
#: call within seconds instead of hanging the caller.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 2
#: Blobs this young are never taken for orphans (their record may be on its way).
ORPHAN_GRACE_S = 600.0
_FAILURES = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError)


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    prefix: str = "airlock"
    region: str = "us-east-1"


_owner = owner_digest


def _failure(what: str, exc: BaseException) -> StoreUnavailableError:
    """A fixed message and the error's code: botocore's own text names the
    endpoint, the bucket and the keys, and the message reaches the caller
    (and the model). The whole error goes to the log."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "")) or "ClientError"
    else:
        code = type(exc).__name__
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", code):
        code = "error"
    return unavailable(f"{what} ({code})", exc)


def _missing(exc: botocore.exceptions.ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"NoSuchKey", "404", "ArtifactNotFoundError"}


class S3Store:
    def __init__(self, settings: S3Settings, spool_dir: str | None = None) -> None:
        self.bucket = settings.bucket
        self.prefix = settings.prefix.strip("/")
        self.spool_dir = spool_dir
        self._s3: Any = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region,
            config=botocore.config.Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                s3={"addressing_style": "path"},
                # Plain requests with Content-MD5, which every S3 server checks;
                # the newer streamed trailing checksums are not universal.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    # --- keys --------------------------------------------------------------

    def _blob_key(self, principal: str, sha256: str) -> str:
        return f"{self.prefix}/blobs/{_owner(principal)}/{sha256}"

    def _meta_key(self, principal: str, artifact_id: str) -> str:
        return f"{self.prefix}/meta/{_owner(principal)}/{artifact_id}.json"

    def _keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                yield from page.get("Contents", [])
        except _FAILURES as exc:
            raise _failure("cannot list the bucket", exc) from exc

    def _holds(self, principal: str, sha256: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._blob_key(principal, sha256))
        except botocore.exceptions.ClientError as exc:
            if _missing(exc):
                return False
            raise _failure("cannot check the bucket", exc) from exc
        except _FAILURES as exc:
            raise _failure("cannot check the bucket", exc) from exc
        return True

    def _record(self, key: str) -> ArtifactRecord:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if _missing(exc):
                raise ArtifactNotFoundError("no such artifact") from exc
            raise _failure("cannot read artifact metadata", exc) from exc
        except _FAILURES as exc:
            raise _failure("cannot read artifact metadata", exc) from exc
        return ArtifactRecord(**json.loads(body))

    # --- the Protocol ------------------------------------------------------

    def put(self, req: PutRequest, chunks: Iterable[bytes], quota: Quota) -> ArtifactRecord:
        used, count = self.usage(req.principal)
        if count + 1 > quota.max_count:
            raise QuotaExceededError(f"the principal holds {count} artifacts; the quota is {quota.max_count}")
        spooled = spool(req, chunks, quota, used, folder=self.spool_dir)
        with spooled.file:
            record = make_record(req, spooled, time.time())
            if used + record.size > quota.max_bytes and not self._holds(req.principal, record.sha256):
                raise QuotaExceededError(
                    f"the principal's {quota.max_bytes}-byte quota ({used} used) would be exceeded"
                )
            md5 = hashlib.md5()  # noqa: S324 - Content-MD5 is S3's integrity check, not a security digest
            while chunk := spooled.file.read(CHUNK_BYTES):
                md5.update(chunk)
            spooled.file.seek(0)
            try:
                answer = self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self._blob_key(req.principal, record.sha256),
                    Body=spooled.file,
                    ContentLength=record.size,
                    ContentMD5=base64.b64encode(md5.digest()).decode(),
                    Metadata={"sha256": record.sha256},
                )
                if answer.get("ETag", "").strip('"') != md5.hexdigest():
                    raise StoreUnavailableError("the object store's ETag does not match the uploaded content")
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self._meta_key(req.principal, record.id),
                    Body=json.dumps(asdict(record)).encode(),
                    ContentType="application/json",
                )
            except _FAILURES as exc:
                raise _failure("cannot store the artifact", exc) from exc
        return record

    def stat(self, principal: str, artifact_id: str) -> ArtifactRecord:
        check_id(artifact_id)
        record = self._record(self._meta_key(principal, artifact_id))
        if record.principal != principal:  # a digest collision, in theory
            raise ArtifactNotFoundError("no such artifact")
        return record

    def read(self, principal: str, artifact_id: str) -> Iterator[bytes]:
        record = self.stat(principal, artifact_id)
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self._blob_key(principal, record.sha256))["Body"]
        except _FAILURES as exc:
            raise _failure("cannot read the artifact", exc) from exc

        def chunks() -> Iterator[bytes]:
            with body:
                yield from body.iter_chunks(CHUNK_BYTES)

        return chunks()

    def list_artifacts(self, principal: str, *, session: str | None = None, prefix: str = "") -> list[ArtifactRecord]:
        records = [self._record(o["Key"]) for o in self._keys(f"{self.prefix}/meta/{_owner(principal)}/")]
        out = [
            r
            for r in records
            if r.principal == principal and (session is None or r.session == session) and r.name.startswith(prefix)
        ]
        return sorted(out, key=lambda r: (r.created_at, r.id))

    def delete(self, principal: str, artifact_id: str) -> ArtifactRecord:
        record = self.stat(principal, artifact_id)
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._meta_key(principal, artifact_id))
        except _FAILURES as exc:
            raise _failure("cannot delete the artifact", exc) from exc
        if not any(r.sha256 == record.sha256 for r in self.list_artifacts(principal)):
            try:
                self._s3.delete_object(Bucket=self.bucket, Key=self._blob_key(principal, record.sha256))
            except _FAILURES as exc:
                raise _failure("cannot delete the artifact's blob", exc) from exc
        return record

    def usage(self, principal: str) -> tuple[int, int]:
        """Bytes of the principal's distinct contents, and its artifact count."""
        blobs = sum(int(o["Size"]) for o in self._keys(f"{self.prefix}/blobs/{_owner(principal)}/"))
        count = sum(1 for _ in self._keys(f"{self.prefix}/meta/{_owner(principal)}/"))
        return blobs, count

    def older_than(self, cutoff: float) -> list[ArtifactRecord]:
        records = [self._record(o["Key"]) for o in self._keys(f"{self.prefix}/meta/")]
        return sorted((r for r in records if r.created_at < cutoff), key=lambda r: r.created_at)

    def remove_orphans(self, now: float | None = None) -> int:
        """Blobs older than ORPHAN_GRACE_S that no record names; returns how many were removed."""
        now = time.time() if now is None else now
        named = {(_owner(r.principal), r.sha256) for r in self.older_than(float("inf"))}
        removed = 0
        for obj in self._keys(f"{self.prefix}/blobs/"):
            owner, sha = obj["Key"].rsplit("/", 2)[-2:]
            if (owner, sha) in named or now - obj["LastModified"].timestamp() < ORPHAN_GRACE_S:
                continue
            try:
                self._s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
            except _FAILURES as exc:
                raise _failure("cannot delete an orphaned blob", exc) from exc
            removed += 1
        return removed
