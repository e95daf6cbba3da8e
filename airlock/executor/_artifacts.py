"""Files in and out of a sandbox: /inputs before the program starts,
/outputs after every process of the call is gone (docs/executor-artifacts.md).

Nothing of the host is ever mounted in a sandbox. Inputs go in as a tar
stream on the stdin of a ``docker exec`` of ``tar -x`` run as the *keeper*
uid, into a keeper-owned tmpfs at /inputs: each file 0444 in a 0555
directory, so the call (another uid, no capabilities) can read but never
write, chmod or replace them. Outputs come out in two execs as the sandbox
uid once nothing of the call runs: ``find -maxdepth 1`` lists /outputs
(type, link count, size, name), the executor picks what it will take from
that list alone, and ``tar -c --no-recursion`` of exactly those names
streams them back, parsed here in stream mode and never extracted. Every
tar member is checked against the list before a byte of its data is read,
and each exec has a wall-clock bound (closing its socket wakes any read).
Docker's put_archive/get_archive are not used: they see neither tmpfs
mounts nor a gVisor sandbox's own root.

The runner (airlock/executor/_runner.py) calls these from worker threads;
the Docker side is the small TransferRuntime seam. No grpc here.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import tarfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Protocol, Self

from airlock.common import parse_duration_ms, parse_size
from airlock.common.names import MAX_NAME_BYTES, name_problem
from airlock.executor._config import ExecutorConfig
from airlock.executor._errors import RunRefused
from airlock.executor._model import ArtifactLimits, InputFile, OutputFileChunk, RunFiles, SkippedOutput, SkipReason

#: The longest name, in UTF-8 bytes (the gateway's artifact names, the same rule).
#: Output files travel to the gateway in pieces of this size.
CHUNK_BYTES = 256 << 10
#: Skipped entries named one by one; the rest are summed up in one "*" entry.
MAX_SKIPPED = 100
#: A RunRequest may exceed its inputs' bytes by this much (the spec, the
#: names, protobuf framing): the gRPC server's receive limit is the sum.
RUN_REQUEST_SLACK_BYTES = 4 << 20
#: What is kept of an exec's stderr or stdout for the log.
KEEP_OUTPUT_BYTES = 4096

#: The tools the transfer execs run, by absolute path: the sandbox image's
#: PATH (and whatever the image put first on it) plays no part. /usr/bin
#: holds them on a merged-/usr image, where /bin is a link to it
#: (docs/executor-artifacts.md "What the sandbox image needs").
SH = "/bin/sh"
TAR = "/usr/bin/tar"
FIND = "/usr/bin/find"
CHMOD = "/usr/bin/chmod"

#: Run as the keeper uid, the tar stream on stdin: /inputs emptied, filled,
#: each file 0444, the directory 0555. The names were checked before; tar
#: gets a stream the executor wrote.
COPY_IN_ARGV = (
    SH,
    "-c",
    (
        f"set -e; {CHMOD} 0700 /inputs; {FIND} /inputs -mindepth 1 -delete;"
        f" {TAR} -x -f - -C /inputs --no-same-owner --no-same-permissions --no-overwrite-dir;"
        f" {FIND} /inputs -mindepth 1 -exec {CHMOD} 0444 {{}} +; {CHMOD} 0555 /inputs"
    ),
)
#: Run as the keeper uid after a session call: /inputs empty again.
CLEAR_INPUTS_ARGV = (
    SH,
    "-c",
    f"set -e; {CHMOD} 0700 /inputs; {FIND} /inputs -mindepth 1 -delete; {CHMOD} 0555 /inputs",
)
#: Run as the sandbox uid, nothing of a call running: whatever a call left
#: in /outputs goes (its own uid owns all of it; a 0000 directory is opened
#: first). The sweep first: a collection cut short may have left its tar.
CLEAR_OUTPUTS_ARGV = (
    SH,
    "-c",
    (
        f"kill -9 -1 2>/dev/null; {CHMOD} 0700 /outputs && {CHMOD} -R u+rwX /outputs"
        f" && {FIND} /outputs -mindepth 1 -delete"
    ),
)
#: Run as the sandbox uid: one NUL-terminated record per entry directly
#: under /outputs, "<type> <links> <size> <name>" (find's %y, %n, %s, %P).
LIST_ARGV = (
    SH,
    "-c",
    f"{CHMOD} u+rwx /outputs 2>/dev/null; exec {FIND} /outputs -mindepth 1 -maxdepth 1 -printf '%y %n %s %P\\0'",
)
#: Run as the sandbox uid with the picked names after it: those files and
#: nothing else (no recursion, no sparse detection: a picked file is within
#: the limits, so its full length is read).
TAR_SCRIPT = f'cd /outputs && {CHMOD} u+r -- "$@" 2>/dev/null; exec {TAR} -c -f - --format=gnu --no-recursion -- "$@"'


def tar_argv(names: list[str]) -> list[str]:
    return [SH, "-c", TAR_SCRIPT, "sh", *names]


# -- names and limits ------------------------------------------------------------


def display_name(raw: bytes) -> str:
    """A name from the sandbox, safe to show and log: undecodable bytes,
    control and separator characters and slashes become "?", cut short."""
    text = raw.decode("utf-8", "replace")
    cleaned = "".join(
        "?" if c in "/\\" or unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"} else c for c in text
    )
    return cleaned[:MAX_NAME_BYTES] or "?"


@dataclass(frozen=True)
class Transfer:
    """The executor's artifact ceilings (executor.yaml ``artifacts``)."""

    ceilings: ArtifactLimits
    timeout_s: float

    @classmethod
    def of(cls, cfg: ExecutorConfig) -> Transfer:
        a = cfg.artifacts
        top = ArtifactLimits(
            max_outputs=a.max_outputs,
            max_output_bytes=parse_size(a.max_output_bytes),
            max_output_file_bytes=parse_size(a.max_output_file_bytes),
            max_inputs=a.max_inputs,
            max_input_bytes=parse_size(a.max_input_bytes),
        )
        return cls(top, parse_duration_ms(a.transfer_timeout) / 1000)

    def clamp(self, asked: ArtifactLimits) -> ArtifactLimits:
        """Counts: the smaller of the call's and the ceiling (0 stays 0).
        Bytes: the call's if set and smaller, else the ceiling."""
        top = self.ceilings

        def size(mine: int, ceiling: int) -> int:
            return min(mine, ceiling) if mine > 0 else ceiling

        return ArtifactLimits(
            max_outputs=max(min(asked.max_outputs, top.max_outputs), 0),
            max_output_bytes=size(asked.max_output_bytes, top.max_output_bytes),
            max_output_file_bytes=size(asked.max_output_file_bytes, top.max_output_file_bytes),
            max_inputs=max(min(asked.max_inputs, top.max_inputs), 0),
            max_input_bytes=size(asked.max_input_bytes, top.max_input_bytes),
        )


