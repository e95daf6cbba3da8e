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

from airlock.common.names import name_problem
from airlock.gateway._input import FIELD_CAPS

#: The longest name, in UTF-8 bytes (a file name on every common filesystem).
#: The longest media type, in bytes (RFC 6838: 127 per token).
MAX_MEDIA_TYPE_BYTES = 255
#: The most entries one ListArtifacts answer carries (the newest; 1000 of
#: the largest possible entries stay well under the 4 MiB message cap).
MAX_LISTED = 1000
_ID = re.compile(r"art_[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: RFC 6838 ``type/subtype``, each a restricted-name (no parameters).
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(f"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")


class ArtifactError(Exception):
    """The root of every artifact refusal."""

    code = "artifact_error"


class ArtifactNameError(ArtifactError):
    code = "artifact_name_invalid"


class ArtifactHeaderError(ArtifactError):
    """A put's header is malformed: a session id, media type or size."""

    code = "artifact_header_invalid"


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
    """``name`` if it is a plain file name (airlock.common.names: the rule
    the executor applies to /inputs and /outputs too)."""
    if not isinstance(name, str):
        raise ArtifactNameError("an artifact name must be a string")
    problem = name_problem(name)
    if problem is not None:
        raise ArtifactNameError(f"an artifact name {problem}")
    return name


def check_id(artifact_id: str) -> str:
    if not isinstance(artifact_id, str) or not _ID.fullmatch(artifact_id):
        raise ArtifactNotFoundError("no such artifact")
    return artifact_id


def check_sha256(digest: str) -> str:
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise ChecksumMismatchError("a sha256 is 64 lower-case hex digits")
    return digest


def check_session(session: str) -> str:
    """``session`` if it is a session id Invoke would take (at most
    FIELD_CAPS["session_id"] characters) without control characters;
    empty is the principal's shared space."""
    limit = FIELD_CAPS["session_id"]
    if not isinstance(session, str) or len(session) > limit:
        raise ArtifactHeaderError(f"a session id is at most {limit} characters")
    if any(unicodedata.category(c) in {"Cc", "Cf", "Cs", "Zl", "Zp"} for c in session):
        raise ArtifactHeaderError("a session id cannot contain control, format or separator characters")
    return session


def check_media_type(media_type: str) -> str:
    """``media_type`` if it is an RFC 6838 ``type/subtype`` (printable
    ASCII, no parameters, at most MAX_MEDIA_TYPE_BYTES)."""
    if (
        not isinstance(media_type, str)
        or len(media_type) > MAX_MEDIA_TYPE_BYTES
        or not _MEDIA_TYPE.fullmatch(media_type)
    ):
        raise ArtifactHeaderError(
            f"a media type is type/subtype (RFC 6838 tokens, at most {MAX_MEDIA_TYPE_BYTES} bytes, no parameters)"
        )
    return media_type


def check_size(size: int | None) -> int | None:
    """A declared size: none, or not negative."""
    if size is not None and size < 0:
        raise ArtifactHeaderError("a declared size cannot be negative")
    return size


def check_header(*, session: str, media_type: str, size: int | None) -> None:
    """A put's header fields other than the name (which has its own code);
    an empty media type is the default."""
    check_session(session)
    if media_type:
        check_media_type(media_type)
    check_size(size)


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
