"""Agent authentication: a bearer token, a verified client certificate
(mTLS), or both. The principal comes from here and only from here; the
servicer never reads an identity from the request.

A certificate identifies an agent only through a URI SAN (e.g.
``spiffe://airlock/agent/NAME``) of a certificate the TLS layer verified
against the gateway's client CA, which must be dedicated to Airlock agents:
DNS SANs and the subject CN are names any CA hands out for other purposes,
so they never count."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence

from cryptography import x509

from airlock.common._secrets import read_secret_text
from airlock.gateway._config import Agent
from airlock.gateway._model import Principal

#: Shorter tokens are guessable; `airlock up` makes 43-character ones.
MIN_TOKEN_CHARS = 16


#: gRPC's auth-context key for the verified peer certificate (PEM).
_PEM_KEY = "x509_pem_cert"


def certificate_uris(pem: bytes) -> set[str]:
    """The URI SANs of a PEM certificate (empty when it has none or does not parse)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return set()
    return set(san.get_values_for_type(x509.UniformResourceIdentifier))


class Authenticator:
    def __init__(self, agents: Iterable[Agent]) -> None:
        self._by_digest: list[tuple[bytes, Principal]] = []
        self._by_identity: dict[str, Agent] = {}
        for agent in agents:
            if agent.tls_identity is not None:
                if agent.tls_identity in self._by_identity:
                    raise ValueError(f"agent {agent.id!r}: shares its tls_identity with another agent")
                self._by_identity[agent.tls_identity] = agent
            if agent.token_file is None and agent.token_sha256 is None:
                continue
            if agent.token_file is not None:
                token = read_secret_text(agent.token_file, f"agent {agent.id!r} token file")
                if len(token) < MIN_TOKEN_CHARS:
                    raise ValueError(f"agent {agent.id!r}: token in {agent.token_file} is shorter than 16 characters")
                digest = hashlib.sha256(token.encode()).digest()
            else:
                assert agent.token_sha256 is not None
                digest = bytes.fromhex(agent.token_sha256)
            if any(hmac.compare_digest(digest, known) for known, _ in self._by_digest):
                raise ValueError(f"agent {agent.id!r}: shares its token with another agent")
            self._by_digest.append((digest, Principal(agent.id, agent.profile, "token", agent.roles)))

    def authenticate(
        self, metadata: Sequence[tuple[str, str | bytes]], peer: Mapping[str, Iterable[bytes]] | None = None
    ) -> tuple[Principal | None, str]:
        """Returns the principal, or None and why not.

        ``peer`` is gRPC's auth context: names from a client certificate the
        TLS layer has already verified against the configured CA.
        """
        by_cert = self._from_certificate(peer or {})
        has_token = any(k == "authorization" for k, _ in metadata)
        if by_cert is not None and not has_token:
            return by_cert, ""
        by_token, why = self._from_token(metadata)
        if by_cert is not None and by_token is not None and by_cert.id != by_token.id:
            return None, "client certificate and token belong to different agents"
        if by_cert is not None and by_token is not None:
            return Principal(by_cert.id, by_cert.profile, "mtls+token", by_cert.roles), ""
        return by_token, why

    def _from_certificate(self, peer: Mapping[str, Iterable[bytes]]) -> Principal | None:
        if not self._by_identity:
            return None
        names: set[str] = set()
        for pem in peer.get(_PEM_KEY, ()):
            names |= certificate_uris(pem)
        matches = {self._by_identity[n].id: self._by_identity[n] for n in names if n in self._by_identity}
        if len(matches) != 1:
            # No agent, or a certificate naming two agents: neither is an identity.
            return None
        (agent,) = matches.values()
        return Principal(agent.id, agent.profile, "mtls", agent.roles)

    def _from_token(self, metadata: Sequence[tuple[str, str | bytes]]) -> tuple[Principal | None, str]:
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return None, "missing authorization metadata (expected 'Bearer <token>') or client certificate"
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
