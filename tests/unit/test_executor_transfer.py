"""The executor's artifact logic without Docker (airlock/executor/_artifacts.py):
names, limits and input refusals; what the /outputs listing picks; and the
collection over a fake exec socket, where a tar header that would need its
data read beyond the limits stops the collection unread, a member that is
not what was listed is refused, and a silent exec ends at its wall-clock
bound. The real thing is tests/integration/test_executor_artifacts.py."""

from __future__ import annotations

import io
import socket
import struct
import tarfile
import threading
import time

import pytest

from airlock.executor._artifacts import (
    LIST_ARGV,
    MAX_SKIPPED,
    Transfer,
    check_inputs,
    collect,
    display_name,
    name_problem,
    plan,
)
from airlock.executor._config import ArtifactSettings, ExecutorConfig
from airlock.executor._errors import RunRefused
from airlock.executor._model import ArtifactLimits, InputFile, OutputFileChunk, RunFiles

LIMITS = ArtifactLimits(max_outputs=3, max_output_bytes=100, max_output_file_bytes=60, max_inputs=2, max_input_bytes=10)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("report.csv", True),
        ("d\u00e9j\u00e0 vu.txt", True),
        (".hidden", True),
        ("", False),
        (".", False),
        ("..", False),
        ("a/b", False),
        ("a\\b", False),
        ("bad\nname", False),
        ("zero\u200bwidth", False),
        ("e\u0301", False),
        ("x" * 256, False),
    ],
)
def test_names_follow_the_gateways_rule(name: str, ok: bool) -> None:
    assert (name_problem(name) is None) is ok


def test_display_names_are_safe_to_show() -> None:
    assert display_name(b"bad\nname") == "bad?name"
    assert display_name(b"\xff/x") == "\ufffd?x"
    assert display_name(b"") == "?"


def test_clamp_counts_stay_zero_and_sizes_default_to_the_ceiling() -> None:
    transfer = Transfer.of(
        ExecutorConfig(
            socket="/tmp/x.sock",
            token_file="/dev/null",
            artifacts=ArtifactSettings(max_inputs=4, max_outputs=10, max_input_bytes=1000, max_output_bytes=500),
        )
    )
    assert transfer.clamp(ArtifactLimits()) == ArtifactLimits(0, 500, 256 << 20, 0, 1000)
    assert transfer.clamp(ArtifactLimits(99, 99, 99, 99, 99)) == ArtifactLimits(10, 99, 99, 4, 99)


@pytest.mark.parametrize(
    ("inputs", "code"),
    [
        ((InputFile("a", b"1"), InputFile("b", b"2"), InputFile("c", b"3")), "inputs_too_many"),
        ((InputFile("../a", b"1"),), "input_name_invalid"),
        ((InputFile("a", b"1"), InputFile("a", b"2")), "input_name_duplicate"),
        ((InputFile("a", b"x" * 11),), "inputs_too_large"),
        ((InputFile("a", b"x" * 6), InputFile("b", b"x" * 5)), "inputs_too_large"),
        ((InputFile("a", b"x" * 9),), "inputs_too_large"),  # beyond the sandbox's file size
        ((InputFile("a", b"x" * 8), InputFile("b", b"")), None),
    ],
)
def test_inputs_are_refused_one_code_per_reason(inputs: tuple[InputFile, ...], code: str | None) -> None:
    files = RunFiles(LIMITS, inputs)
    if code is None:
        check_inputs(files, LIMITS, file_bytes=8)
        return
    with pytest.raises(RunRefused) as caught:
        check_inputs(files, LIMITS, file_bytes=8)
    assert caught.value.code == code


def test_the_listing_alone_decides_what_is_taken() -> None:
    records = [
        b"f 1 10 a.txt",
        b"l 1 11 link",
        b"p 1 0 fifo",
        b"d 2 40 dir",
        b"f 2 5 hard",
        b"f 1 61 big",
        b"f 1 5 bad\nname",
        b"f 1 5 \xff",
        b"f 1 50 b.txt",
        b"f 1 50 c.txt",
        b"f 1 1 d.txt",
        b"f 1 1 e.txt",
    ]
    planned = plan(iter(records), LIMITS)
    assert [(p.name, p.size) for p in planned.picked] == [("a.txt", 10), ("b.txt", 50), ("d.txt", 1)]
    assert [(s.name, s.reason) for s in planned.skips.result()] == [
        ("link", "not_regular"),
        ("fifo", "not_regular"),
        ("dir", "nested"),
        ("hard", "not_regular"),
        ("big", "too_large"),
        ("bad?name", "bad_name"),
        ("\ufffd", "bad_name"),
        ("c.txt", "total_limit"),
        ("e.txt", "count_limit"),
    ]


