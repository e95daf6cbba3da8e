"""TLS settings shared by the daemons and the CLI (plain data: the gRPC
credentials built from them are in airlock/common/_grpc_tls.py, so config
objects never import the transport). Plain TCP is never offered: a TCP
listener requires TLS, and a remote executor requires mutual TLS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerTLS:
    """A TLS listener."""

    cert_file: str
    """PEM certificate (chain) the server presents."""
    key_file: str
    """PEM private key of that certificate."""
    client_ca_file: str | None = None
    """CA bundle for client certificates; when set, clients must present one (mTLS)."""

    def resolved(self, base: Path) -> ServerTLS:
        return ServerTLS(
            cert_file=str(base / self.cert_file),
            key_file=str(base / self.key_file),
            client_ca_file=str(base / self.client_ca_file) if self.client_ca_file else None,
        )


@dataclass(frozen=True)
class ClientTLS:
    """How a client verifies the server and, for mTLS, proves itself."""

    ca_file: str
    """CA bundle that signed the server's certificate."""
    cert_file: str | None = None
    """Client certificate for mTLS."""
    key_file: str | None = None
    """Private key of the client certificate."""
    server_name: str | None = None
    """Name to verify the server certificate against, when it differs from the address."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls: cert_file and key_file go together")

    def resolved(self, base: Path) -> ClientTLS:
        return ClientTLS(
            ca_file=str(base / self.ca_file),
            cert_file=str(base / self.cert_file) if self.cert_file else None,
            key_file=str(base / self.key_file) if self.key_file else None,
            server_name=self.server_name,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """For an HTTPS client (OPA over https): verify against ca_file, present the client certificate."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx
