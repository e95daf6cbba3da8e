"""The egress CA (airlock/executor/egress/ca.py): its files on disk, and real
TLS handshakes over loopback against the leaves it issues."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airlock.executor._errors import EgressSetupError, HostError
from airlock.executor.egress import ca as ca_module
from airlock.executor.egress.ca import EgressCA, LeafIssuer, upstream_context


@dataclass
class Outcome:
    client_error: Exception | None
    server_error: Exception | None
    alpn: str | None
    leaf: x509.Certificate | None


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str, *, alpn: tuple[str, ...] = ()
) -> Outcome:
    """One TLS handshake over a loopback TCP connection, the server in a thread."""
    server_error: list[Exception] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(5)
                with server.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # until the client closes
            except (OSError, ssl.SSLError) as exc:
                server_error.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        if alpn:
            client.set_alpn_protocols(list(alpn))
        client_error: Exception | None = None
        selected = None
        leaf = None
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                selected = tls.selected_alpn_protocol()
                der = tls.getpeercert(binary_form=True)
                leaf = x509.load_der_x509_certificate(der) if der else None
        except (OSError, ssl.SSLError) as exc:
            client_error = exc
        thread.join(5)
    return Outcome(client_error, server_error[0] if server_error else None, selected, leaf)


def trusting(ca: EgressCA) -> ssl.SSLContext:
    """A client that trusts the CA's certificate and nothing else."""
    return ssl.create_default_context(cadata=ca.cert_pem.decode("ascii"))


