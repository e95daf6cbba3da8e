"""The seam the Invoke path uses: artifacts a call names as inputs, and what
a run leaves under /outputs stored as artifacts. Both go through the same
operations as ArtifactService (_ops.py): the policy decides (operations
"input" and "output"), the quota applies, every artifact is an audit event.
No grpc in here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import IO

from airlock.gateway._model import Principal
from airlock.gateway.artifacts._model import ArtifactRecord
from airlock.gateway.artifacts._ops import ArtifactDenied, ArtifactOp, ArtifactOps
from airlock.gateway.artifacts._store import CHUNK_BYTES


class ArtifactAccess:
    """``principals``: the gateway's agents by id (gateway.yaml), so that a
    principal named by id is decided with its profile; an id not in it has
    no profile (the policy denies unknown_profile)."""

    def __init__(self, ops: ArtifactOps, principals: Mapping[str, Principal] | None = None) -> None:
        self.ops = ops
        self._principals = dict(principals or {})

    def _principal(self, principal: str | Principal) -> Principal:
        if isinstance(principal, Principal):
            return principal
        return self._principals.get(principal) or Principal(principal, "")

    async def open_inputs(
        self, principal: str | Principal, session: str, ids: Sequence[str], max_bytes: int | None = None
    ) -> list[tuple[ArtifactRecord, bytes]]:
        """Each artifact's record and content, in order. Raises ArtifactDenied
        (artifact_not_found for an unknown id or another principal's, the
        policy's codes, artifact_store_unavailable, inputs_too_large) at the
        first refusal. Their sizes are added up before any content is read,
        and the reads stop at ``max_bytes``: a call naming large artifacts
        is refused without the gateway holding them in memory."""
        who = self._principal(principal)
        if max_bytes is not None:
            total = await self.ops.sizes(who.id, ids)
            if total > max_bytes:
                raise ArtifactDenied("inputs_too_large", f"the inputs are {total} bytes; at most {max_bytes}")
        out: list[tuple[ArtifactRecord, bytes]] = []
        read = 0
        for artifact_id in ids:
            answer = await self.ops.read(
                ArtifactOp("input", who, rpc="Invoke", session=session, artifact_id=artifact_id)
            )
            decision = answer.decision
            if not decision.allowed or answer.record is None or answer.chunks is None:
                raise ArtifactDenied(decision.code, decision.reasons[0].message, decision)
            parts: list[bytes] = []
            while (chunk := await self.ops.next_chunk(answer.chunks)) is not None:
                read += len(chunk)
                if max_bytes is not None and read > max_bytes:
                    close = getattr(answer.chunks, "close", None)
                    if close is not None:
                        close()
                    raise ArtifactDenied("inputs_too_large", f"the inputs are over {max_bytes} bytes")
                parts.append(chunk)
            out.append((answer.record, b"".join(parts)))
        return out

    async def save_output(
        self,
        principal: str | Principal,
        session: str,
        name: str,
        content: IO[bytes] | bytes,
        media_type: str = "",
    ) -> ArtifactRecord:
        """Stores one output of a call in the call's session. Raises
        ArtifactDenied (artifact_name_invalid, the policy's codes,
        artifact_too_large, artifact_quota_exceeded, ...)."""
        who = self._principal(principal)
        size = len(content) if isinstance(content, bytes) else await asyncio.to_thread(_size_of, content)
        chunks = _byte_chunks(content) if isinstance(content, bytes) else _file_chunks(content)
        answer = await self.ops.put(
            ArtifactOp("output", who, rpc="Invoke", session=session, name=name, media_type=media_type, size=size),
            chunks,
        )
        decision = answer.decision
        if not decision.allowed or answer.record is None:
            raise ArtifactDenied(decision.code, decision.reasons[0].message, decision)
        return answer.record


def _size_of(file: IO[bytes]) -> int | None:
    """The bytes left in a seekable file (None when it cannot seek)."""
    try:
        here = file.tell()
        end = file.seek(0, 2)
        file.seek(here)
    except (OSError, ValueError):
        return None
    return end - here


def _byte_chunks(content: bytes) -> Iterator[bytes]:
    for start in range(0, len(content), CHUNK_BYTES):
        yield content[start : start + CHUNK_BYTES]


def _file_chunks(file: IO[bytes]) -> Iterator[bytes]:
    # Read in the store's worker thread (the put consumes it there).
    while chunk := file.read(CHUNK_BYTES):
        yield chunk


__all__ = ["ArtifactAccess", "ArtifactDenied"]
