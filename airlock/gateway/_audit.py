"""Audit sinks. The seam is AuditSink; the real one appends sealed JSON lines
(airlock/common/auditlog.py: seq, prev_hash, SHA-256 hash, signed checkpoints) and
fsyncs before returning, so a decision is durable before the call it
describes proceeds.

The sink owns everything between an ``AuditEvent`` and the disk, all of it in
a writer thread so the event loop never waits on it: rendering, masking every
field (airlock/gateway/_mask.py), sealing, group commit (concurrent events are
written and fsynced together; each caller still returns only once its own
line is on disk), rotation (past ``max_bytes`` the file becomes
``<name>.<n>`` and a new one continues the chain), signed checkpoints (at
start, every N lines or S seconds, at ``close()``; each also rewrites the
signed head file ``<name>.head``), and retention (pruning or archiving
rotated files, announced first by a signed ``pruned`` checkpoint).

Failure handling, which is the point of most of this file:

- Nothing kills the writer. An event that cannot be rendered fails only its
  own caller; a failed write, fsync, rotation or prune fails the batch's
  callers with AuditError (``audit_failed``, so the call fails closed) and
  the writer goes on with the next batch. An event is never dropped silently.
- A failed or short write is cut back to the last good line (ftruncate), so
  the next line is never glued to a fragment and the chain continues from
  what is really on disk.
- Before each batch the live path must still name the open file (same device
  and inode): a log deleted, renamed away or replaced is refused, not
  written into a ghost.
- ``healthy`` is False from a failed write until the next success; while
  unhealthy the sink retries on its own (a "retry" checkpoint every
  RETRY_SECONDS), and ``on_health`` hears every change on the event loop.

Starting refuses (AuditError with the reason) when the folder is not the
gateway's own (owner, no group/world write), when the path is a symlink or
not a regular file, when the last line does not match its hash, when the
log ends before the head record (deleted or cut back), when the head record
is not signed by the gateway's key, and when audit files exist without a
head record (it was deleted, with the live file or alone: continuing would
reuse seq numbers over a silent cut). To start a new chain on purpose, an
operator moves the log, its rotated files and ``<name>.head`` aside (e.g.
into an archive folder) and starts the gateway; a new chain gets a random
id, which the head record keeps and every checkpoint carries and signs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from airlock.common import auditlog
from airlock.gateway._config import RetentionConfig
from airlock.gateway._errors import AuditError
from airlock.gateway._mask import Masker
from airlock.gateway._metrics import VERSION
from airlock.v1 import audit_pb2

SCHEMA_VERSION = 1
#: How often an unhealthy sink tries again without traffic.
RETRY_SECONDS = 2.0
#: How often age-based retention looks for files to prune, and how long a
#: failed prune waits before the next try.
PRUNE_CHECK_SECONDS = 3600.0
PRUNE_RETRY_SECONDS = 60.0
#: The writer wakes at least this often even with nothing to do.
IDLE_WAKE_SECONDS = 60.0
#: An error message names at most this many files.
_LISTED_FILES = 3

log = logging.getLogger("airlock.gateway.audit")

_Pending = tuple[audit_pb2.AuditEvent, "asyncio.Future[None]"]


class AuditSink(Protocol):
    async def write(self, event: audit_pb2.AuditEvent) -> None: ...

    def close(self) -> None: ...


def render(event: audit_pb2.AuditEvent, masker: Masker | None = None) -> str:
    """The line body: proto field names, every field present (so every line
    has the same keys), ASCII-only JSON, without ``hash`` (sealing appends
    it). With a masker, every field is masked and ``masked`` filled."""
    doc = json_format.MessageToDict(event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    doc.pop("hash", None)
    if masker is not None:
        masked = masker.mask_event(doc)
        doc["masked"] = sorted(set(doc.get("masked", [])) | set(masked))
    # allow_nan=False: "NaN" is not JSON, and no reader should meet it.
    return json.dumps(doc, ensure_ascii=True, allow_nan=False)


def log_files(path: Path) -> list[Path]:
    """The current file and its rotated predecessors."""
    return [p for p in path.parent.glob(f"{path.name}*") if p == path or p.name[len(path.name) + 1 :].isdigit()]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, f"short write ({len(data) - len(view)} of {len(data)} bytes)")
        view = view[written:]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_audit_dir(folder: Path) -> None:
    """Only the gateway may create, rename or replace files in the audit
    folder: anyone else could swap the log or its head record."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    uid = os.geteuid()
    if st.st_uid != uid:
        raise AuditError(
            f"audit folder {folder} is owned by uid {st.st_uid}, not by the gateway's uid {uid}; "
            "give the gateway a folder of its own (chown it)"
        )
    if st.st_mode & 0o022:
        raise AuditError(
            f"audit folder {folder} is group- or world-writable (mode {stat.filemode(st.st_mode)}); "
            "others could replace the log: chmod go-w it"
        )


