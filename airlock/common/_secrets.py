"""Reading secret files (tokens, keys) the way a daemon that holds them must.

A secret file must belong to the uid that reads it and be readable by no one
else (no group or other permission bits): the trust domains between the
gateway, the executor, OPA and the agents are drawn by the OS, so a token
another uid could read is a token that uid holds. The file is opened without
following a symlink at its last component, so a planted link cannot point a
daemon at someone else's file.
"""

from __future__ import annotations

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


def read_secret(path: str | Path, what: str) -> bytes:
    """The file's bytes, stripped, after check_secret_file."""
    check_secret_file(path, what)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        data = f.read().strip()
    if not data:
        raise SecretFileError(f"{what} {path}: empty")
    return data


def read_secret_text(path: str | Path, what: str) -> str:
    return read_secret(path, what).decode("utf-8")
