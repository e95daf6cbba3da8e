"""Audit sinks. The seam is AuditSink; the real one appends JSON lines and
fsyncs each event before returning, so a decision is durable before the call
it describes proceeds. A failed write raises AuditError and the caller fails
the call closed -- an event is never dropped silently."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format

from airlock.v1 import audit_pb2
from gateway._errors import AuditError

SCHEMA_VERSION = 1


class AuditSink(Protocol):
    async def write(self, event: audit_pb2.AuditEvent) -> None: ...

    def close(self) -> None: ...


def render(event: audit_pb2.AuditEvent) -> str:
    """One JSON line with proto field names; defaults are kept so every line
    has the same keys."""
    return json_format.MessageToJson(
        event,
        preserving_proto_field_name=True,
        indent=None,
        always_print_fields_with_no_presence=True,
        sort_keys=False,
    )


class JsonlAuditSink:
    """Appends one JSON line per event and fsyncs it.

    The file is opened O_APPEND so that concurrent writers (and a restarted
    gateway) never interleave partial lines; a lock keeps our own writes whole.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    async def write(self, event: audit_pb2.AuditEvent) -> None:
        line = (render(event) + "\n").encode()
        # The thread keeps fsync off the event loop; shield keeps a cancelled
        # RPC from abandoning a half-finished write.
        await asyncio.shield(asyncio.to_thread(self._write, line))

    def _write(self, line: bytes) -> None:
        with self._lock:
            try:
                written = os.write(self._fd, line)
                os.fsync(self._fd)
            except OSError as exc:
                raise AuditError(f"audit write to {self._path} failed: {exc}") from exc
            if written != len(line):
                # A partial line is on disk; the next event starts on the same
                # line, so readers see one corrupt line, never a lost event.
                raise AuditError(f"audit write to {self._path} was short ({written} of {len(line)} bytes)")

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)
