"""The egress CA key and the secrets file are read with the one private-file
reader every daemon uses (airlock/common/_secrets.py); here a refusal
becomes EgressSetupError, which leaves egress unavailable."""

from __future__ import annotations

from pathlib import Path

from airlock.common._secrets import SecretFileError, read_private
from airlock.executor._errors import EgressSetupError


def read_private_file(path: Path, what: str, max_bytes: int, *, missing_ok: bool = False) -> bytes | None:
    try:
        return read_private(path, what, max_bytes, missing_ok=missing_ok)
    except SecretFileError as exc:
        raise EgressSetupError(str(exc)) from exc
