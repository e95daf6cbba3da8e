"""Audit sinks. The seam is AuditSink; the real one appends sealed JSON
lines (airlock/auditlog.py: seq, prev_hash, keyed hash) and fsyncs before
returning, so a decision is durable before the call it describes proceeds.

Group commit: concurrent events are written and fsynced together by one
writer task; each caller still returns only once its own line is on disk.
Rotation: when the file passes ``max_bytes`` it is renamed to
``<name>.<n>`` and a new file continues the same chain.

A failed write raises AuditError and the caller fails the call closed -- an
event is never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format

from airlock import auditlog
from airlock.v1 import audit_pb2
from gateway._errors import AuditError

SCHEMA_VERSION = 1


class AuditSink(Protocol):
    async def write(self, event: audit_pb2.AuditEvent) -> None: ...

    def close(self) -> None: ...


def render(event: audit_pb2.AuditEvent) -> str:
    """The line body: proto field names, every field present (so every line
    has the same keys), without ``hash``, which sealing appends."""
    doc = json_format.MessageToDict(event, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    doc.pop("hash", None)
    return json.dumps(doc, ensure_ascii=False)


def log_files(path: Path) -> list[Path]:
    """The current file and its rotated predecessors."""
    return [p for p in path.parent.glob(f"{path.name}*") if p == path or p.name[len(path.name) + 1 :].isdigit()]


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"short write ({written} of {len(data)} bytes)")


class JsonlAuditSink:
    def __init__(self, path: Path, *, key: bytes | None, max_bytes: int, group_commit: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._key = key
        self._max_bytes = max_bytes
        self._group = group_commit
        # Continue the chain where the last run left it, across rotations.
        self._state = auditlog.tail_state(log_files(path), key)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        self._pending: list[tuple[audit_pb2.AuditEvent, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None

    @property
    def last_seq(self) -> int:
        return self._state.seq

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        if not self._group:
            # The thread keeps fsync off the event loop; shield keeps a
            # cancelled RPC from abandoning a half-finished write.
            await asyncio.shield(asyncio.to_thread(self._write_batch, [event]))
            return
        loop = asyncio.get_running_loop()
        if self._writer is None:
            self._wake = asyncio.Event()
            self._writer = loop.create_task(self._run_writer())
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, done))
        assert self._wake is not None
        self._wake.set()
        await asyncio.shield(done)

    async def _run_writer(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                await asyncio.to_thread(self._write_batch, [e for e, _ in batch])
            except AuditError as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    def _write_batch(self, events: list[audit_pb2.AuditEvent]) -> None:
        with self._lock:
            state = self._state
            chunks = []
            for event in events:
                event.seq = state.seq + 1
                event.prev_hash = state.hash
                line, h = auditlog.seal(render(event), self._key)
                event.hash = h
                chunks.append(line)
                state = auditlog.ChainState(event.seq, h)
            data = b"".join(chunks)
            try:
                _write_all(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                # Some lines may be on disk: re-read the chain's real end so
                # the next event links to what is there, not to our hopes.
                with contextlib.suppress(OSError, ValueError):
                    self._state = auditlog.tail_state(log_files(self._path), self._key)
                raise AuditError(f"audit write to {self._path} failed: {exc}") from exc
            self._state = state
            if os.fstat(self._fd).st_size >= self._max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        numbers = [int(p.name.rsplit(".", 1)[1]) for p in log_files(self._path) if p != self._path]
        target = self._path.with_name(f"{self._path.name}.{max(numbers, default=0) + 1}")
        os.close(self._fd)
        self._path.rename(target)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # The rename must survive a crash, or the chain would seem to fork.
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        with self._lock:
            os.close(self._fd)