class JsonlAuditSink:
    def __init__(
        self,
        path: Path,
        *,
        signing_key: Ed25519PrivateKey,
        masker: Masker,
        max_bytes: int,
        group_commit: bool = True,
        checkpoint_events: int,
        checkpoint_seconds: float,
        retention: RetentionConfig,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        if checkpoint_events < 1 or checkpoint_seconds <= 0:
            raise ValueError("checkpoint_events must be >= 1 and checkpoint_seconds > 0")
        self._path = path
        self._head_path = auditlog.head_path(path)
        self._key = signing_key
        self._key_id = auditlog.key_id(signing_key.public_key())
        self._masker = masker
        self._max_bytes = max_bytes
        self._group = group_commit
        self._cp_events = checkpoint_events
        self._cp_seconds = checkpoint_seconds
        self._retention = retention
        self._on_health = on_health
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Written by the writer thread, read anywhere (plain attribute reads).
        self._healthy = True
        self._reported_health = True
        self._since_checkpoint = 0
        self._unsigned_since: float | None = None
        self._next_retry = 0.0
        self._prune_due = retention.prunes
        self._prune_not_before = 0.0
        self._next_prune_check = time.monotonic() + PRUNE_CHECK_SECONDS
        self._need_new_file = False
        self._dirty = False
        self._chain_id = ""
        self._signed_seq = 0

        check_audit_dir(path.parent)
        self._fd = self._open_live(create_new=False)
        try:
            st = os.fstat(self._fd)
            self._ino = (st.st_dev, st.st_ino)
            self._good = st.st_size
            self._state = self._recover()
            with self._lock:
                try:
                    self._checkpoint_locked("start")
                except OSError as exc:
                    raise AuditError(f"cannot write the start checkpoint to {path}: {exc}") from exc
        except BaseException:
            os.close(self._fd)
            raise
        with contextlib.suppress(RuntimeError):
            # Constructed on the event loop (the gateway does): start the
            # writer now, so interval checkpoints and retries need no traffic.
            asyncio.get_running_loop()
            self._start_writer()

    # -- public surface --------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._state.seq

    @property
    def last_signed_seq(self) -> int:
        """The seq of the newest checkpoint on disk (what the head record says)."""
        return self._signed_seq

    @property
    def chain_id(self) -> str:
        return self._chain_id

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        if self._closed:
            raise AuditError(f"audit sink for {self._path} is closed")
        if self._writer is None or self._writer.done():
            self._start_writer()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, done))
        assert self._wake is not None
        self._wake.set()
        # shield: a cancelled RPC must not abandon its event half-written;
        # the writer finishes it either way.
        await asyncio.shield(done)

    def close(self) -> None:
        """Flushes what is queued, signs the tail with a "close" checkpoint
        and closes the file. Never raises: a failure is logged."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        pending, self._pending = self._pending, []
        # The lock waits for a batch the writer thread may be in the middle of.
        with self._lock:
            results = self._write_batch_locked([e for e, _ in pending]) if pending else []
            if self._fd >= 0 and self._since_checkpoint > 0:
                try:
                    self._checkpoint_locked("close")
                except Exception as exc:  # noqa: BLE001 - shutdown goes on; the tail stays unsigned
                    log.warning("audit: no close checkpoint: %s", exc)
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        for (_, fut), err in zip(pending, results, strict=True):
            _settle(fut, err)

    # -- the writer task (event loop) ----------------------------------------------

    def _start_writer(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._writer = self._loop.create_task(self._run_writer(), name="audit-writer")

    async def _run_writer(self) -> None:
        assert self._wake is not None
        while True:
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._wait_seconds())
                self._wake.clear()
                batch, self._pending = self._pending, []
                parts = [batch] if self._group else [[item] for item in batch]
                for part in parts:
                    if part:
                        await self._in_thread(self._process, part)
                if self._tick_due():
                    await asyncio.to_thread(self._tick)
                self._report_health()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Belt and braces: _process and _tick catch everything
                # themselves; whatever still gets here must not stop the writer.
                log.exception("audit writer: unexpected error; continuing")
                await asyncio.sleep(0.1)

    async def _in_thread(self, fn: Callable[[list[_Pending]], None], part: list[_Pending]) -> None:
        try:
            await asyncio.to_thread(fn, part)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the thread pool is gone at shutdown
            err = AuditError(f"audit write to {self._path} failed: {exc}")
            for _, fut in part:
                _settle(fut, err)

    def _wait_seconds(self) -> float:
        now = time.monotonic()
        if not self._healthy:
            # Only the retry is due while unhealthy: anything else would
            # hammer a failing disk as fast as the loop turns.
            return max(0.0, min(IDLE_WAKE_SECONDS, self._next_retry - now))
        waits = [IDLE_WAKE_SECONDS]
        if self._unsigned_since is not None:
            waits.append(self._unsigned_since + self._cp_seconds - now)
        if self._retention.max_age_days is not None:
            waits.append(self._next_prune_check - now)
        return max(0.0, min(waits))

    def _tick_due(self) -> bool:
        now = time.monotonic()
        if not self._healthy:
            return now >= self._next_retry
        return (self._unsigned_since is not None and now - self._unsigned_since >= self._cp_seconds) or (
            self._retention.max_age_days is not None and now >= self._next_prune_check
        )

    def _report_health(self) -> None:
        healthy = self._healthy
        if healthy == self._reported_health:
            return
        self._reported_health = healthy
        if self._on_health is not None:
            try:
                self._on_health(healthy)
            except Exception:
                log.exception("audit: on_health callback failed")

    # -- writer thread ---------------------------------------------------------------

    def _process(self, part: list[_Pending]) -> None:
        """Writes one batch and settles its futures on the loop."""
        try:
            results = self._write_batch([e for e, _ in part])
        except Exception as exc:  # noqa: BLE001 - _write_batch catches all; this is the last net
            results = [AuditError(f"audit write to {self._path} failed: {exc}")] * len(part)
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            loop.call_soon_threadsafe(self._settle_all, part, results)

    def _settle_all(self, part: list[_Pending], results: list[AuditError | None]) -> None:
        for (_, fut), err in zip(part, results, strict=True):
            _settle(fut, err)
        self._report_health()

    def _write_batch(self, events: list[audit_pb2.AuditEvent]) -> list[AuditError | None]:
        with self._lock:
            return self._write_batch_locked(events)

    def _write_batch_locked(self, events: list[audit_pb2.AuditEvent]) -> list[AuditError | None]:
        """One result per event: None when it is on disk. Never raises."""
        if self._fd < 0:
            return [AuditError(f"audit sink for {self._path} is closed")] * len(events)
        results: list[AuditError | None] = [None] * len(events)
        try:
            self._check_file()
            self._maintain()
        except Exception as exc:  # noqa: BLE001 - any failure fails the batch, never the writer
            return [self._failed(exc)] * len(events)
        chunks: list[bytes] = []
        written: list[int] = []
        state, since, head = self._state, self._since_checkpoint, None
        for i, event in enumerate(events):
            try:
                line, state = self._seal_event(event, state)
            except Exception as exc:  # noqa: BLE001 - only this event's caller fails
                log.warning("audit: an event could not be rendered: %s", exc)
                results[i] = AuditError(f"audit event could not be rendered: {exc}")
                continue
            chunks.append(line)
            written.append(i)
            since += 1
            if since >= self._cp_events:
                line, state = self._checkpoint_line("interval", state)
                chunks.append(line)
                since, head = 0, state
        if not chunks:
            return results
        try:
            self._commit(chunks, head)
        except Exception as exc:  # noqa: BLE001
            err = self._failed(exc)
            for i in written:
                results[i] = err
            return results
        self._advance(state, since)
        return results

    def _tick(self) -> None:
        """Timer duties: retry while unhealthy, sign an old tail, age-prune."""
        with self._lock:
            if self._fd < 0:
                return
            now = time.monotonic()
            try:
                if self._retention.max_age_days is not None and now >= self._next_prune_check:
                    self._next_prune_check = now + PRUNE_CHECK_SECONDS
                    self._prune_due = True
                if not self._healthy:
                    self._check_file()
                    self._maintain()
                    self._checkpoint_locked("retry")
                elif self._unsigned_since is not None and now - self._unsigned_since >= self._cp_seconds:
                    self._check_file()
                    self._checkpoint_locked("interval")
                elif self._prune_due:
                    self._check_file()
                    self._maintain()
            except Exception as exc:  # noqa: BLE001 - health says it; the next tick tries again
                self._failed(exc)

    def _failed(self, exc: BaseException) -> AuditError:
        if self._healthy:
            log.error("audit: writes to %s are failing: %s", self._path, exc)
        self._healthy = False
        self._next_retry = time.monotonic() + RETRY_SECONDS
        if isinstance(exc, AuditError):
            return exc
        return AuditError(f"audit write to {self._path} failed: {exc}")

    def _advance(self, state: auditlog.ChainState, since: int) -> None:
        self._state = state
        self._since_checkpoint = since
        if since == 0:
            self._unsigned_since = None
        elif self._unsigned_since is None:
            self._unsigned_since = time.monotonic()
        if not self._healthy:
            log.warning("audit: writes to %s work again", self._path)
        self._healthy = True

    # -- lines -----------------------------------------------------------------------

    def _seal_event(self, event: audit_pb2.AuditEvent, state: auditlog.ChainState) -> tuple[bytes, auditlog.ChainState]:
        event.seq = state.seq + 1
        event.prev_hash = state.hash
        event.ClearField("hash")
        line, h = auditlog.seal(render(event, self._masker))
        event.hash = h
        return line, auditlog.ChainState(event.seq, h)

    def _checkpoint_line(
        self,
        reason: str,
        state: auditlog.ChainState,
        *,
        pruned: auditlog.ChainState | None = None,
        files: tuple[str, ...] = (),
        archive_dir: str = "",
    ) -> tuple[bytes, auditlog.ChainState]:
        timestamp = _now()
        message = auditlog.checkpoint_message(
            state,
            chain_id=self._chain_id,
            reason=reason,
            time=timestamp,
            max_events=self._cp_events,
            pruned=pruned,
        )
        checkpoint = audit_pb2.AuditCheckpoint(
            reason=reason,
            covers_seq=state.seq,
            covers_hash=state.hash,
            key_id=self._key_id,
            signature=auditlog.sign(self._key, message),
            max_events=self._cp_events,
            chain_id=self._chain_id,
        )
        if pruned is not None:
            checkpoint.pruned_through_seq = pruned.seq
            checkpoint.pruned_through_hash = pruned.hash
            checkpoint.pruned_files.extend(files)
            checkpoint.archive_dir = archive_dir
        event = audit_pb2.AuditEvent(
            schema_version=SCHEMA_VERSION,
            kind="pruned" if pruned is not None else "checkpoint",
            timestamp=timestamp,
            labels={"component": "gateway", "version": VERSION},
            seq=state.seq + 1,
            prev_hash=state.hash,
            checkpoint=checkpoint,
        )
        line, h = auditlog.seal(render(event))
        return line, auditlog.ChainState(state.seq + 1, h)

    def _checkpoint_locked(
        self,
        reason: str,
        *,
        pruned: auditlog.ChainState | None = None,
        files: tuple[str, ...] = (),
        archive_dir: str = "",
    ) -> None:
        line, state = self._checkpoint_line(reason, self._state, pruned=pruned, files=files, archive_dir=archive_dir)
        self._commit([line], state)
        self._advance(state, 0)

    # -- the file --------------------------------------------------------------------

    def _open_live(self, *, create_new: bool) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        if create_new:
            flags |= os.O_EXCL
        try:
            fd = os.open(self._path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AuditError(f"audit file {self._path} is a symlink; refusing to follow it") from exc
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AuditError(f"audit file {self._path} is not a regular file")
        return fd

    def _recover(self) -> auditlog.ChainState:
        """Where the chain ends, after cutting off a torn last line (a crash
        mid-write: never acknowledged), checked against the head record."""
        tail = auditlog.read_tail(self._path)
        if tail.torn:
            log.warning(
                "audit: %s ends in a torn line (%d bytes, a crash mid-write); cutting it off", self._path, tail.torn
            )
            os.ftruncate(self._fd, tail.end)
            os.fsync(self._fd)
            self._good = tail.end
        try:
            state = auditlog.tail_state(log_files(self._path))
        except ValueError as exc:
            raise AuditError(str(exc)) from exc
        head = self._check_head(state)
        if head is None:
            # A new chain. Its head record comes first, at seq 0, so that no
            # crash can leave audit files without one (which is refused).
            self._chain_id = auditlog.new_chain_id()
            try:
                auditlog.write_head(self._head_path, auditlog.make_head(self._key, state, self._chain_id))
            except OSError as exc:
                raise AuditError(f"cannot write the head record {self._head_path}: {exc}") from exc
            log.info("audit: a new chain %s starts in %s", self._chain_id, self._path)
        else:
            self._chain_id, self._signed_seq = head.chain_id, head.seq
        return state

    def _check_head(self, state: auditlog.ChainState) -> auditlog.Head | None:
        """The head record the chain continues from; None for a new chain."""
        hp = self._head_path
        start_over = (
            f"restore the missing files; or, to start a new chain on purpose, move {self._path.name}, its "
            f"rotated files and {hp.name} out of {self._path.parent}"
        )
        try:
            head = auditlog.read_head(hp)
        except ValueError as exc:
            raise AuditError(f"{exc}; {start_over}") from exc
        if head is None:
            self._refuse_files_without_head(state, start_over)
            return None
        if head.key_id != self._key_id or not auditlog.head_signature_ok(self._key.public_key(), head):
            raise AuditError(
                f"head record {hp} is not signed by the audit key {self._key_id} (it names key {head.key_id}): "
                f"it was edited or replaced, or the key changed; {start_over}"
            )
        if state.seq < head.seq:
            raise AuditError(
                f"audit log {self._path} ends at seq {state.seq} but the head record {hp} says seq {head.seq} was "
                f"written: the log was deleted or cut back; {start_over}"
            )
        found = self._hash_at(head.seq, state, head)
        if found is None:
            raise AuditError(
                f"audit log {self._path} has no readable seq {head.seq}, which the head record {hp} names: "
                f"the log was cut or edited; {start_over}"
            )
        if found != head.hash:
            raise AuditError(
                f"audit log {self._path} has a different seq {head.seq} than the head record {hp}: "
                f"the log was replaced; {start_over}"
            )
        return head

    def _refuse_files_without_head(self, state: auditlog.ChainState, start_over: str) -> None:
        """Audit files without a head record: it was deleted, so a cut cannot be ruled out."""
        # The live file is open (so it exists) and cut back to whole lines:
        # empty, it holds nothing; a rotated file always does.
        present = sorted(p.name for p in log_files(self._path) if p != self._path or self._good > 0)
        if not present:
            return
        names = ", ".join(present[:_LISTED_FILES])
        if len(present) > _LISTED_FILES:
            names += f" and {len(present) - _LISTED_FILES} more"
        raise AuditError(
            f"audit files {names} in {self._path.parent} have no head record {self._head_path.name}: it was "
            f"deleted (with the live file or alone), so a cut cannot be ruled out and the chain (which ends at "
            f"seq {state.seq}) must not be continued; {start_over}"
        )

    def _hash_at(self, seq: int, state: auditlog.ChainState, head: auditlog.Head) -> str | None:
        """The hash of the line at ``seq`` (None: no readable line has it)."""
        if seq == state.seq:
            return state.hash
        if seq == 0:
            return head.hash  # a new chain's first head record: there is no line 0
        line = auditlog.find_line(log_files(self._path), seq)
        return line.hash if line is not None else None

    def _check_file(self) -> None:
        """The live path must still be the file we hold, at the size we left it."""
        if self._need_new_file:
            self._new_live_file()
        try:
            st = self._path.lstat()
        except FileNotFoundError:
            raise AuditError(f"audit file {self._path} was deleted or renamed away while open") from None
        if (st.st_dev, st.st_ino) != self._ino:
            raise AuditError(f"audit file {self._path} was replaced by another file while open")
        size = os.fstat(self._fd).st_size
        if size != self._good:
            if not self._dirty:
                raise AuditError(
                    f"audit file {self._path} changed size behind the gateway (expected {self._good} bytes, "
                    f"found {size}); refusing to extend it"
                )
            os.ftruncate(self._fd, self._good)
            os.fsync(self._fd)
        self._dirty = False

    def _commit(self, chunks: list[bytes], head: auditlog.ChainState | None) -> None:
        """Appends and fsyncs; with ``head``, also rewrites the head record.
        On any failure the file is cut back to where it was."""
        self._check_file()
        good = self._good
        data = b"".join(chunks)
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
            if head is not None:
                auditlog.write_head(self._head_path, auditlog.make_head(self._key, head, self._chain_id))
        except BaseException:
            self._rollback(good)
            raise
        self._good = good + len(data)
        if head is not None:
            self._signed_seq = head.seq

    def _rollback(self, good: int) -> None:
        try:
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        except OSError as exc:
            # The next batch truncates again before it writes.
            self._dirty = True
            log.error("audit: could not cut %s back to %d bytes: %s", self._path, good, exc)  # noqa: TRY400 - no traceback wanted

    def _maintain(self) -> None:
        size = os.fstat(self._fd).st_size
        if size >= self._max_bytes and size > 0:
            self._rotate()
        if self._prune_due and time.monotonic() >= self._prune_not_before:
            try:
                self._prune()
            except BaseException:
                self._prune_not_before = time.monotonic() + PRUNE_RETRY_SECONDS
                raise

    def _rotate(self) -> None:
        numbers = [int(p.name.rsplit(".", 1)[1]) for p in log_files(self._path) if p != self._path]
        target = self._path.with_name(f"{self._path.name}.{max(numbers, default=0) + 1}")
        if target.exists():
            raise AuditError(f"cannot rotate {self._path}: {target} exists")
        self._path.rename(target)
        # From here the open file is the rotated one; a failure below leaves
        # _need_new_file set, and the next batch opens the new file first.
        self._need_new_file = True
        auditlog.fsync_dir(self._path.parent)
        self._new_live_file()
        self._prune_due = self._retention.prunes

    def _new_live_file(self) -> None:
        fd = self._open_live(create_new=True)
        try:
            auditlog.fsync_dir(self._path.parent)
        except BaseException:
            os.close(fd)
            raise
        st = os.fstat(fd)
        os.close(self._fd)
        self._fd, self._ino, self._good = fd, (st.st_dev, st.st_ino), 0
        self._need_new_file, self._dirty = False, False

    # -- retention -------------------------------------------------------------------

    def _prune(self) -> None:
        """Removes (or archives) the oldest rotated files the retention
        settings give up, after a signed "pruned" checkpoint records through
        which seq and hash they went."""
        keep, days = self._retention.keep_files, self._retention.max_age_days
        rotated = auditlog.order_files([p for p in log_files(self._path) if p != self._path])
        k = 0
        if keep is not None:
            k = max(k, len(rotated) - keep)
        if days is not None:
            cutoff = time.time() - days * 86400
            # A chain prefix only: a newer old file takes every older one with it.
            old = [i for i, p in enumerate(rotated) if p.stat().st_mtime < cutoff]
            k = max(k, max(old, default=-1) + 1)
        victims = rotated[:k]
        if not victims:
            self._prune_due = False
            return
        tail = auditlog.read_tail(victims[-1])
        try:
            last = auditlog.parse_line(tail.line)
        except ValueError as exc:
            raise AuditError(f"cannot prune {victims[-1]}: its last line is unreadable ({exc})") from exc
        archive = self._retention.archive_dir
        self._checkpoint_locked(
            "prune",
            pruned=auditlog.ChainState(last.seq, last.hash),
            files=tuple(p.name for p in victims),
            archive_dir=archive or "",
        )
        for p in victims:
            if archive is None:
                p.unlink()
            else:
                _archive(p, Path(archive))
        auditlog.fsync_dir(self._path.parent)
        log.info("audit: pruned %d rotated file(s) through seq %d", len(victims), last.seq)
        self._prune_due = False


def _archive(src: Path, folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / src.name
    n = 1
    while target.exists():
        target = folder / f"{src.name}.dup{n}"
        n += 1
    try:
        src.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # Another filesystem: copy durably, then remove the original.
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(src, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.rename(target)
        src.unlink()
    auditlog.fsync_dir(folder)


def _settle(fut: asyncio.Future[None], err: AuditError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)
