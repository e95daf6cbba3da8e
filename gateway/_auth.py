"""Bearer-token authentication of agents. The principal comes from here and
only from here; the servicer never reads an identity from the request."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway._config import Agent
from gateway._model import Principal

#: Shorter tokens are guessable; `airlock up` makes 43-character ones.
MIN_TOKEN_CHARS = 16


class TokenAuthenticator:
    def __init__(self, agents: Iterable[Agent]) -> None:
        self._by_digest: list[tuple[bytes, Principal]] = []
        for agent in agents:
            if agent.token_file is not None:
                token = Path(agent.token_file).read_text(encoding="utf-8").strip()
                if len(token) < MIN_TOKEN_CHARS:
                    raise ValueError(f"agent {agent.id!r}: token in {agent.token_file} is shorter than 16 characters")
                digest = hashlib.sha256(token.encode()).digest()
            else:
                assert agent.token_sha256 is not None
                digest = bytes.fromhex(agent.token_sha256)
            if any(hmac.compare_digest(digest, known) for known, _ in self._by_digest):
                raise ValueError(f"agent {agent.id!r}: shares its token with another agent")
            self._by_digest.append((digest, Principal(agent.id, agent.profile, "token")))

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> tuple[Principal | None, str]:
        """Returns the principal, or None and why not."""
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return None, "missing authorization metadata (expected 'Bearer <token>')"
        if len(values) > 1:
            return None, "more than one authorization header"
        value = values[0] if isinstance(values[0], str) else values[0].decode(errors="replace")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None, "authorization must be 'Bearer <token>'"
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: Principal | None = None
        # Compare against every agent in constant time so timing reveals
        # neither which agent matched nor how much of a digest did.
        for known, principal in self._by_digest:
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            return None, "unknown token"
        return found, ""
