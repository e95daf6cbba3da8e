"""Artifacts: what agents produce and consume, kept by the gateway behind an
explicit API, never reachable from a sandbox. ``ArtifactStore`` is the seam;
``LocalStore`` (a directory plus SQLite, the default) and ``S3Store``
(S3-compatible object storage) are its backends. ``ArtifactOps`` decides,
performs and audits every operation (ArtifactService and the Invoke path);
``ArtifactAccess`` is the Invoke path's seam (inputs and outputs)."""

from __future__ import annotations

from airlock.common.names import MAX_NAME_BYTES
from airlock.gateway.artifacts._access import ArtifactAccess
from airlock.gateway.artifacts._model import (
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
from airlock.gateway.artifacts._ops import (
    Answer,
    ArtifactDecision,
    ArtifactDenied,
    ArtifactOp,
    ArtifactOps,
)
from airlock.gateway.artifacts._runtime import ArtifactRuntime, build_artifacts, open_store
from airlock.gateway.artifacts._store import ArtifactStore
from airlock.gateway.artifacts.local import LocalStore

__all__ = [
    "MAX_NAME_BYTES",
    "Answer",
    "ArtifactAccess",
    "ArtifactDecision",
    "ArtifactDenied",
    "ArtifactError",
    "ArtifactNameError",
    "ArtifactNotFoundError",
    "ArtifactOp",
    "ArtifactOps",
    "ArtifactRecord",
    "ArtifactRuntime",
    "ArtifactStore",
    "ArtifactTooLargeError",
    "ArtifactTruncatedError",
    "ChecksumMismatchError",
    "LocalStore",
    "PutRequest",
    "Quota",
    "QuotaExceededError",
    "StoreUnavailableError",
    "build_artifacts",
    "check_name",
    "open_store",
]