def max_receive_bytes(cfg: ExecutorConfig) -> int:
    """The executor's gRPC receive limit: the most input bytes plus slack."""
    return parse_size(cfg.artifacts.max_input_bytes) + RUN_REQUEST_SLACK_BYTES


def check_inputs(files: RunFiles, limits: ArtifactLimits, file_bytes: int) -> None:
    """Refuses a call's inputs, before anything starts, for one reason each.
    ``limits`` are the clamped ones; ``file_bytes`` is the largest file the
    sandbox can hold (its fsize limit)."""
    inputs = files.inputs
    if len(inputs) > limits.max_inputs:
        raise RunRefused("inputs_too_many", f"{len(inputs)} input files; this call may bring {limits.max_inputs}")
    seen: set[str] = set()
    for item in inputs:
        problem = name_problem(item.name)
        if problem is not None:
            raise RunRefused("input_name_invalid", f"input name {display_name(item.name.encode())!r}: {problem}")
        if item.name in seen:
            raise RunRefused("input_name_duplicate", f"input name {item.name!r} is given twice")
        seen.add(item.name)
    total = sum(len(item.content) for item in inputs)
    if total > limits.max_input_bytes:
        raise RunRefused("inputs_too_large", f"{total} input bytes; this call may bring {limits.max_input_bytes}")
    largest = max((len(item.content) for item in inputs), default=0)
    if largest > file_bytes:
        raise RunRefused("inputs_too_large", f"an input of {largest} bytes; the sandbox holds files of {file_bytes}")


# -- the Docker seam ---------------------------------------------------------------


class TransferRuntime(Protocol):
    def exec_socket(
        self, container_id: str, argv: list[str], user: str, *, stdin: bool, timeout_s: float
    ) -> tuple[str, socket.socket, object]: ...
    def exec_exit_code(self, exec_id: str, timeout_s: float) -> int | None: ...


class TransferError(Exception):
    """A copy-in or collection exec failed; the message is for the log only."""