def test_a_long_listing_is_read_only_so_far() -> None:
    read = 0

    def records() -> object:
        nonlocal read
        for i in range(10_000):
            read += 1
            yield f"f 1 1 f{i}".encode()

    planned = plan(records(), LIMITS)  # type: ignore[arg-type]
    assert len(planned.picked) == 3
    result = planned.skips.result()
    assert len(result) == MAX_SKIPPED + 1
    assert (result[-1].name, result[-1].reason) == ("*", "count_limit")
    assert read == LIMITS.max_outputs + MAX_SKIPPED + 1


# -- collection over a fake exec -------------------------------------------------


def _frames(data: bytes, stream: int = 1) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 1000):
        piece = data[i : i + 1000]
        out += struct.pack(">BxxxI", stream, len(piece)) + piece
    return bytes(out)


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _member(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/shadow"
    return info


class FakeExecs:
    """exec_socket answers the listing and the tar with canned bytes; the
    execs named in ``hang`` ("list", "tar") keep their stream open after
    them (a wedged exec)."""

    def __init__(self, listing: bytes, tar: bytes, *, hang: tuple[str, ...] = ()) -> None:
        self._listing, self._tar, self._hang = listing, tar, hang
        self.threads: list[threading.Thread] = []
        self.peers: list[socket.socket] = []

    def exec_socket(
        self, container_id: str, argv: list[str], user: str, *, stdin: bool, timeout_s: float
    ) -> tuple[str, socket.socket, object]:
        ours, theirs = socket.socketpair()
        which = "list" if tuple(argv) == LIST_ARGV else "tar"
        payload = self._listing if which == "list" else self._tar

        def serve() -> None:
            try:
                theirs.sendall(_frames(payload))
                if which not in self._hang:
                    theirs.close()
            except OSError:
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self.threads.append(thread)
        self.peers.append(theirs)
        ours.settimeout(timeout_s)
        return "exec", ours, None

    def exec_exit_code(self, exec_id: str, timeout_s: float) -> int | None:
        return 0

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


def _collect(execs: FakeExecs, timeout_s: float = 5.0) -> tuple[list[OutputFileChunk], object]:
    got: list[OutputFileChunk] = []
    limits = ArtifactLimits(max_outputs=5, max_output_bytes=1 << 20, max_output_file_bytes=600 << 10)
    try:
        done = collect(execs, "c", user="u", limits=limits, deliver=got.append, timeout_s=timeout_s)
    finally:
        execs.close()
    return got, done


def test_files_come_in_chunks_the_last_with_eof_and_size() -> None:
    big = bytes(range(256)) * 2400  # 600 KiB: three chunks of at most 256 KiB
    listing = b"f 1 614400 big\0f 1 0 empty\0"
    execs = FakeExecs(listing, _tar([(_member("big", len(big)), big), (_member("empty", 0), b"")]))
    got, done = _collect(execs)
    assert [(c.name, c.eof, c.size) for c in got] == [
        ("big", False, 0),
        ("big", False, 0),
        ("big", True, len(big)),
        ("empty", True, 0),
    ]
    assert b"".join(c.data for c in got if c.name == "big") == big
    assert done.files == 2  # type: ignore[attr-defined]
    assert done.skipped == ()  # type: ignore[attr-defined]


def test_a_header_beyond_the_limits_stops_before_its_data() -> None:
    # The listing said 5 bytes; the header says 10 GiB. Only the header's
    # record is there (tar writes whole 10 KiB records), and the stream
    # hangs: reading its data would run into the wall-clock bound, so
    # finishing at once shows it was never read.
    header = _member("huge", 10 << 30).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    record = header + bytes(tarfile.RECORDSIZE - len(header))
    execs = FakeExecs(b"f 1 5 huge\0f 1 1 next\0", record, hang=("tar",))
    t0 = time.monotonic()
    got, done = _collect(execs, timeout_s=5.0)
    assert time.monotonic() - t0 < 2
    assert got == []
    assert [(s.name, s.reason) for s in done.skipped] == [  # type: ignore[attr-defined]
        ("huge", "too_large"),
        ("next", "collection_failed"),
    ]


def test_a_member_that_is_not_what_was_listed_is_refused() -> None:
    execs = FakeExecs(b"f 1 5 a\0", _tar([(_member("a", 0, tarfile.SYMTYPE), b"")]))
    got, done = _collect(execs)
    assert got == []
    assert [(s.name, s.reason) for s in done.skipped] == [("a", "collection_failed")]  # type: ignore[attr-defined]


def test_a_silent_exec_ends_at_its_bound() -> None:
    execs = FakeExecs(b"f 1 5 a", b"", hang=("list",))  # the record is never ended
    t0 = time.monotonic()
    got, done = _collect(execs, timeout_s=0.5)
    assert time.monotonic() - t0 < 3
    assert got == []
    assert [(s.name, s.reason) for s in done.skipped] == [("*", "collection_failed")]  # type: ignore[attr-defined]
    assert "in time" in done.problem  # type: ignore[attr-defined]
