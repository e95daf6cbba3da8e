"""Artifacts: what agents produce and consume, kept by the gateway behind an
explicit API, never reachable from a sandbox. ``ArtifactStore`` is the seam;
``LocalStore`` (a directory plus SQLite, the default) and ``S3Store``
(S3-compatible object storage) are its backends."""

from __future__ import annotations

from airlock.gateway.artifacts._model import (
    MAX_NAME_BYTES,
    ArtifactError,
    ArtifactNameError,
    ArtifactNotFoundError,
    ArtifactRecord,
    ArtifactTooLargeError,
    ArtifactTruncatedError,
    ChecksumMismatchError,
    PutRequest,
    Quota,
    QuotaExceededError,
    StoreUnavailableError,
    check_name,
)
from airlock.gateway.artifacts._store import ArtifactStore
from airlock.gateway.artifacts.local import LocalStore

__all__ = [
    "MAX_NAME_BYTES",
    "ArtifactError",
    "ArtifactNameError",
    "ArtifactNotFoundError",
    "ArtifactRecord",
    "ArtifactStore",
    "ArtifactTooLargeError",
    "ArtifactTruncatedError",
    "ChecksumMismatchError",
    "LocalStore",
    "PutRequest",
    "Quota",
    "QuotaExceededError",
    "StoreUnavailableError",
    "check_name",
]