class _Watchdog:
    """Shuts an exec's socket down at a deadline: that wakes a blocked read
    or write, which docker-py would otherwise wait on for ever."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self.expired = threading.Event()
        self._sock = sock
        self._timer = threading.Timer(max(timeout_s, 0.1), self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.expired.set()
        _shut(self._sock)

    def __enter__(self) -> Self:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class ExecStdout(io.RawIOBase):
    """An exec's stdout from its multiplexed stream (8-byte frame headers:
    stream, three zero bytes, big-endian length); stderr's first bytes are
    kept for the log."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = memoryview(b"")
        self.stderr = bytearray()

    def readable(self) -> bool:
        return True

    def _exact(self, size: int) -> bytes | None:
        parts = bytearray()
        while len(parts) < size:
            got = self._sock.recv(min(size - len(parts), 1 << 16))
            if not got:
                if parts:
                    raise TransferError("the exec's stream ended inside a frame")
                return None
            parts.extend(got)
        return bytes(parts)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            header = self._exact(8)
            if header is None:
                return 0
            kind, size = header[0], struct.unpack(">I", header[4:])[0]
            payload = self._exact(size) if size else b""
            if payload is None:
                raise TransferError("the exec's stream ended inside a frame")
            if kind == 1:
                self._pending = memoryview(payload)
            elif len(self.stderr) < KEEP_OUTPUT_BYTES:
                self.stderr.extend(payload[: KEEP_OUTPUT_BYTES - len(self.stderr)])
        take = min(len(buffer), len(self._pending))
        buffer[:take] = self._pending[:take]
        self._pending = self._pending[take:]
        return take


class _SocketWriter(io.RawIOBase):
    """tarfile's stream writer onto an exec's stdin."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._sock.sendall(data)
        return len(data)


def write_inputs(inputs: tuple[InputFile, ...], out: io.RawIOBase) -> None:
    """The inputs as a tar stream (PAX, so any valid name goes as is)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for item in inputs:
            info = tarfile.TarInfo(item.name)
            info.size = len(item.content)
            info.mode = 0o444
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(item.content))


def copy_in(
    rt: TransferRuntime, container_id: str, keeper_user: str, inputs: tuple[InputFile, ...], timeout_s: float
) -> None:
    """Blocking: replaces /inputs with ``inputs``. Raises TransferError."""
    deadline = time.monotonic() + timeout_s
    argv = list(COPY_IN_ARGV)
    exec_id, sock, _handle = rt.exec_socket(container_id, argv, keeper_user, stdin=True, timeout_s=timeout_s)
    stdout = ExecStdout(sock)
    try:
        with _Watchdog(sock, timeout_s) as watchdog:
            try:
                write_inputs(inputs, _SocketWriter(sock))
                sock.shutdown(socket.SHUT_WR)
                while stdout.read(1 << 16):
                    pass
            except (OSError, TransferError) as exc:
                raise TransferError(f"copying the inputs in failed: {exc}") from None
            if watchdog.expired.is_set():
                raise TransferError("copying the inputs in did not finish in time")
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    code = rt.exec_exit_code(exec_id, max(deadline - time.monotonic(), 0.1))
    if code != 0:
        detail = bytes(stdout.stderr).decode("utf-8", "replace").strip()
        raise TransferError(f"copying the inputs in failed (exit {code}): {detail}")


def run_quiet(rt: TransferRuntime, container_id: str, argv: tuple[str, ...], user: str, timeout_s: float) -> None:
    """Blocking: runs argv, output discarded; raises TransferError unless it exits 0 in time."""
    deadline = time.monotonic() + timeout_s
    exec_id, sock, _handle = rt.exec_socket(container_id, list(argv), user, stdin=False, timeout_s=timeout_s)
    stdout = ExecStdout(sock)
    try:
        with _Watchdog(sock, timeout_s) as watchdog:
            try:
                while stdout.read(1 << 16):
                    pass
            except (OSError, TransferError) as exc:
                raise TransferError(f"{argv[-1][:40]!r} failed: {exc}") from None
            if watchdog.expired.is_set():
                raise TransferError(f"{argv[-1][:40]!r} did not finish in time")
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    code = rt.exec_exit_code(exec_id, max(deadline - time.monotonic(), 0.1))
    if code != 0:
        detail = bytes(stdout.stderr).decode("utf-8", "replace").strip()
        raise TransferError(f"{argv[-1][:40]!r} exited {code}: {detail}")


# -- collection ----------------------------------------------------------------------


