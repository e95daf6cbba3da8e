"""The default backend: a local directory of content-addressed blobs, one
set per principal (``blobs/<owner>/sha256/ab/cd/<hex>``, ``<owner>`` a
digest of the principal id), and the metadata in SQLite (WAL).

A put spools and checks the content first (size, sha256); then, under the
store's lock, it checks the quota, makes the blob durable (temp file in the
same folder, fsync, rename, fsync the folder) and adds the metadata row. So
a row never points at a missing blob, a refused put leaves nothing, and two
puts racing for the last of a quota cannot both win. A blob is shared by
the principal's rows with its sha256 and removed with the last of them;
never across principals, so how fast a put goes cannot tell whether
someone else holds the same bytes. Every disk and database failure is
StoreUnavailableError with a fixed message (the detail goes to the log).
One gateway process per directory (the lock is in-process; use S3 for
several).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from airlock.gateway.artifacts._model import (
    ArtifactNotFoundError,
    ArtifactRecord,
    PutRequest,
    Quota,
    QuotaExceededError,
    check_id,
)
from airlock.gateway.artifacts._store import (
    CHUNK_BYTES,
    Spooled,
    make_record,
    owner_digest,
    read_chunks,
    spool,
    unavailable,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    session TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_principal ON artifacts (principal, session, name);
CREATE INDEX IF NOT EXISTS artifacts_sha ON artifacts (sha256);
CREATE INDEX IF NOT EXISTS artifacts_created ON artifacts (created_at);
"""
log = logging.getLogger("airlock.gateway.artifacts")
_COLUMNS = "id, principal, session, name, sha256, size, media_type, created_at"


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.spool_dir = root / "spool"
        for folder in (root, self.blobs, self.spool_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "artifacts.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- blobs -------------------------------------------------------------

    def _blob(self, principal: str, sha256: str) -> Path:
        return self.blobs / owner_digest(principal) / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def _write_blob(self, principal: str, spooled: Spooled) -> None:
        path = self._blob(principal, spooled.sha256)
        if path.exists():
            return  # content-addressed: the same bytes are there already
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in read_chunks(spooled.file):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # --- the Protocol ------------------------------------------------------

    def put(self, req: PutRequest, chunks: Iterable[bytes], quota: Quota) -> ArtifactRecord:
        used, _count = self.usage(req.principal)
        spooled = spool(req, chunks, quota, used, folder=str(self.spool_dir))
        # One lock around blob and row (and around a delete's row and blob):
        # a delete can never unlink a blob a racing put has just counted on.
        with spooled.file, self._lock:
            record = make_record(req, spooled, time.time())
            with _failures("cannot check the quota"):
                self._check_quota(record, quota)
            with _failures("cannot write the artifact"):
                self._write_blob(req.principal, spooled)
            # A crash between blob and row leaves a blob no row names: remove_orphans.
            self._insert(record)
        return record

    def _check_quota(self, record: ArtifactRecord, quota: Quota) -> None:
        """Under the store's lock (racing puts cannot both take the last of
        a quota), before the blob is written (a refusal leaves nothing)."""
        total, count = self._usage(record.principal)
        held = self._db.execute(
            "SELECT 1 FROM artifacts WHERE principal = ? AND sha256 = ? LIMIT 1", (record.principal, record.sha256)
        ).fetchone()
        if count + 1 > quota.max_count:
            raise QuotaExceededError(f"the principal holds {count} artifacts; the quota is {quota.max_count}")
        if held is None and total + record.size > quota.max_bytes:
            raise QuotaExceededError(f"the principal's {quota.max_bytes}-byte quota ({total} used) would be exceeded")

    def _insert(self, record: ArtifactRecord) -> None:
        with _failures("cannot record the artifact"), self._transaction():
            self._db.execute(
                f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed columns
                (
                    record.id,
                    record.principal,
                    record.session,
                    record.name,
                    record.sha256,
                    record.size,
                    record.media_type,
                    record.created_at,
                ),
            )

    def stat(self, principal: str, artifact_id: str) -> ArtifactRecord:
        check_id(artifact_id)
        with _failures("cannot read artifact metadata"), self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM artifacts WHERE id = ? AND principal = ?",  # noqa: S608 - fixed columns
                (artifact_id, principal),
            ).fetchone()
        if row is None:
            raise ArtifactNotFoundError("no such artifact")
        return ArtifactRecord(*row)

    def read(self, principal: str, artifact_id: str) -> Iterator[bytes]:
        record = self.stat(principal, artifact_id)
        with _failures("cannot read the artifact"):
            file = self._blob(principal, record.sha256).open("rb")
        return _read_failures(file)

    def list_artifacts(self, principal: str, *, session: str | None = None, prefix: str = "") -> list[ArtifactRecord]:
        query = f"SELECT {_COLUMNS} FROM artifacts WHERE principal = ?"  # noqa: S608 - fixed columns
        args: list[object] = [principal]
        if session is not None:
            query += " AND session = ?"
            args.append(session)
        if prefix:
            # substr, not LIKE: a name's % and _ are plain characters.
            query += " AND substr(name, 1, ?) = ?"
            args += [len(prefix), prefix]
        with _failures("cannot list artifacts"), self._lock:
            rows = self._db.execute(query + " ORDER BY created_at, id", args).fetchall()
        return [ArtifactRecord(*r) for r in rows]

    def delete(self, principal: str, artifact_id: str) -> ArtifactRecord:
        record = self.stat(principal, artifact_id)
        with self._lock:
            with _failures("cannot delete the artifact"), self._transaction():
                self._db.execute("DELETE FROM artifacts WHERE id = ? AND principal = ?", (artifact_id, principal))
                left = self._db.execute(
                    "SELECT COUNT(*) FROM artifacts WHERE principal = ? AND sha256 = ?", (principal, record.sha256)
                ).fetchone()
            if left[0] == 0:
                try:
                    self._blob(principal, record.sha256).unlink(missing_ok=True)
                except OSError as exc:
                    # The record is gone: the blob is an orphan the sweep removes.
                    log.warning("artifact store: the blob of %s was not removed: %r", artifact_id, exc)
        return record

    def usage(self, principal: str) -> tuple[int, int]:
        """Bytes of the principal's distinct contents (the same bytes under
        two names count once, as they are stored once), and its count."""
        with _failures("cannot read the quota"), self._lock:
            return self._usage(principal)

    def _usage(self, principal: str) -> tuple[int, int]:
        (total,) = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT DISTINCT sha256, size FROM artifacts WHERE principal = ?)",
            (principal,),
        ).fetchone()
        (count,) = self._db.execute("SELECT COUNT(*) FROM artifacts WHERE principal = ?", (principal,)).fetchone()
        return int(total), int(count)

    def older_than(self, cutoff: float) -> list[ArtifactRecord]:
        with _failures("cannot list artifacts"), self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM artifacts WHERE created_at < ? ORDER BY created_at",  # noqa: S608
                (cutoff,),
            ).fetchall()
        return [ArtifactRecord(*r) for r in rows]

    def remove_orphans(self) -> int:
        """Blobs no row names (a put refused after its blob was written, or a
        crash between the two): removed; returns how many."""
        removed = 0
        with _failures("cannot remove orphaned blobs"), self._lock:
            known = {
                (owner_digest(principal), sha)
                for principal, sha in self._db.execute("SELECT DISTINCT principal, sha256 FROM artifacts")
            }
            # blobs/<owner>/sha256/ab/cd/<hex>
            for path in self.blobs.glob("*/sha256/*/*/*"):
                if (path.parents[3].name, path.name) not in known:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += 1
        return removed

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise unavailable("the metadata database is unavailable", exc) from exc
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise unavailable("the metadata database is unavailable", exc) from exc


@contextlib.contextmanager
def _failures(what: str) -> Iterator[None]:
    """A disk or database failure as StoreUnavailableError(``what``)."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise unavailable(what, exc) from exc


def _read_failures(file: IO[bytes]) -> Iterator[bytes]:
    """read_chunks, a disk failure mid-read as StoreUnavailableError."""
    with file:
        try:
            while chunk := file.read(CHUNK_BYTES):
                yield chunk
        except OSError as exc:
            raise unavailable("cannot read the artifact", exc) from exc
