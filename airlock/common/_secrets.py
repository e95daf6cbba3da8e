"""Reading secret files (tokens, keys) the way a daemon that holds them must.

A secret file must belong to the uid that reads it and be readable by no one
else (no group or other permission bits): the trust domains between the
gateway, the executor, OPA and the agents are drawn by the OS, so a token
another uid could read is a token that uid holds. The file is opened without
following a symlink at its last component, so a planted link cannot point a
daemon at someone else's file.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class SecretFileError(ValueError):
    """A secret file is missing, unsafe or empty; the message says which and why."""


def check_secret_file(path: str | Path, what: str) -> None:
    """Raises SecretFileError unless ``path`` is a regular file owned by us, mode 0600 or tighter."""
    try:
        st = Path(path).lstat()
    except OSError as exc:
        raise SecretFileError(f"{what} {path}: cannot stat: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise SecretFileError(f"{what} {path}: not a regular file (a symlink or special file is refused)")
    if st.st_uid != os.geteuid():
        raise SecretFileError(f"{what} {path}: owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})")
    if st.st_mode & 0o077:
        raise SecretFileError(
            f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read or write it; chmod 600"
        )


#: The most read_secret reads: tokens, keys and small YAML files.
MAX_SECRET_FILE_BYTES = 1 << 20


def read_private(path: str | Path, what: str, max_bytes: int, *, missing_ok: bool = False) -> bytes | None:
    """The file's bytes; None if it does not exist and ``missing_ok``.
    Raises SecretFileError (naming ``what`` and the path) unless it is a
    regular file, not a symlink, owned by this uid, mode 0600 or stricter,
    at most ``max_bytes``. Every check is made on the open file (fstat), so
    the file cannot be swapped between the check and the read."""
    try:
        # O_NOFOLLOW: a planted symlink cannot point us at another file;
        # O_NONBLOCK: a FIFO in its place cannot hang the start.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        if missing_ok:
            return None
        raise SecretFileError(f"{what} {path}: cannot open: {exc.strerror}") from exc
    except OSError as exc:
        link = exc.errno == errno.ELOOP
        problem = "not a regular file (a symlink is refused)" if link else f"cannot open: {exc.strerror}"
        raise SecretFileError(f"{what} {path}: {problem}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{what} {path}: not a regular file (a symlink or special file is refused)")
        if st.st_uid != os.geteuid():
            raise SecretFileError(f"{what} {path}: owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})")
        if st.st_mode & 0o077:
            raise SecretFileError(
                f"{what} {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users read or write it; chmod 600"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise SecretFileError(f"{what} {path}: larger than {max_bytes} bytes")
    return data


def read_secret(path: str | Path, what: str) -> bytes:
    """The file's bytes, stripped (read_private's checks), never empty."""
    data = read_private(path, what, MAX_SECRET_FILE_BYTES)
    assert data is not None  # not missing_ok
    data = data.strip()
    if not data:
        raise SecretFileError(f"{what} {path}: empty")
    return data


def read_secret_text(path: str | Path, what: str) -> str:
    return read_secret(path, what).decode("utf-8")
