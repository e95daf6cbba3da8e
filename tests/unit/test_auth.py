"""gateway._auth: bearer tokens -> Principal."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from airlock.common._secrets import SecretFileError
from airlock.gateway._auth import Authenticator
from airlock.gateway._config import Agent
from airlock.gateway._model import Principal

FILE_TOKEN = "file-token-0123456789abcdef"
SHA_TOKEN = "sha-token-abcdefghijklmnop"
ALICE = Principal("alice", "default", "token")
BOB = Principal("bob", "untrusted", "token")


@pytest.fixture
def auth(tmp_path: Path) -> Authenticator:
    token_file = tmp_path / "alice.token"
    token_file.write_text(FILE_TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    return Authenticator(
        [
            Agent(id="alice", token_file=str(token_file)),
            Agent(id="bob", profile="untrusted", token_sha256=hashlib.sha256(SHA_TOKEN.encode()).hexdigest()),
        ]
    )


@pytest.mark.parametrize(
    ("metadata", "principal", "error"),
    [
        pytest.param([], None, "missing authorization metadata", id="missing"),
        pytest.param([("x-other", "Bearer " + FILE_TOKEN)], None, "missing authorization metadata", id="other-key"),
        pytest.param(
            [("authorization", "Basic " + FILE_TOKEN)], None, "authorization must be 'Bearer <token>'", id="basic"
        ),
        pytest.param([("authorization", FILE_TOKEN)], None, "authorization must be 'Bearer <token>'", id="no-scheme"),
        pytest.param([("authorization", "Bearer")], None, "authorization must be 'Bearer <token>'", id="no-token"),
        pytest.param([("authorization", "Bearer ")], None, "authorization must be 'Bearer <token>'", id="empty-token"),
        pytest.param([("authorization", "Bearer wrong-token-0000000000")], None, "unknown token", id="unknown"),
        pytest.param([("authorization", "Bearer " + FILE_TOKEN[:-1])], None, "unknown token", id="prefix"),
        pytest.param(
            [("authorization", "Bearer " + FILE_TOKEN), ("authorization", "Bearer " + SHA_TOKEN)],
            None,
            "more than one authorization header",
            id="two-headers",
        ),
        pytest.param(
            [("authorization", "Bearer " + FILE_TOKEN), ("authorization", "Bearer " + FILE_TOKEN)],
            None,
            "more than one authorization header",
            id="two-equal-headers",
        ),
        pytest.param([("authorization", "Bearer " + FILE_TOKEN)], ALICE, "", id="token-file"),
        pytest.param([("authorization", "bearer " + FILE_TOKEN)], ALICE, "", id="scheme-case"),
        pytest.param([("authorization", ("Bearer " + FILE_TOKEN).encode())], ALICE, "", id="bytes-value"),
        pytest.param([("x-request-id", "1"), ("authorization", "Bearer " + SHA_TOKEN)], BOB, "", id="token-sha256"),
    ],
)
def test_authenticate(auth: Authenticator, metadata, principal, error) -> None:
    got, why = auth.authenticate(metadata)
    assert got == principal
    if error:
        assert error in why
    else:
        assert why == ""


def test_file_token_must_not_be_short(tmp_path: Path) -> None:
    token_file = tmp_path / "short.token"
    token_file.write_text("short\n", encoding="utf-8")
    token_file.chmod(0o600)
    with pytest.raises(ValueError, match="shorter than 16"):
        Authenticator([Agent(id="a", token_file=str(token_file))])


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda p: p.chmod(0o644), "mode 0644 lets other users read", id="world-readable"),
        pytest.param(lambda p: p.chmod(0o640), "mode 0640 lets other users read", id="group-readable"),
        pytest.param(lambda p: os.chown(p, 65534, 65534), "owned by uid 65534", id="other-owner"),
        pytest.param(
            lambda p: (p.rename(p.with_suffix(".real")), p.symlink_to(p.with_suffix(".real"))),
            "not a regular file",
            id="symlink",
        ),
    ],
)
def test_token_file_must_be_private_to_the_gateway(tmp_path: Path, setup, message) -> None:
    token_file = tmp_path / "alice.token"
    token_file.write_text(FILE_TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    setup(token_file)
    with pytest.raises(SecretFileError, match=message):
        Authenticator([Agent(id="alice", token_file=str(token_file))])


def _certificate(*, uris: list[str] = (), dns: list[str] = (), cn: str = "x") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    names = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


CAROL_URI = "spiffe://airlock/agent/carol"


@pytest.fixture
def cert_auth() -> Authenticator:
    return Authenticator([Agent(id="carol", tls_identity=CAROL_URI)])


@pytest.mark.parametrize(
    ("pem", "who"),
    [
        pytest.param(lambda: _certificate(uris=[CAROL_URI]), "carol", id="uri-san"),
        pytest.param(lambda: _certificate(dns=[CAROL_URI], cn=CAROL_URI), None, id="dns-and-cn-never-count"),
        pytest.param(lambda: _certificate(uris=["spiffe://airlock/agent/other"]), None, id="other-uri"),
        pytest.param(
            lambda: b"-----BEGIN CERTIFICATE-----\nnot a cert\n-----END CERTIFICATE-----\n", None, id="garbage"
        ),
    ],
)
def test_certificate_identity_is_a_uri_san_only(cert_auth: Authenticator, pem, who) -> None:
    got, _ = cert_auth.authenticate([], {"x509_pem_cert": [pem()]})
    assert (got.id if got else None) == who


def test_tls_identity_must_be_a_uri() -> None:
    with pytest.raises(ValueError, match="must be a URI SAN"):
        Agent(id="carol", tls_identity="carol.example")


def test_roles_come_from_config() -> None:
    auth = Authenticator(
        [Agent(id="op", token_sha256=hashlib.sha256(SHA_TOKEN.encode()).hexdigest(), roles=("operator", "approver"))]
    )
    got, _ = auth.authenticate([("authorization", "Bearer " + SHA_TOKEN)])
    assert got is not None
    assert got.roles == ("operator", "approver")
    with pytest.raises(ValueError, match="unknown role 'root'"):
        Agent(id="x", token_sha256="0" * 64, roles=("root",))  # type: ignore[arg-type]
