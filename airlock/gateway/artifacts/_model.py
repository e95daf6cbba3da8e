"""What an artifact store takes and gives, and how it refuses.

An artifact belongs to the principal that put it (the store's namespace is
the principal); its name is what the agent calls it, its content is
addressed by sha256. Every refusal is an ArtifactError with a stable
``code``, which is the audit reason and the metric label.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: The longest name, in UTF-8 bytes (a file name on every common filesystem).
MAX_NAME_BYTES = 255
_ID = re.compile(r"^art_[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """The root of every artifact refusal."""

    code = "artifact_error"


class ArtifactNameError(ArtifactError):
    code = "artifact_name_invalid"


class ArtifactNotFoundError(ArtifactError):
    """No such artifact for this principal (another principal's looks the same)."""

    code = "artifact_not_found"


class QuotaExceededError(ArtifactError):
    code = "artifact_quota_exceeded"


class ArtifactTooLargeError(ArtifactError):
    code = "artifact_too_large"


class ArtifactTruncatedError(ArtifactError):
    """Fewer bytes arrived than the put declared."""

    code = "artifact_truncated"


class ChecksumMismatchError(ArtifactError):
    code = "artifact_checksum_mismatch"


class StoreUnavailableError(ArtifactError):
    """The backend failed (disk, database, object store); nothing was changed."""

    code = "artifact_store_unavailable"


def check_name(name: str) -> str:
    """``name`` if it is a plain file name: not empty, not ``.`` or ``..``,
    no ``/`` or ``\\``, no NUL or other control character, at most
    MAX_NAME_BYTES in UTF-8, and in NFC (so two spellings of one name are
    never two artifacts)."""
    if not isinstance(name, str) or not name:
        raise ArtifactNameError("an artifact name must be a non-empty string")
    if name in {".", ".."}:
        raise ArtifactNameError(f"an artifact name cannot be {name!r}")
    if "/" in name or "\\" in name:
        raise ArtifactNameError("an artifact name cannot contain / or \\")
    if any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in name):
        raise ArtifactNameError("an artifact name cannot contain control, format or separator characters")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ArtifactNameError("an artifact name must be valid Unicode") from None
    if size > MAX_NAME_BYTES:
        raise ArtifactNameError(f"an artifact name is at most {MAX_NAME_BYTES} bytes in UTF-8 (got {size})")
    if unicodedata.normalize("NFC", name) != name:
        raise ArtifactNameError("an artifact name must be in Unicode NFC form")
    return name


def check_id(artifact_id: str) -> str:
    if not isinstance(artifact_id, str) or not _ID.match(artifact_id):
        raise ArtifactNotFoundError("no such artifact")
    return artifact_id


def check_sha256(digest: str) -> str:
    if not _SHA256.match(digest):
        raise ChecksumMismatchError("a sha256 is 64 lower-case hex digits")
    return digest


@dataclass(frozen=True)
class Quota:
    """What one principal may hold, and the largest single artifact."""

    max_bytes: int
    max_count: int
    max_artifact_bytes: int


@dataclass(frozen=True)
class PutRequest:
    principal: str
    name: str
    session: str = ""
    media_type: str = "application/octet-stream"
    expected_sha256: str | None = None
    """When given, the content must hash to it (else ChecksumMismatchError, nothing kept)."""
    expected_size: int | None = None
    """When given, fewer bytes is ArtifactTruncatedError and more is ArtifactTooLargeError (nothing kept)."""


@dataclass(frozen=True)
class ArtifactRecord:
    id: str
    principal: str
    session: str
    name: str
    sha256: str
    size: int
    media_type: str
    created_at: float

    def ref(self) -> dict[str, object]:
        """The reference a result and the model see: never the owner or a path."""
        return {
            "id": self.id,
            "name": self.name,
            "sha256": self.sha256,
            "size": self.size,
            "media_type": self.media_type,
        }
