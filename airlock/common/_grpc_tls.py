"""gRPC credentials from the TLS settings in airlock/common/_tls.py: the one
place the daemons, the CLI and the agent turn a ServerTLS or ClientTLS into
what grpc needs."""

from __future__ import annotations

from pathlib import Path

import grpc

from airlock.common._tls import ClientTLS, ServerTLS


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(tls.ca_file).read_bytes(),
        private_key=Path(tls.key_file).read_bytes() if tls.key_file else None,
        certificate_chain=Path(tls.cert_file).read_bytes() if tls.cert_file else None,
    )


def channel_options(tls: ClientTLS) -> list[tuple[str, str]]:
    return [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