@pytest.fixture
def ca(tmp_path: Path) -> EgressCA:
    return EgressCA.load_or_create(tmp_path / "egress-ca")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_hand_made_ca(directory: Path, *, not_after: datetime, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """A CA pair written the way load_or_create would, but with our own dates; returns the key PEM."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hand made")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=300))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / "ca.key").write_bytes(key_pem)
    (directory / "ca.key").chmod(0o600)
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_pem


# --- the CA on disk ---


def test_a_new_ca_has_private_files_and_the_right_extensions(tmp_path: Path, ca: EgressCA) -> None:
    directory = tmp_path / "egress-ca"
    assert mode(directory) == 0o700
    assert mode(directory / "ca.key") == 0o600
    assert mode(directory / "ca.pem") == 0o644
    assert sorted(p.name for p in directory.iterdir()) == ["ca.key", "ca.pem"]
    assert (directory / "ca.pem").read_bytes() == ca.cert_pem

    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Airlock egress CA"
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=364) < lifetime <= timedelta(days=365)
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert ca.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    assert len(ca.fingerprint_sha256) == 64


def test_the_key_never_shows_in_repr(tmp_path: Path, ca: EgressCA) -> None:
    key_pem = (tmp_path / "egress-ca" / "ca.key").read_bytes()
    text = repr(ca)
    assert ca.fingerprint_sha256 in text
    assert "PRIVATE" not in text
    assert key_pem.decode() not in text


def test_a_second_start_loads_the_same_ca(tmp_path: Path, ca: EgressCA) -> None:
    again = EgressCA.load_or_create(tmp_path / "egress-ca")
    assert again.fingerprint_sha256 == ca.fingerprint_sha256
    assert again.cert_pem == ca.cert_pem


def test_the_name_is_the_subject(tmp_path: Path) -> None:
    ca = EgressCA.load_or_create(tmp_path / "d", name="Test CA")
    subject = x509.load_pem_x509_certificate(ca.cert_pem).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test CA"


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(tmp_path: Path, ca: EgressCA, bad_mode: int) -> None:
    key = tmp_path / "egress-ca" / "ca.key"
    key.chmod(bad_mode)
    with pytest.raises(EgressSetupError, match=f"ca.key: mode {bad_mode:04o} lets other users read or write it"):
        EgressCA.load_or_create(tmp_path / "egress-ca")
    assert key.exists()  # refused, not replaced


def test_a_symlinked_key_is_refused(tmp_path: Path, ca: EgressCA) -> None:
    directory = tmp_path / "egress-ca"
    (directory / "ca.key").rename(tmp_path / "elsewhere.key")
    (directory / "ca.key").symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(EgressSetupError, match=r"ca.key: not a regular file \(a symlink is refused\)"):
        EgressCA.load_or_create(directory)


def test_a_key_that_is_not_p256_is_refused(tmp_path: Path, ca: EgressCA) -> None:
    key = tmp_path / "egress-ca" / "ca.key"
    other = ec.generate_private_key(ec.SECP384R1())
    key.write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(EgressSetupError, match=r"not an ECDSA P-256 key; delete ca\.key and ca\.pem"):
        EgressCA.load_or_create(tmp_path / "egress-ca")
    key.write_bytes(b"garbage")
    with pytest.raises(EgressSetupError, match="not a PEM private key"):
        EgressCA.load_or_create(tmp_path / "egress-ca")


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir()
    directory.chmod(0o770)
    with pytest.raises(EgressSetupError, match="mode 0770 lets other users write to it; chmod 700"):
        EgressCA.load_or_create(directory)
    (tmp_path / "file").write_text("")
    with pytest.raises(EgressSetupError, match="not a directory"):
        EgressCA.load_or_create(tmp_path / "file")


def test_a_ca_near_its_end_is_replaced_key_and_all(tmp_path: Path) -> None:
    directory = tmp_path / "egress-ca"
    old_key = write_hand_made_ca(directory, not_after=datetime.now(UTC) + timedelta(days=29))
    ca = EgressCA.load_or_create(directory)
    assert (directory / "ca.key").read_bytes() != old_key
    assert x509.load_pem_x509_certificate(ca.cert_pem).not_valid_after_utc > datetime.now(UTC) + timedelta(days=300)
    assert mode(directory / "ca.key") == 0o600
    assert mode(directory / "ca.pem") == 0o644


def test_a_ca_with_time_left_is_kept(tmp_path: Path) -> None:
    directory = tmp_path / "egress-ca"
    key_pem = write_hand_made_ca(directory, not_after=datetime.now(UTC) + timedelta(days=31))
    cert_pem = (directory / "ca.pem").read_bytes()
    assert EgressCA.load_or_create(directory).cert_pem == cert_pem
    assert (directory / "ca.key").read_bytes() == key_pem


def test_a_certificate_of_another_key_or_none_at_all_is_replaced(tmp_path: Path, ca: EgressCA) -> None:
    directory = tmp_path / "egress-ca"
    key_pem = (directory / "ca.key").read_bytes()
    other = tmp_path / "other"
    write_hand_made_ca(other, not_after=datetime.now(UTC) + timedelta(days=200))
    (directory / "ca.pem").write_bytes((other / "ca.pem").read_bytes())
    replaced = EgressCA.load_or_create(directory)
    assert replaced.fingerprint_sha256 != ca.fingerprint_sha256
    assert (directory / "ca.key").read_bytes() != key_pem
    (directory / "ca.pem").unlink()
    assert EgressCA.load_or_create(directory).fingerprint_sha256 != replaced.fingerprint_sha256


def test_leftovers_of_a_crash_are_removed(tmp_path: Path, ca: EgressCA) -> None:
    directory = tmp_path / "egress-ca"
    (directory / ".tmp-ca.key.dead").write_bytes(b"half a key")
    (directory / ".tmp-leafdir").mkdir()
    (directory / ".tmp-leafdir" / "leaf.pem").write_bytes(b"x")
    assert EgressCA.load_or_create(directory).fingerprint_sha256 == ca.fingerprint_sha256
    assert sorted(p.name for p in directory.iterdir()) == ["ca.key", "ca.pem"]


# --- leaves, over real TLS ---


def test_a_leaf_is_trusted_for_its_host_and_no_other(ca: EgressCA) -> None:
    issuer = LeafIssuer(ca)
    ok = handshake(issuer.server_context("a.test"), trusting(ca), "a.test")
    assert ok.client_error is None
    assert ok.server_error is None
    wrong = handshake(issuer.server_context("a.test"), trusting(ca), "b.test")
    assert isinstance(wrong.client_error, ssl.SSLCertVerificationError)
    assert "b.test" in str(wrong.client_error)


def test_a_leaf_from_another_ca_is_not_trusted(tmp_path: Path, ca: EgressCA) -> None:
    other = EgressCA.load_or_create(tmp_path / "other")
    outcome = handshake(LeafIssuer(other).server_context("a.test"), trusting(ca), "a.test")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)


def test_the_leaf_certificate(ca: EgressCA) -> None:
    before = datetime.now(UTC)
    leaf = handshake(LeafIssuer(ca).server_context("Api.Example.TEST."), trusting(ca), "api.example.test").leaf
    assert leaf is not None
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["api.example.test"]
    assert not san.critical  # the subject has a commonName
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.issuer == ca_cert.subject
    leaf.verify_directly_issued_by(ca_cert)
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    assert timedelta(minutes=59) < before - leaf.not_valid_before_utc <= timedelta(hours=1, seconds=5)
    assert timedelta(hours=23, minutes=59) < leaf.not_valid_after_utc - before <= timedelta(hours=24, seconds=5)


@pytest.mark.parametrize(("host", "server_hostname"), [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1")])
def test_an_ip_literal_gets_an_ip_san(ca: EgressCA, host: str, server_hostname: str) -> None:
    outcome = handshake(LeafIssuer(ca).server_context(host), trusting(ca), server_hostname)
    assert outcome.client_error is None
    assert outcome.leaf is not None
    san = outcome.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [server_hostname]
    assert san.get_values_for_type(x509.DNSName) == []
    assert handshake(LeafIssuer(ca).server_context(host), trusting(ca), "10.9.9.9").client_error is not None


def test_a_host_too_long_for_a_common_name_has_a_critical_san_only(ca: EgressCA) -> None:
    host = ("a" * 60 + ".") * 3 + "test"
    outcome = handshake(LeafIssuer(ca).server_context(host), trusting(ca), host)
    assert outcome.client_error is None
    assert outcome.leaf is not None
    assert len(outcome.leaf.subject) == 0
    assert outcome.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_a_host_the_proxy_would_refuse_is_refused(ca: EgressCA) -> None:
    with pytest.raises(HostError):
        LeafIssuer(ca).server_context("0x7f000001")
    with pytest.raises(HostError):
        LeafIssuer(ca).server_context("bad host")


def test_alpn_is_http11_even_when_h2_is_offered(ca: EgressCA) -> None:
    outcome = handshake(LeafIssuer(ca).server_context("a.test"), trusting(ca), "a.test", alpn=("h2", "http/1.1"))
    assert outcome.client_error is None
    assert outcome.alpn == "http/1.1"


def test_the_server_context_settings(ca: EgressCA) -> None:
    context = LeafIssuer(ca).server_context("a.test")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_NONE  # sandboxes present no client certificate


def test_cache_hits_lru_eviction_and_renewal(ca: EgressCA) -> None:
    now = [datetime.now(UTC)]
    issuer = LeafIssuer(ca, max_cached=2, lifetime=timedelta(hours=3), clock=lambda: now[0])
    a = issuer.server_context("a.test")
    assert issuer.server_context("A.test.") is a
    b = issuer.server_context("b.test")
    assert issuer.server_context("a.test") is a  # a is now the most recent
    issuer.server_context("c.test")  # evicts b
    assert len(issuer) == 2
    assert issuer.server_context("a.test") is a
    assert issuer.server_context("b.test") is not b
    now[0] += timedelta(hours=1, minutes=59)
    assert issuer.server_context("a.test") is a
    now[0] += timedelta(minutes=2)  # within an hour of the end
    renewed = issuer.server_context("a.test")
    assert renewed is not a
    assert issuer.server_context("a.test") is renewed


def test_leaf_issuer_arguments_are_checked(ca: EgressCA) -> None:
    with pytest.raises(ValueError, match="max_cached"):
        LeafIssuer(ca, max_cached=0)
    with pytest.raises(ValueError, match="lifetime"):
        LeafIssuer(ca, lifetime=timedelta(minutes=30))


def test_without_memfd_the_chain_goes_through_a_private_file_removed_at_once(
    tmp_path: Path, ca: EgressCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_memfd(*_: object) -> int:
        raise OSError("no memfd here")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    created: list[int] = []
    real_write_new = ca_module._write_new

    def spy(path: Path, data: bytes, file_mode: int) -> None:
        real_write_new(path, data, file_mode)
        created.append(mode(path.parent))
        created.append(mode(path))

    monkeypatch.setattr(ca_module, "_write_new", spy)
    outcome = handshake(LeafIssuer(ca).server_context("a.test"), trusting(ca), "a.test")
    assert outcome.client_error is None
    assert created == [0o700, 0o600]
    assert sorted(p.name for p in (tmp_path / "egress-ca").iterdir()) == ["ca.key", "ca.pem"]


# --- the upstream side ---


def test_upstream_context_trusts_an_extra_anchor_only_when_given(tmp_path: Path, ca: EgressCA) -> None:
    upstream_ca = EgressCA.load_or_create(tmp_path / "upstream-ca")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(upstream_ca.cert_pem)
    server = LeafIssuer(upstream_ca).server_context("up.test")

    with_anchor = upstream_context([anchor])
    trusted = handshake(server, with_anchor, "up.test")
    assert trusted.client_error is None
    assert trusted.alpn == "http/1.1"
    assert isinstance(handshake(server, upstream_context(), "up.test").client_error, ssl.SSLCertVerificationError)
    wrong_name = handshake(server, with_anchor, "other.test")
    assert isinstance(wrong_name.client_error, ssl.SSLCertVerificationError)
    # Our own CA is not an anchor for upstreams unless given.
    own = handshake(LeafIssuer(ca).server_context("up.test"), with_anchor, "up.test")
    assert isinstance(own.client_error, ssl.SSLCertVerificationError)


def test_upstream_context_settings() -> None:
    context = upstream_context()
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_an_unusable_anchor_file_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(EgressSetupError, match=r"missing\.pem: cannot read"):
        upstream_context([tmp_path / "missing.pem"])
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(EgressSetupError, match=r"empty\.pem: no PEM CA certificate in it"):
        upstream_context([empty])
