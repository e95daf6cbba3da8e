"""Reading a file that holds a secret (the egress CA key, the secrets file)
the way only its owner may have written it. Shared by ca.py and secrets.py.

Like airlock/common/_secrets.py, but every check is made on the open file
(fstat), so the file cannot be swapped between check and read, and a
missing file can be told apart (the CA makes a new key then)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from airlock.executor._errors import EgressSetupError


def read_private_file(path: Path, what: str, max_bytes: int, *, missing_ok: bool = False) -> bytes | None:
    """The file's bytes; None if it does not exist and ``missing_ok``.
    Raises EgressSetupError (naming ``what`` and the path) unless it is a
    regular file, not a symlink, owned by this uid, mode 0600 or stricter,
    at most ``max_bytes``."""
    try:
        # O_NOFOLLOW: a planted symlink cannot point us at another file;
        # O_NONBLOCK: a FIFO in its place cannot hang the start.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise EgressSetupError(f"{what} {path}: cannot open: {exc.strerror}") from exc
    except OSError as exc:
        problem = "a symlink (refused)" if exc.errno == errno.ELOOP else f"cannot open: {exc.strerror}"
        raise EgressSetupError(f"{what} {path}: {problem}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EgressSetupError(f"{what} {path}: not a regular file")
        if st.st_uid != os.geteuid():
            raise EgressSetupError(f"{what} {path}: owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})")
        if st.st_mode & 0o077:
            raise EgressSetupError(
                f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read or write it; chmod 600"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise EgressSetupError(f"{what} {path}: larger than {max_bytes} bytes")
    return data
