"""The executor's egress certificate authority, for TLS inspection.

To read (and inject secrets into) HTTPS a sandbox sends through the proxy,
the proxy ends the sandbox's TLS itself, presenting a leaf certificate for
the host the sandbox asked for, and opens its own verified TLS to the real
server. EgressCA is the one CA those leaves chain to: its key lives in the
executor's private ``egress.ca_dir`` (ca.key, 0600) and never leaves this
process; only its certificate (ca.pem) is handed to sandboxes to trust.
LeafIssuer mints and caches the per-host server contexts; upstream_context
builds the client side towards the real server. The proxy
(airlock/executor/egress/proxy.py) wires them in; nothing here touches the
network.

Everything here runs on the executor's one asyncio loop and is not
thread-safe: LeafIssuer's cache is unguarded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shutil
import ssl
import stat
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from airlock.executor._errors import EgressSetupError
from airlock.executor.egress._private import read_private_file
from airlock.executor.egress.rules import normalize_host

log = logging.getLogger("airlock.executor")

#: File names inside the CA directory.
CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.pem"
#: Prefix of the names a new key and certificate are written under before
#: the rename; leftovers from a crash are removed at the next start.
TEMP_PREFIX = ".tmp-"
DEFAULT_CA_NAME = "Airlock egress CA"
CA_LIFETIME = timedelta(days=365)
#: A CA this close to its end is replaced (new key too) at start, so a
#: long-running executor never serves leaves from a CA about to lapse.
CA_RENEW_BEFORE = timedelta(days=30)
#: Back-dating of every certificate, for clocks (a sandbox's, a client's)
#: slightly behind ours.
CLOCK_SKEW = timedelta(hours=1)
DEFAULT_LEAF_LIFETIME = timedelta(hours=24)
#: A cached leaf this close to its end is issued again.
LEAF_RENEW_BEFORE = timedelta(hours=1)
DEFAULT_MAX_CACHED = 1024
#: The only ALPN protocol offered either way: the proxy parses HTTP/1.1, so
#: a client offering h2 as well gets http/1.1, and one offering h2 alone
#: gets no ALPN answer (it may fall back or give up; it never gets h2).
ALPN = ("http/1.1",)
#: The longest X.509 commonName; a longer host goes in the SAN only.
MAX_COMMON_NAME = 64
#: A ca.key larger than this is not one we wrote.
MAX_KEY_FILE = 64 * 1024


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EgressCA:
    """The CA's certificate and (private) key. Make one with load_or_create.

    The key is held only as a private attribute, used only to sign leaves
    (sign_leaf), and never shown by repr, logs or exceptions."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self._directory = directory
        self._key = key
        self._cert = cert
        self._cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value

    def __repr__(self) -> str:
        return f"EgressCA(directory={str(self._directory)!r}, fingerprint_sha256={self.fingerprint_sha256!r})"

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM: what sandboxes are given to trust."""
        return self._cert_pem

    @property
    def fingerprint_sha256(self) -> str:
        """SHA-256 of the certificate's DER, lower-case hex without separators."""
        return self._cert.fingerprint(hashes.SHA256()).hex()

    def sign_leaf(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        """Signs ``builder`` as issued by this CA (issuer and authority key id
        set here). A CA certificate signed this way is worthless: ours has
        path_length 0, so verifiers refuse any chain through it."""
        return (
            builder.issuer_name(self._cert.subject)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @classmethod
    def load_or_create(cls, directory: Path, *, name: str = DEFAULT_CA_NAME) -> EgressCA:
        """Loads ca.key and ca.pem from ``directory`` (created 0700 if missing),
        making a new pair when there is none, or when the certificate is
        missing, does not match the key, is not valid now or ends within
        CA_RENEW_BEFORE. Raises EgressSetupError for an unsafe directory or
        key file, or a key that is not ECDSA P-256."""
        _prepare_directory(directory)
        _remove_leftovers(directory)
        key = _read_key(directory / CA_KEY_FILE)
        if key is not None:
            cert = _read_matching_cert(directory / CA_CERT_FILE, key)
            if cert is not None:
                return cls(directory, key, cert)
            log.info("egress CA in %s is missing, expiring or does not match its key: making a new one", directory)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_ca_cert(key, name)
        _write_pair(directory, key, cert)
        ca = cls(directory, key, cert)
        log.info("egress CA created in %s, sha256 fingerprint %s", directory, ca.fingerprint_sha256)
        return ca


def _prepare_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # checked below, whatever it is
    except OSError as exc:
        raise EgressSetupError(f"egress CA directory {directory}: cannot create: {exc.strerror}") from exc
    try:
        st = directory.lstat()
    except OSError as exc:
        raise EgressSetupError(f"egress CA directory {directory}: cannot stat: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise EgressSetupError(f"egress CA directory {directory}: not a directory (a symlink is refused)")
    if st.st_uid != os.geteuid():
        raise EgressSetupError(
            f"egress CA directory {directory}: owned by uid {st.st_uid}, not by this process (uid {os.geteuid()})"
        )
    # Whoever can write here can swap in a key of their own: every sandbox
    # would then trust a CA someone else holds.
    if st.st_mode & 0o022:
        raise EgressSetupError(
            f"egress CA directory {directory}: mode {stat.S_IMODE(st.st_mode):04o} lets other users "
            "write to it; chmod 700"
        )


def _remove_leftovers(directory: Path) -> None:
    for path in directory.glob(f"{TEMP_PREFIX}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    """The key in ``path``, None when there is no file; EgressSetupError
    when the file is unsafe or not an ECDSA P-256 key."""
    data = read_private_file(path, "egress CA key", MAX_KEY_FILE, missing_ok=True)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    problem = "not a PEM private key" if key is None else "not an ECDSA P-256 key"
    # Never replaced silently: a key we did not write may be the operator's.
    raise EgressSetupError(f"egress CA key {path}: {problem}; delete ca.key and ca.pem to have a new CA made") from None


def _read_matching_cert(path: Path, key: ec.EllipticCurvePrivateKey) -> x509.Certificate | None:
    """The certificate in ``path`` if it is a usable CA certificate for
    ``key``, valid now and for more than CA_RENEW_BEFORE; else None."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    if cert.public_key() != key.public_key():
        return None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        cert.verify_directly_issued_by(cert)
    except (x509.ExtensionNotFound, ValueError, TypeError, InvalidSignature):
        return None
    if not constraints.ca:
        return None
    now = _utcnow()
    if cert.not_valid_before_utc > now or cert.not_valid_after_utc - now <= CA_RENEW_BEFORE:
        return None
    return cert


def _make_ca_cert(key: ec.EllipticCurvePrivateKey, name: str) -> x509.Certificate:
    now = _utcnow()
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Airlock")]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        # path_length 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        # Python 3.13's default VERIFY_X509_STRICT wants an AKI on every
        # certificate it checks; a sandbox may run one.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def _write_pair(directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    """Writes both under temporary names, then renames the certificate
    before the key: a crash in between leaves at worst a certificate without
    its key (or an old key with a new certificate), both of which the next
    start replaces; never a key without a certificate."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tag = secrets.token_hex(8)
    tmp_key = directory / f"{TEMP_PREFIX}{CA_KEY_FILE}.{tag}"
    tmp_cert = directory / f"{TEMP_PREFIX}{CA_CERT_FILE}.{tag}"
    try:
        _write_new(tmp_key, key_pem, 0o600)
        _write_new(tmp_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        tmp_cert.replace(directory / CA_CERT_FILE)
        tmp_key.replace(directory / CA_KEY_FILE)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        for path in (tmp_key, tmp_cert):
            with contextlib.suppress(OSError):
                path.unlink()
        raise EgressSetupError(f"egress CA directory {directory}: cannot write the CA: {exc.strerror}") from exc


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never write into a file someone else created; the mode is set
    # at creation (0600 for the key: not readable by anyone else for an
    # instant) and again after, as the umask may have taken bits off 0644.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True)
class _Cached:
    context: ssl.SSLContext
    renew_at: datetime


class LeafIssuer:
    """Server-side SSLContexts presenting a leaf for one host, signed by the CA.

    One context per host, cached (least recently used goes first beyond
    ``max_cached``) and issued again within LEAF_RENEW_BEFORE of its end.
    Not thread-safe: call it from the executor's event loop only. Issuing
    takes a few milliseconds, most of it OpenSSL parsing the PEM in
    load_cert_chain; a cached lookup a few microseconds
    (scripts/bench_egress_ca.py). Bounded by max_cached new hosts per
    lifetime, that is cheap enough to run on the loop."""

    def __init__(
        self,
        ca: EgressCA,
        *,
        max_cached: int = DEFAULT_MAX_CACHED,
        lifetime: timedelta = DEFAULT_LEAF_LIFETIME,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if max_cached <= 0:
            raise ValueError("max_cached must be > 0")
        if lifetime <= LEAF_RENEW_BEFORE:
            raise ValueError(f"lifetime must be longer than {LEAF_RENEW_BEFORE}")
        self._ca = ca
        self._max_cached = max_cached
        self._lifetime = lifetime
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def server_context(self, host: str) -> ssl.SSLContext:
        """The context for ``host``: a name (DNS SAN) or an IPv4/IPv6 literal
        (IP SAN; IPv6 with or without brackets). The host is normalised like
        the proxy's (rules.normalize_host); a form it refuses raises HostError."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        normal = normalize_host(host)
        now = self._clock()
        cached = self._cache.get(normal.name)
        if cached is not None and now < cached.renew_at:
            self._cache.move_to_end(normal.name)
            return cached.context
        not_after = min(now + self._lifetime, self._ca.certificate.not_valid_after_utc)
        context = self._issue(normal.name, normal.ip, now, not_after)
        self._cache[normal.name] = _Cached(context, not_after - LEAF_RENEW_BEFORE)
        self._cache.move_to_end(normal.name)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return context

    def _issue(
        self, name: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, now: datetime, not_after: datetime
    ) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        san: x509.GeneralName = x509.IPAddress(ip) if ip is not None else x509.DNSName(name)
        # A commonName for people reading the certificate; hosts longer than
        # X.509 allows go without one, and then RFC 5280 wants the SAN critical.
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if len(name) <= MAX_COMMON_NAME else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=not subject)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        leaf = self._ca.sign_leaf(builder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_RENEGOTIATION
        context.set_alpn_protocols(list(ALPN))
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self._ca.cert_pem
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _load_chain(context, chain + key_pem, self._ca.directory)
        return context


def _load_chain(context: ssl.SSLContext, pem: bytes, private_dir: Path) -> None:
    """load_cert_chain reads only files (the stdlib has no in-memory form).
    On Linux the file is a memfd, opened through /proc/self/fd: anonymous
    memory, never on a filesystem, gone when closed. Without memfd or /proc
    it is a file in a fresh 0700 folder under the CA directory, removed
    right after loading."""
    try:
        fd = os.memfd_create("airlock-egress-leaf", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        try:
            _write_all(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            pass  # /proc is not mounted: the file below
        else:
            return
        finally:
            os.close(fd)
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=private_dir)
    path = Path(folder) / "leaf.pem"
    try:
        _write_new(path, pem, 0o600)
        context.load_cert_chain(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        path.parent.rmdir()


def upstream_context(extra_anchors: Sequence[Path] = ()) -> ssl.SSLContext:
    """The client context towards the real server: the system trust store
    plus every CA in each ``extra_anchors`` PEM file, host names checked,
    TLS 1.2 or later, ALPN http/1.1 only. A file that cannot be read or
    holds no certificate raises EgressSetupError naming it."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    for path in extra_anchors:
        try:
            context.load_verify_locations(cafile=os.fspath(path))
        except ssl.SSLError as exc:  # before OSError, its base class
            raise EgressSetupError(f"egress trust anchor {path}: no PEM CA certificate in it ({exc.reason})") from exc
        except OSError as exc:
            raise EgressSetupError(f"egress trust anchor {path}: cannot read: {exc.strerror}") from exc
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN))
    return context