@dataclass
class Skips:
    """Skipped entries, the first MAX_SKIPPED by name, the rest as one "*"."""

    named: list[SkippedOutput] = field(default_factory=list)
    more: int = 0
    more_reason: SkipReason | None = None
    counts: dict[SkipReason, int] = field(default_factory=dict)

    def add(self, name: str, reason: SkipReason) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.named) < MAX_SKIPPED:
            self.named.append(SkippedOutput(name, reason))
            return
        self.more += 1
        if self.more_reason is None:
            self.more_reason = reason

    def rest(self, reason: SkipReason) -> None:
        """Entries never examined (a listing or collection cut short)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.more += 1
        if self.more_reason is None:
            self.more_reason = reason

    def result(self) -> tuple[SkippedOutput, ...]:
        tail = (SkippedOutput("*", self.more_reason),) if self.more and self.more_reason else ()
        return (*self.named, *tail)


@dataclass(frozen=True)
class Picked:
    name: str
    size: int


@dataclass
class Plan:
    """What the listing says to take, and what it already skipped."""

    picked: list[Picked] = field(default_factory=list)
    skips: Skips = field(default_factory=Skips)


def plan(records: Iterator[bytes], limits: ArtifactLimits) -> Plan:
    """Decides from the listing's records alone what is collected: regular
    files with one link, a valid name, within the per-file, count and total
    limits, in listing order. Stops reading at max_outputs + MAX_SKIPPED
    records (the rest: one "*" count_limit); a malformed record ends it."""
    out = Plan()
    total = 0
    cap = limits.max_outputs + MAX_SKIPPED
    for seen, record in enumerate(records):
        if seen >= cap:
            out.skips.rest("count_limit")
            break
        kind, links, size, raw = _parse_record(record)
        if raw is None:
            out.skips.rest("collection_failed")
            break
        name = _decoded(raw)
        reason = _why_not(kind, links, size, name, limits, len(out.picked), total)
        if reason is not None or name is None:
            out.skips.add(display_name(raw), reason or "bad_name")
        else:
            total += size
            out.picked.append(Picked(name, size))
    return out


def _decoded(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _why_not(  # noqa: PLR0911, PLR0917 - one rule per line, in order
    kind: str, links: int, size: int, name: str | None, limits: ArtifactLimits, count: int, total: int
) -> SkipReason | None:
    """Why one listed entry is not collected, given what is picked so far."""
    if name is None or name_problem(name) is not None:
        return "bad_name"
    if kind == "d":
        return "nested"
    # Symlinks, FIFOs, sockets, devices; and hard links, whose other name
    # may be anywhere (two names, one inode: neither is taken).
    if kind != "f" or links != 1:
        return "not_regular"
    if size > limits.max_output_file_bytes:
        return "too_large"
    if count >= limits.max_outputs:
        return "count_limit"
    if total + size > limits.max_output_bytes:
        return "total_limit"
    return None


def _parse_record(record: bytes) -> tuple[str, int, int, bytes | None]:
    parts = record.split(b" ", 3)
    if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit():  # noqa: PLR2004 - four fields
        return "", 0, 0, None
    return parts[0].decode("ascii", "replace"), int(parts[1]), int(parts[2]), parts[3]


def _records(stdout: io.RawIOBase, max_record: int) -> Iterator[bytes]:
    """NUL-terminated records; one longer than max_record ends the listing."""
    buffered = bytearray()
    while True:
        chunk = stdout.read(1 << 16)
        if not chunk:
            return
        buffered.extend(chunk)
        while (end := buffered.find(b"\0")) >= 0:
            yield bytes(buffered[:end])
            del buffered[: end + 1]
        if len(buffered) > max_record:
            yield b""
            return


@dataclass
class Collected:
    files: int = 0
    size: int = 0
    skipped: tuple[SkippedOutput, ...] = ()
    counts: dict[SkipReason, int] = field(default_factory=dict)
    problem: str = ""
    """Why the collection stopped early, for the log ("" if it did not)."""


Deliver = Callable[[OutputFileChunk], None]


def collect(
    rt: TransferRuntime,
    container_id: str,
    *,
    user: str,
    limits: ArtifactLimits,
    deliver: Deliver,
    timeout_s: float,
) -> Collected:
    """Blocking: lists /outputs, picks, streams the picked files to
    ``deliver`` in CHUNK_BYTES pieces. Never raises for what the sandbox
    did; a failure is a skip reason and ``problem``."""
    deadline = time.monotonic() + timeout_s
    done = Collected()
    try:
        planned = _list(rt, container_id, user, limits, timeout_s)
    except (OSError, TransferError) as exc:
        skips = Skips()
        skips.rest("collection_failed")
        return Collected(skipped=skips.result(), counts=skips.counts, problem=str(exc))
    skips = planned.skips
    if planned.picked:
        left = max(deadline - time.monotonic(), 0.1)
        try:
            fetch = _Fetch(planned.picked, limits, deliver, skips, done)
            fetch.run(rt, container_id, user, left)
        except (OSError, TransferError, tarfile.TarError) as exc:
            done.problem = done.problem or str(exc)
    done.skipped, done.counts = skips.result(), skips.counts
    return done


def _list(rt: TransferRuntime, container_id: str, user: str, limits: ArtifactLimits, timeout_s: float) -> Plan:
    exec_id, sock, _handle = rt.exec_socket(container_id, list(LIST_ARGV), user, stdin=False, timeout_s=timeout_s)
    stdout = ExecStdout(sock)
    finished = False
    try:
        with _Watchdog(sock, timeout_s) as watchdog:
            records = _records(stdout, MAX_NAME_BYTES * 4 + 64)
            try:
                planned = plan(records, limits)
                finished = not planned.skips.more and next(records, None) is None
            except (OSError, TransferError) as exc:
                # The watchdog's close, or the socket's own timeout, racing
                # it: either way the listing ran out of time.
                if watchdog.expired.is_set() or isinstance(exc, TimeoutError):
                    raise TransferError("listing /outputs did not finish in time") from None
                raise TransferError(f"listing /outputs failed: {exc}") from None
            if watchdog.expired.is_set():
                raise TransferError("listing /outputs did not finish in time")
    finally:
        _shut(sock)
        with contextlib.suppress(OSError):
            sock.close()
    if finished:
        code = rt.exec_exit_code(exec_id, 2.0)
        if code != 0:
            detail = bytes(stdout.stderr).decode("utf-8", "replace").strip()
            raise TransferError(f"listing /outputs failed (exit {code}): {detail}")
    return planned


class _Fetch:
    """The tar of the picked names, checked member by member against the
    listing before any data is read; what is not delivered whole is skipped."""

    def __init__(
        self, picked: list[Picked], limits: ArtifactLimits, deliver: Deliver, skips: Skips, done: Collected
    ) -> None:
        self._picked = picked
        self._limits = limits
        self._deliver = deliver
        self._skips = skips
        self._done = done
        self._index = 0
        self._total = 0

    def run(self, rt: TransferRuntime, container_id: str, user: str, timeout_s: float) -> None:
        argv = tar_argv([p.name for p in self._picked])
        _, sock, _handle = rt.exec_socket(container_id, argv, user, stdin=False, timeout_s=timeout_s)
        try:
            with _Watchdog(sock, timeout_s) as watchdog:
                try:
                    reader = io.BufferedReader(ExecStdout(sock), CHUNK_BYTES)
                    with tarfile.open(fileobj=reader, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
                        for member in tar:
                            self._take(tar, member)
                except (OSError, TransferError, tarfile.TarError) as exc:
                    if watchdog.expired.is_set():
                        raise TransferError("collecting /outputs did not finish in time") from None
                    raise TransferError(f"collecting /outputs failed: {exc}") from None
                if watchdog.expired.is_set():
                    raise TransferError("collecting /outputs did not finish in time")
        finally:
            for rest in self._picked[self._index :]:
                self._skips.add(rest.name, "collection_failed")
            _shut(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _take(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if self._index >= len(self._picked):
            raise TransferError("the tar stream holds more members than were asked for")
        want = self._picked[self._index]
        if member.name != want.name or member.type not in {tarfile.REGTYPE, tarfile.AREGTYPE}:
            shown = display_name(member.name.encode("utf-8", "surrogateescape"))
            raise TransferError(f"unexpected tar member {shown!r}")
        limits = self._limits
        if (
            member.size != want.size
            or member.size > limits.max_output_file_bytes
            or self._total + member.size > limits.max_output_bytes
        ):
            # Going on would mean reading its data: the collection stops here.
            self._skips.add(want.name, "too_large")
            self._index += 1
            raise TransferError(f"{want.name!r} is not within its limits or its listed size")
        data = tar.extractfile(member)
        if data is None:
            raise TransferError("a regular member without data")
        _send(data, want, self._deliver)
        self._index += 1
        self._total += member.size
        self._done.files += 1
        self._done.size += member.size


def _send(data: IO[bytes], want: Picked, deliver: Deliver) -> None:
    left = want.size
    if left == 0:
        deliver(OutputFileChunk(want.name, b"", eof=True, size=0))
        return
    while left > 0:
        piece = data.read(min(CHUNK_BYTES, left))
        if not piece:
            raise TransferError(f"{want.name!r} ended early")
        left -= len(piece)
        deliver(OutputFileChunk(want.name, piece, eof=left == 0, size=want.size if left == 0 else 0))
