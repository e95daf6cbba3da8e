"""The audit log's on-disk format: JSON lines in a SHA-256 chain, signed by
Ed25519 checkpoints.

Each line is one ``airlock.v1.AuditEvent`` rendered as ASCII-only JSON, with
two fields the chain adds: ``seq`` (1, 2, 3, ... across rotated files) and
``prev_hash`` (the previous line's ``hash``), and it ends with
``"hash": "<hex>"`` -- the plain SHA-256 of the line's bytes before that
field. Anyone can recompute a SHA-256, so the links alone only show careless
edits; what makes the chain evidence is the **checkpoint** lines the gateway
writes into it (at start, every N lines or S seconds, at clean shutdown, and
as kind ``pruned`` before rotated files are removed). A checkpoint carries an
Ed25519 signature over :func:`checkpoint_message`: the seq and hash of the
line before it, which through the links cover every earlier line, the
chain's random id (made with the chain and kept in the head record, so a
checkpoint signed for one chain never passes in another), its reason and
its time. So:

- an edited line no longer matches its own hash; rehashing it breaks the
  next link, and rewriting every later line breaks the next checkpoint's
  signature, which only the gateway's private key can make;
- a deleted, inserted or reordered line breaks ``seq`` or ``prev_hash``;
- a complete chain opens with its signed ``start`` checkpoint, and a log
  in which no checkpoint verifies is a failure;
- lines after the last checkpoint are an *unsigned tail*: a crash leaves one
  (at most ``max_events`` lines, which the checkpoint promises and signs);
  a longer unsigned run means a checkpoint was removed. A shorter one can
  never be shown genuine from the log alone (lines invented after a real
  checkpoint look the same), so ``verify`` says so loudly and ``strict``
  fails on it;
- verifying needs only the public key, so a verifier cannot forge.

What a chain cannot show on its own is the loss of its newest lines. The
gateway keeps a signed **head** file next to the log (``<path>.head``: the
seq and hash of the last checkpoint) and refuses to start on a log that ends
before it, and to start at all on audit files without one; ``airlock audit
verify`` requires it too (:func:`find_head`: only the live file's, no other);
and the gateway exports the last ``seq`` and the last
signed checkpoint's ``seq`` as metrics, so a Prometheus outside the gateway's
reach witnesses how far the signed chain got.

Both the gateway (writing, airlock/gateway/_audit.py) and ``airlock audit verify``
(reading) use this module.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
#: Event kinds that carry a signed checkpoint.
CHECKPOINT_KINDS = frozenset({"checkpoint", "pruned"})
#: Domain separation: a signature made for one purpose never verifies as
#: another (a head record is not a checkpoint, and neither is anything else
#: the same key might sign one day).
#: v2 signs the chain id, the reason and the time too (v1 signed only the
#: position, so every chain's start checkpoint signed the same text and could
#: be replayed at the head of an invented log).
CHECKPOINT_DOMAIN = "airlock audit checkpoint v2"
HEAD_DOMAIN = "airlock audit head v2"
HEAD_SUFFIX = ".head"
#: The checkpoint reason that opens a chain.
START = "start"
_SUFFIX = re.compile(rb', "hash": "([0-9a-f]{64})"\}$')
_SEQ = re.compile(rb'"seq": "?(\d+)"?')
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHAIN_ID = re.compile(r"[0-9a-f]{32}")
_REASON = re.compile(r"[a-z]{1,32}")
#: Reading a file backwards for its last line, this much at a time.
_TAIL_CHUNK = 64 * 1024


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def seal(body: str) -> tuple[bytes, str]:
    """Appends the hash field to a rendered JSON object; returns the line
    (with newline) and its hash. The body must be ASCII: JSON escapes keep
    U+2028, U+2029 and U+0085 (line breaks to some readers) out of the file."""
    if not body.endswith("}"):
        raise ValueError("an audit body is a JSON object")
    if not body.isascii():
        raise ValueError("an audit body must be ASCII-escaped JSON")
    raw = body.encode("ascii")
    h = digest(raw)
    return raw[:-1] + f', "hash": "{h}"}}\n'.encode(), h


@dataclass(frozen=True)
class ChainState:
    """Where a chain ends: the next writer continues from here."""

    seq: int = 0
    hash: str = GENESIS


# -- keys and signatures -------------------------------------------------------


def generate_signing_key(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair as PEM: the private key 0600 (created
    exclusively, so an existing key is never overwritten), the public key 0644."""
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
        f.flush()
        os.fsync(f.fileno())
    tmp = public_path.with_name(public_path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(public_pem)
        f.flush()
        os.fsync(f.fileno())
    # The umask may have narrowed the mode at creation; public means readable.
    tmp.chmod(0o644)
    tmp.replace(public_path)


def load_signing_key(path: Path | str) -> Ed25519PrivateKey:
    """The gateway's private key (PEM, PKCS#8, unencrypted)."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """A verifier's public key (PEM, SubjectPublicKeyInfo)."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise TypeError(f"{path}: not an Ed25519 public key")
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a key, written into every checkpoint so a verifier
    holding the wrong key can say so."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def new_chain_id() -> str:
    """A chain's random id: 128 bits, so no two chains share one."""
    return secrets.token_hex(16)


def checkpoint_message(
    covers: ChainState,
    *,
    chain_id: str,
    reason: str,
    time: str,
    max_events: int,
    pruned: ChainState | None = None,
) -> bytes:
    """The exact bytes a checkpoint signs: one field per line, ASCII, no
    JSON (whose spelling could vary), behind a domain line. ``time`` is the
    checkpoint event's ``timestamp``."""
    _check_state(covers)
    _check_chain_id(chain_id)
    if not _REASON.fullmatch(reason):
        raise ValueError(f"not a checkpoint reason: {reason!r}")
    if not time or not time.isascii() or not time.isprintable():
        raise ValueError(f"not a checkpoint time: {time!r}")
    if int(max_events) < 1:
        raise ValueError(f"max_events must be >= 1, not {max_events!r}")
    lines = [
        CHECKPOINT_DOMAIN,
        f"chain {chain_id}",
        f"reason {reason}",
        f"time {time}",
        f"covers {covers.seq} {covers.hash}",
        f"max_events {int(max_events)}",
    ]
    if pruned is not None:
        _check_state(pruned)
        lines.append(f"pruned {pruned.seq} {pruned.hash}")
    return ("\n".join(lines) + "\n").encode("ascii")


def head_message(state: ChainState, chain_id: str) -> bytes:
    _check_state(state)
    _check_chain_id(chain_id)
    return f"{HEAD_DOMAIN}\nchain {chain_id}\nhead {state.seq} {state.hash}\n".encode("ascii")


def _check_state(state: ChainState) -> None:
    if state.seq < 0 or not _HEX64.fullmatch(state.hash):
        raise ValueError(f"not a chain position: {state!r}")


def _check_chain_id(chain_id: str) -> None:
    if not _CHAIN_ID.fullmatch(chain_id):
        raise ValueError(f"not a chain id: {chain_id!r}")


def sign(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode("ascii")


def signature_ok(public_key: Ed25519PublicKey, message: bytes, signature: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


# -- the head file ---------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """The last checkpoint the gateway wrote, kept outside the log so that
    deleting or cutting back the log is noticed, and the chain's id, which
    a restarted gateway carries on. A new chain's head is written at seq 0,
    before its start checkpoint, so no crash leaves audit files without one."""

    seq: int
    hash: str
    chain_id: str
    key_id: str
    signature: str

    @property
    def state(self) -> ChainState:
        return ChainState(self.seq, self.hash)


def head_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + HEAD_SUFFIX)


def make_head(key: Ed25519PrivateKey, state: ChainState, chain_id: str) -> Head:
    return Head(state.seq, state.hash, chain_id, key_id(key.public_key()), sign(key, head_message(state, chain_id)))


def head_signature_ok(public_key: Ed25519PublicKey, head: Head) -> bool:
    return signature_ok(public_key, head_message(head.state, head.chain_id), head.signature)


def read_head(path: Path) -> Head | None:
    """The head record, None when there is none; ValueError when it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(4096)
    doc: Any = None
    try:
        doc = json.loads(raw)
        head = Head(int(doc["seq"]), str(doc["hash"]), str(doc["chain_id"]), str(doc["key_id"]), str(doc["signature"]))
        _check_state(head.state)
        _check_chain_id(head.chain_id)
    except (ValueError, KeyError, TypeError) as exc:
        old = isinstance(exc, KeyError) and isinstance(doc, dict) and "chain_id" not in doc and "seq" in doc
        why = "no chain_id: written by a gateway from before chain ids" if old else str(exc)
        raise ValueError(f"{path}: not an audit head record ({why})") from exc
    return head


def write_head(path: Path, head: Head) -> None:
    """Atomically: a reader sees the old record or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    body = json.dumps(
        {
            "seq": head.seq,
            "hash": head.hash,
            "chain_id": head.chain_id,
            "key_id": head.key_id,
            "signature": head.signature,
        }
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        data = (body + "\n").encode("ascii")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Makes a rename or unlink in ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading lines ---------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One sealed line, parsed; ``doc`` is the event without ``hash``."""

    seq: int
    prev_hash: str
    hash: str
    body_ok: bool
    doc: dict[str, Any]


def parse_line(line: bytes) -> Line:
    """ValueError (with the reason) when the bytes are not a sealed event."""
    if not line.endswith(b"\n"):
        raise ValueError("no line end (torn: the writer stopped mid-line)")
    text = line[:-1]
    m = _SUFFIX.search(text)
    if m is None:
        raise ValueError("not a sealed audit line (no trailing hash field)")
    body = text[: m.start()] + b"}"
    try:
        doc = json.loads(body)
        seq = int(doc["seq"])
        prev = str(doc["prev_hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a JSON audit event ({exc.__class__.__name__})") from exc
    stored = m.group(1).decode()
    return Line(seq, prev, stored, digest(body) == stored, doc)


def _lines(paths: Iterable[Path]) -> Iterator[tuple[str, int, bytes]]:
    for path in paths:
        with path.open("rb") as f:
            for n, line in enumerate(f, start=1):
                yield str(path), n, line


def order_files(paths: Iterable[Path]) -> list[Path]:
    """Rotated files in chain order: by the seq of their first event."""

    def first_seq(p: Path) -> int:
        with p.open("rb") as f:
            head = f.readline()
        m = _SEQ.search(head)
        return int(m.group(1)) if m else 1 << 62

    return sorted(paths, key=first_seq)


@dataclass(frozen=True)
class Tail:
    """The end of one file: its last complete line and where it ends; bytes
    after that are a torn fragment."""

    line: bytes
    end: int
    size: int

    @property
    def torn(self) -> int:
        return self.size - self.end


def read_tail(path: Path) -> Tail:
    """Reads backwards, so a start does not re-read a 64 MiB file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos, buf = size, b""
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            last_nl = buf.rfind(b"\n")
            if last_nl == -1:
                continue
            prev_nl = buf.rfind(b"\n", 0, last_nl)
            if prev_nl != -1 or pos == 0:
                return Tail(buf[prev_nl + 1 : last_nl + 1], pos + last_nl + 1, size)
    return Tail(b"", 0, size)


def tail_state(paths: Iterable[Path]) -> ChainState:
    """The chain's end: the last complete line of the newest file that has
    one. ValueError when that line is not intact (the writer must not extend
    a chain whose end it cannot vouch for)."""
    for path in reversed(order_files([p for p in paths if p.exists() and p.stat().st_size > 0])):
        tail = read_tail(path)
        if not tail.line:
            continue
        try:
            parsed = parse_line(tail.line)
        except ValueError as exc:
            raise ValueError(
                f"{path}: the last audit line is unreadable ({exc}); refusing to extend the chain"
            ) from exc
        if not parsed.body_ok:
            raise ValueError(f"{path}: the last audit line does not match its hash; refusing to extend the chain")
        return ChainState(parsed.seq, parsed.hash)
    return ChainState()


def find_line(paths: Iterable[Path], seq: int) -> Line | None:
    """The line with this seq, searching the newest files first."""
    for path in reversed(order_files([p for p in paths if p.exists()])):
        with path.open("rb") as f:
            first = f.readline()
            m = _SEQ.search(first)
            if m is not None and int(m.group(1)) > seq:
                continue
            f.seek(0)
            for raw in f:
                m = _SEQ.search(raw)
                if m is not None and int(m.group(1)) == seq:
                    with contextlib.suppress(ValueError):
                        return parse_line(raw)
            return None
    return None


# -- verification ----------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    seq: int | None
    #: edited, deleted, inserted, reordered, unreadable, forged checkpoint,
    #: bad signature, wrong chain, unsigned, no head record, unexpected head
    #: record, not one log
    kind: str
    detail: str

    def __str__(self) -> str:
        # Line 0: the problem is the file itself (a missing or misplaced one).
        at = self.file + (f":{self.line}" if self.line else "") + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{at}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Report:
    lines: int
    files: int
    first_seq: int | None
    last: ChainState
    problems: tuple[Problem, ...]
    notices: tuple[str, ...]
    #: What a reader must not overlook even when the log is ok: an unsigned tail.
    warnings: tuple[str, ...]
    checkpoints: int
    #: Whether signatures were checked (a public key was given).
    signatures_checked: bool
    #: The last line a verified signature covers (None: none does).
    signed_through: int | None
    #: The seq and signed time of the last verified checkpoint line.
    last_checkpoint: int | None
    last_checkpoint_time: str | None
    #: Lines after the last verified checkpoint.
    unsigned_tail: int
    #: The chain's id, from its first verified checkpoint (without a key:
    #: its first well-formed one).
    chain_id: str | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None


@dataclass
class _Verifier:
    files: list[Path]
    public_key: Ed25519PublicKey | None
    start: ChainState | None
    head: Head | None
    head_file: str
    seen: set[int]
    strict: bool = False
    problems: list[Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    expect: ChainState | None = None
    #: Seqs already reported as coming late, so their arrival is not reported again.
    late: set[int] = field(default_factory=set)
    count: int = 0
    #: The first line, when it was readable (the start of the chain is judged on it).
    first: tuple[str, int, Line] | None = None
    #: Whether the first line is the chain's start checkpoint (signed, when a key is given).
    opened: bool = False
    last: ChainState = field(default_factory=ChainState)
    checkpoints: int = 0
    signed_through: int | None = None
    last_checkpoint: int | None = None
    last_checkpoint_time: str | None = None
    #: The chain's id and where it was first seen.
    chain_id: str | None = None
    chain_at: tuple[str, int] = ("", 0)
    #: Lines since the last verified checkpoint, and the promise it made.
    run: int = 0
    run_start: tuple[str, int] | None = None
    promised: int | None = None
    run_reported: bool = False
    #: (seq, hash) -> where a verified "pruned" checkpoint said the older files went.
    prunes: dict[tuple[int, str], tuple[str, int]] = field(default_factory=dict)
    head_seen: bool = False
    head_mismatch: bool = False
    wanted_key: str = ""

    def problem(self, file: str, n: int, seq: int | None, kind: str, detail: str) -> None:
        self.problems.append(Problem(file, n, seq, kind, detail))

    def feed(self, file: str, n: int, raw: bytes) -> None:
        self.count += 1
        try:
            line = parse_line(raw)
        except ValueError as exc:
            self.problem(file, n, _loose_seq(raw), "unreadable", str(exc))
            # Resynchronise on what can still be read, so one bad line is one
            # problem and the next line is judged against it.
            seq, m = _loose_seq(raw), _SUFFIX.search(raw.rstrip(b"\n"))
            self.expect = ChainState(seq, m.group(1).decode()) if seq is not None and m else None
            self._count_unsigned(file, n)
            return
        if self.count == 1:
            # The start is judged at the end: a signed prune record later in
            # the chain may explain why it does not begin at seq 1.
            self.first = (file, n, line)
        if not line.body_ok:
            self.problem(file, n, line.seq, "edited", "the line does not match its hash")
        elif self.expect is not None and self.count > 1:
            self._link(file, n, line)
        if self.expect is None or line.seq > self.expect.seq:
            self.expect = ChainState(line.seq, line.hash)
            self.last = self.expect
        elif line.seq in self.late:
            self.late.discard(line.seq)
        if self.head is not None and line.seq == self.head.seq:
            self.head_seen = True
            if line.hash != self.head.hash:
                self.head_mismatch = True
                self.problem(
                    file, n, line.seq, "edited", f"hash differs from the one the head file {self.head_file} records"
                )
        kind = line.doc.get("kind")
        if kind in CHECKPOINT_KINDS and line.body_ok:
            self._checkpoint(file, n, line)
        else:
            self._count_unsigned(file, n)

    def _link(self, file: str, n: int, line: Line) -> None:
        expect = self.expect
        assert expect is not None
        if line.seq == expect.seq + 1:
            if line.prev_hash != expect.hash:
                self.problem(
                    file,
                    n,
                    line.seq,
                    "edited",
                    f"prev_hash does not link to seq {expect.seq}: this line or the one before was rewritten",
                )
            return
        if line.seq > expect.seq + 1:
            missing = range(expect.seq + 1, line.seq)
            if any(s in self.seen for s in missing):
                self.late.update(s for s in missing if s in self.seen)
                self.problem(file, n, line.seq, "reordered", f"seq {line.seq} comes before seq {expect.seq + 1}")
            else:
                self.problem(file, n, line.seq, "deleted", f"seq {expect.seq + 1}..{line.seq - 1} missing")
            return
        if line.seq in self.late:
            return  # reported where it should have been
        kind = "inserted" if line.seq == expect.seq else "reordered"
        self.problem(file, n, line.seq, kind, f"seq {line.seq} follows seq {expect.seq}")

    def _count_unsigned(self, file: str, n: int) -> None:
        if self.run == 0:
            self.run_start = (file, n)
        self.run += 1
        if self.promised is not None and self.run > self.promised and not self.run_reported:
            self.run_reported = True
            self.problem(
                file,
                n,
                None,
                "deleted",
                f"more than {self.promised} lines without a signed checkpoint (the last one promised one "
                "within that many): a checkpoint was removed or the lines after it were rewritten",
            )

    def _checkpoint(self, file: str, n: int, line: Line) -> None:
        self.checkpoints += 1
        cp = line.doc.get("checkpoint") or {}
        try:
            covers = ChainState(int(cp["covers_seq"]), str(cp["covers_hash"]))
            reason = str(cp.get("reason", ""))
            chain_id = str(cp.get("chain_id", ""))
            time = str(line.doc.get("timestamp", ""))
            max_events = int(cp.get("max_events", 0))
            pruned = None
            if line.doc.get("kind") == "pruned":
                pruned = ChainState(int(cp["pruned_through_seq"]), str(cp["pruned_through_hash"]))
            message = checkpoint_message(
                covers, chain_id=chain_id, reason=reason, time=time, max_events=max_events, pruned=pruned
            )
            signature = str(cp["signature"])
            signer = str(cp.get("key_id", ""))
        except (KeyError, TypeError, ValueError) as exc:
            detail = (
                "no chain id (written before chain ids, or forged)"
                if not cp.get("chain_id")
                else f"malformed checkpoint ({exc.__class__.__name__}: {exc})"
            )
            self.problem(file, n, line.seq, "forged checkpoint", detail)
            self._count_unsigned(file, n)
            return
        if covers != ChainState(line.seq - 1, line.prev_hash):
            self.problem(
                file,
                n,
                line.seq,
                "forged checkpoint",
                f"signs seq {covers.seq} but follows seq {line.seq - 1}: copied from elsewhere",
            )
            self._count_unsigned(file, n)
            return
        if self.public_key is not None and not signature_ok(self.public_key, message, signature):
            other = f" (signed by key {signer}, not {self.wanted_key})" if signer and signer != self.wanted_key else ""
            self.problem(file, n, line.seq, "bad signature", f"the checkpoint's signature does not verify{other}")
            self._count_unsigned(file, n)
            return
        if self.chain_id is None:
            self.chain_id, self.chain_at = chain_id, (file, n)
        elif chain_id != self.chain_id:
            self.problem(
                file,
                n,
                line.seq,
                "wrong chain",
                f"a checkpoint of chain {chain_id} in chain {self.chain_id} (named at "
                f"{self.chain_at[0]}:{self.chain_at[1]}): copied from another chain",
            )
            self._count_unsigned(file, n)
            return
        if pruned is not None:
            self.prunes[(pruned.seq, pruned.hash)] = (file, n)
        if self.count == 1 and reason == START:
            self.opened = True
        if self.public_key is None:
            self._count_unsigned(file, n)
            return
        self.signed_through = covers.seq
        self.last_checkpoint, self.last_checkpoint_time = line.seq, time
        self.run, self.run_start, self.run_reported = 0, None, False
        self.promised = max_events

    def finish(self) -> Report:
        self._finish_start()
        if self.head is not None:
            self._finish_head()
        self._finish_signatures()
        return Report(
            lines=self.count,
            files=len(self.files),
            first_seq=self.first[2].seq if self.first else None,
            last=self.last,
            problems=tuple(self.problems),
            notices=tuple(self.notices),
            warnings=tuple(self.warnings),
            checkpoints=self.checkpoints,
            signatures_checked=self.public_key is not None,
            signed_through=self.signed_through,
            last_checkpoint=self.last_checkpoint,
            last_checkpoint_time=self.last_checkpoint_time,
            unsigned_tail=self.run,
            chain_id=self.chain_id,
        )

    def _finish_start(self) -> None:
        """Judges the first line: it links to the expected start (or to a
        signed prune record), and a complete chain opens with its start checkpoint."""
        problems = self.problems
        if self.first is not None and self.start is not None:
            file, n, line = self.first
            if (line.seq, line.prev_hash) != (self.start.seq + 1, self.start.hash):
                at = self.prunes.get((line.seq - 1, line.prev_hash))
                if at is not None:
                    self.notices.append(
                        f"the chain starts at seq {line.seq}: seq 1..{line.seq - 1} were pruned, "
                        f"as recorded at {at[0]}:{at[1]}"
                    )
                elif line.seq > self.start.seq + 1:
                    problems.insert(
                        0,
                        Problem(
                            file,
                            n,
                            line.seq,
                            "deleted",
                            f"the chain starts at seq {line.seq}: seq {self.start.seq + 1}..{line.seq - 1} are "
                            "missing and no signed prune record covers them (pass --partial if you archived "
                            "them yourself)",
                        ),
                    )
                else:
                    problems.insert(
                        0,
                        Problem(file, n, line.seq, "inserted", "the first line does not link to the start of a chain"),
                    )
            elif (
                self.start == ChainState()
                and not self.opened
                and not any((p.file, p.line) == (file, n) for p in problems)
            ):
                signed = "signed " if self.public_key is not None else ""
                problems.insert(
                    0,
                    Problem(
                        file,
                        n,
                        line.seq,
                        "unsigned",
                        f"a complete chain opens with its {signed}start checkpoint, and this one opens with a "
                        f"{line.doc.get('kind')!r} line: the start checkpoint was removed (pass --partial only "
                        "for a chain that really starts mid-way)",
                    ),
                )
        elif self.first is not None:
            self.notices.append(f"--partial: the chain was taken as starting at seq {self.first[2].seq}")

    def _finish_signatures(self) -> None:
        """With a key, something must be signed, and what is not is said loudly."""
        problems = self.problems
        if self.public_key is None:
            self.notices.append(
                f"signatures not checked (no --public-key): {self.checkpoints} checkpoint(s) found; the links "
                "alone do not show a rewrite, since anyone can recompute SHA-256"
            )
        elif self.signed_through is None:
            file, n = (self.first[0], self.first[1]) if self.first else (str(self.files[0]) if self.files else "", 1)
            problems.append(
                Problem(
                    file,
                    n,
                    None,
                    "unsigned",
                    f"no checkpoint in the log verifies with key {self.wanted_key}: nothing in it is signed "
                    f"({self.count} line(s), {self.checkpoints} checkpoint(s))",
                )
            )
        elif self.run and self.run_start is not None:
            message = (
                f"{self.run} event(s) after the last signed checkpoint (seq {self.last_checkpoint}, signed "
                f"{self.last_checkpoint_time}) are NOT verified, from {self.run_start[0]}:{self.run_start[1]}: "
                "nothing in the log tells them from lines invented after that checkpoint. A crash leaves such a "
                "tail and a clean shutdown does not; compare the seq with the highest "
                "airlock_gateway_audit_last_signed_seq your Prometheus recorded"
            )
            if self.strict:
                problems.append(
                    Problem(self.run_start[0], self.run_start[1], None, "unsigned", f"{message} (--strict)")
                )
            else:
                self.warnings.append(message)

    def _finish_head(self) -> None:
        head = self.head
        assert head is not None
        if self.public_key is not None and not head_signature_ok(self.public_key, head):
            self.problem(
                self.head_file,
                1,
                head.seq,
                "bad signature",
                f"the head record's signature does not verify with key {self.wanted_key} (it names key "
                f"{head.key_id}): the gateway did not write it",
            )
        if self.chain_id is not None and head.chain_id != self.chain_id:
            self.problem(
                self.head_file,
                1,
                head.seq,
                "wrong chain",
                f"the head file belongs to chain {head.chain_id}, the log to chain {self.chain_id}",
            )
        if head.seq > self.last.seq:
            self.problem(
                self.head_file,
                1,
                head.seq,
                "deleted",
                f"the log ends at seq {self.last.seq} but the head file records seq {head.seq}: "
                f"seq {self.last.seq + 1}..{head.seq} were cut off",
            )
        elif self.head_seen:
            if not self.head_mismatch:
                self.notices.append(f"head file {self.head_file} agrees (seq {head.seq})")
        elif self.first is not None and self.first[2].seq > head.seq:
            self.notices.append(
                f"head file {self.head_file} records seq {head.seq}, before the files given: not checked"
            )
        else:
            self.problem(
                self.head_file, 1, head.seq, "deleted", f"seq {head.seq}, which the head file records, is missing"
            )


#: A rotated file's name: the live file's, a dot and a number; an archive
#: folder adds ``.dup<n>`` when the name is taken there.
_ROTATED = re.compile(r".+\.\d+(?:\.dup\d+)?")
_NO_HEAD_HINT = "pass --no-head only for files archived without their head record"


@dataclass(frozen=True)
class HeadLookup:
    """The head record that counts for a set of audit files, and what is
    wrong with the head records around them."""

    #: The live file's head record, when it is there and readable.
    head: Head | None
    #: Where it is (``<live file>.head``), or "".
    head_file: str
    problems: tuple[Problem, ...]


def find_head(paths: Iterable[Path], *, given: Iterable[Path] = (), expected: bool = True) -> HeadLookup:
    """The head record of the one live file among ``paths`` (the file not
    named like a rotated one): the only head record the gateway writes.

    Any other head record next to a file given, or among ``given`` (head
    records named on a command line), was put there: a problem, never a
    second opinion to choose from. With ``expected`` a missing head record
    is a problem, since only it shows that the newest lines were cut off;
    without (files archived without it) none may be there at all."""
    files = list(paths)
    live = [p for p in files if not _ROTATED.fullmatch(p.name)]
    own = head_path(live[0]) if expected and len(live) == 1 else None
    problems = _stray_heads({head_path(p) for p in files} | set(given), own, expected=expected)
    if not expected:
        return HeadLookup(None, "", tuple(problems))
    if own is None:
        names = ", ".join(str(p) for p in (live or files)[:5])
        if live:
            detail = (
                f"{len(live)} live files given ({names}): one log at a time, its live file and its rotated "
                "files (<live file>.<n>); only the live file's head record shows whether lines were cut off"
            )
        else:
            detail = (
                f"only rotated files given ({names}), no live file: its head record is what shows whether the "
                "newest lines were cut off; pass the live file too (or --no-head, for files archived without "
                "their head record)"
            )
        problems.append(Problem(str((live or files)[-1]) if files else "", 0, None, "not one log", detail))
        return HeadLookup(None, "", tuple(problems))
    head, unreadable = _read_own_head(own)
    if unreadable:
        problems.append(Problem(str(own), 0, None, "unreadable", unreadable))
        return HeadLookup(None, str(own), tuple(problems))
    if head is None:
        problems.append(
            Problem(
                str(own),
                0,
                None,
                "no head record",
                f"the live file {live[0]} has no head record next to it, so lines cut off the end of the chain "
                "cannot be detected: the gateway writes one before a chain's first line and keeps it, so it was "
                f"deleted or not copied; {_NO_HEAD_HINT}",
            )
        )
    return HeadLookup(head, str(own), tuple(problems))


def _read_own_head(path: Path) -> tuple[Head | None, str]:
    """The head record (None: there is none), or why it cannot be read."""
    try:
        if os.path.lexists(path) and not stat.S_ISREG(path.lstat().st_mode):
            # A symlink could point anywhere, and a FIFO would hang the read.
            return None, "not a regular file, which is what the gateway writes (a symbolic link?)"
        return read_head(path), ""
    except ValueError as exc:
        return None, str(exc).removeprefix(f"{path}: ")
    except OSError as exc:
        return None, f"cannot read the head record: {exc}"


def _stray_heads(candidates: set[Path], own: Path | None, *, expected: bool) -> list[Problem]:
    """Every head record among ``candidates`` that is not ``own``."""
    if not expected:
        detail = (
            "--no-head says these files have no head record, but this one is there: verify without --no-head so "
            "that it is checked"
        )
    elif own is None:
        detail = "no head record counts for files that are not one log (one live file and its rotated files)"
    else:
        detail = (
            f"the gateway writes a head record only next to the live file ({own}), never next to a rotated file "
            "or anywhere else: this one was put there, and only the live file's counts"
        )
    return [
        Problem(str(hp), 0, None, "unexpected head record", detail)
        for hp in sorted(candidates, key=str)
        if os.path.lexists(hp) and not (own is not None and _same_path(hp, own))
    ]


def _same_path(a: Path, b: Path) -> bool:
    """The same directory entry, however the two were spelled."""
    if a.absolute() == b.absolute():
        return True
    try:
        return os.path.samestat(a.lstat(), b.lstat())
    except OSError:
        return False


def _loose_seq(raw: bytes) -> int | None:
    m = _SEQ.search(raw)
    return int(m.group(1)) if m else None


def verify(
    paths: Iterable[Path],
    *,
    public_key: Ed25519PublicKey | None = None,
    start: ChainState | None = ChainState(),
    head: Head | None = None,
    head_file: str = "",
    strict: bool = False,
) -> Report:
    """Checks every line, link and checkpoint and reports every problem
    (after a bad line it resynchronises on the next one).

    ``start`` is where the chain is expected to begin (seq 0 and the genesis
    hash for a complete log, which must then open with its start checkpoint,
    or a point a signed ``pruned`` record names); None accepts whatever the
    first line links to (``--partial``). ``head`` is the gateway's head
    record, which the chain must reach. With a public key, a log in which no
    checkpoint verifies is a problem, and an unsigned tail is a warning --
    a problem with ``strict``, for logs that must be wholly signed (archived
    ones, or after a clean shutdown).
    """
    if strict and public_key is None:
        raise ValueError("strict verification needs the public key")
    files = list(paths)
    # A first pass over the seq numbers tells a gap that shows up later
    # (reordered) from one that never does (deleted).
    seen = {s for _, _, raw in _lines(files) if (s := _loose_seq(raw)) is not None}
    v = _Verifier(files, public_key, start, head, head_file, seen, strict=strict, expect=start)
    if public_key is not None:
        v.wanted_key = key_id(public_key)
    for file, n, raw in _lines(files):
        v.feed(file, n, raw)
    return v.finish()
