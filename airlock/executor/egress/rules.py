"""What the egress proxy allows: host normalisation, the allowlist globs and
the resolved-address check. Pure functions, no sockets, so every odd host
form is unit-tested.

The policy (policies/airlock/egress) builds the allowlist from host names; it
cannot see what a name resolves to. This module is the other half: the proxy
normalises the host the sandbox asked for exactly as the policy normalised
the entries, matches it, and then checks every address the name resolves to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from airlock.executor._errors import HostError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: One DNS label after IDNA encoding (letters, digits, hyphen; underscore is
#: seen in real names such as _dmarc, so it is kept).
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
#: A label inet_aton would read as a number: 127, 0177, 0x7f.
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
#: RFC 1035 limits: a name of at most 253 characters (255 with brackets or a trailing dot).
MAX_NAME = 253
MAX_RAW_HOST = 255
#: Deprecated, but still routed by some stacks; never a public destination.
SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")
#: The cloud metadata endpoints, named so the deny reason says so: AWS/GCP/
#: Azure/OpenStack (169.254.169.254), AWS over IPv6 (fd00:ec2::254), Alibaba
#: (100.100.100.200) and Azure's WireServer (168.63.129.16, which hands a VM
#: its provisioning secrets and answers only from inside Azure).
METADATA = tuple(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16")
)
#: What egress_allow_cidrs can never open, whatever the registry says: the
#: host itself (loopback; 0.0.0.0 and :: reach the local host on Linux),
#: link-local (where metadata services live) and the metadata addresses.
NEVER_OPEN: tuple[tuple[IPNetwork, str], ...] = (
    # The metadata addresses first, so that the reason names them.
    *((ipaddress.ip_network(a), "the cloud metadata address") for a in METADATA),
    (ipaddress.IPv4Network("127.0.0.0/8"), "a loopback address"),
    (ipaddress.IPv4Network("0.0.0.0/8"), "an unspecified (this-host) address"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.IPv6Network("::1/128"), "a loopback address"),
    (ipaddress.IPv6Network("::/128"), "an unspecified (this-host) address"),
    (ipaddress.IPv6Network("fe80::/10"), "a link-local address"),
)
#: IPv6 forms that carry an IPv4 address. They are judged by the IPv4 they
#: carry and never dialled: a 6to4 or Teredo address sends the connection
#: through a public relay, NAT64 through the host's translator, and a
#: mapped or compatible one is the IPv4 address under another spelling.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")
#: NAT64 prefixes (RFC 6052 well-known, RFC 8215 local use).
NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


@dataclass(frozen=True)
class Host:
    """A normalised destination host: a lower-case ASCII name, or an IP."""

    name: str
    ip: IPAddress | None = None

    @property
    def text(self) -> str:
        return f"[{self.name}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.name


def normalize_host(raw: str) -> Host:
    """Lower case, one trailing dot off, IDN to punycode, brackets off IPv6.

    A dotted-quad IPv4 or an IPv6 literal comes back as an IP. Any other
    numeric form (2130706433, 0x7f000001, 0177.0.0.1, 127.1) is refused: the
    C resolver reads them as addresses, so they exist only to slip past
    name rules (smokescreen's IP-literal bypass).
    """
    host = raw.strip()
    if not host or len(host) > MAX_RAW_HOST:
        raise HostError("bad_host", "empty or over-long host")
    if host.startswith("["):
        if not host.endswith("]"):
            raise HostError("bad_host", f"unbalanced brackets in {raw!r}")
        try:
            ip6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise HostError("bad_host", f"{raw!r} is not an IPv6 address") from exc
        if ip6.scope_id:
            # A zone id (%eth0) names a host interface: never a destination.
            raise HostError("bad_host", f"{raw!r} carries a zone id")
        return Host(str(ip6), ip6)
    host = host.lower().removesuffix(".")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise HostError("bad_host", f"{raw!r} is not a valid international domain name") from exc
    labels = host.split(".")
    if all(_NUMERIC_LABEL.match(label) for label in labels):
        try:
            ip4 = ipaddress.IPv4Address(host)
        except ValueError:
            raise HostError(
                "ip_literal", f"{raw!r} is a numeric IP form other than a dotted quad; always denied"
            ) from None
        return Host(str(ip4), ip4)
    if not all(_LABEL.match(label) for label in labels) or len(host) > MAX_NAME:
        raise HostError("bad_host", f"{raw!r} is not a valid host name")
    return Host(host)


@dataclass(frozen=True)
class Entry:
    """One allowlist entry: host glob (or IP) and port."""

    host: str
    port: int
    pattern: re.Pattern[str]


def parse_entry(text: str) -> Entry:
    """``host:port`` as the policy's effective allowlist writes it."""
    host_text, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) <= 65535:  # noqa: PLR2004 - the port range
        raise HostError("bad_entry", f"allowlist entry {text!r} is not host:port")
    host = host_text.lower()
    if host.startswith("["):
        host = str(ipaddress.IPv6Address(host[1:-1]))
        return Entry(host, int(port_text), re.compile(re.escape(host)))
    # OPA's glob.match with "." as delimiter: "*" stays within one label,
    # "**" crosses labels.
    parts = [".*" if p == "**" else "[^.]*" if p == "*" else re.escape(p) for p in re.split(r"(\*\*|\*)", host)]
    return Entry(host, int(port_text), re.compile("".join(parts)))


class Allowlist:
    """The effective allowlist of one call."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.entries = tuple(parse_entry(e) for e in entries)

    def check(self, host: Host, port: int) -> tuple[str, str] | None:
        """None when allowed, else (reason code, message)."""
        same_host = [e for e in self.entries if e.pattern.fullmatch(host.name)]
        if host.ip is not None:
            # An IP only ever matches an entry that lists it literally.
            same_host = [e for e in same_host if e.host == host.name]
            if not same_host:
                return "ip_literal", f"IP address {host.text} is not listed literally in the egress allowlist"
        if not same_host:
            return "host_not_allowed", f"{host.text} is not in the egress allowlist"
        if not any(e.port == port for e in same_host):
            ports = ", ".join(sorted({str(e.port) for e in same_host}))
            return "port_not_allowed", f"{host.text}:{port} is not allowed (allowed ports: {ports})"
        return None


def parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def address_problem(ip: IPAddress, allowed: tuple[IPNetwork, ...]) -> str | None:
    """None when the address passes, else why not.

    Only globally routable unicast addresses pass, unless the registry lists
    the address's network explicitly (egress_allow_cidrs); loopback,
    link-local and metadata addresses never pass (NEVER_OPEN). An IPv6 form
    that carries an IPv4 address is judged by that IPv4 address; passing
    does not make it dialable (see embedded_ipv4).
    """
    for net, what in NEVER_OPEN:
        if ip.version == net.version and ip in net:
            opened = any(ip.version == n.version and ip in n for n in allowed)
            return f"{ip} is {what}" + ("; egress_allow_cidrs never opens it" if opened else "")
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            kind, carried = embedded
            for v4 in carried:
                problem = address_problem(v4, allowed)
                if problem is not None:
                    return f"{ip} is a {kind} address that carries {problem}"
            return None
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip in SITE_LOCAL:
        return f"{ip} is a site-local address"
    return _kind_problem(ip)


def _kind_problem(ip: IPAddress) -> str | None:
    if ip in METADATA:
        return f"{ip} is the cloud metadata address"
    for flag, what in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, flag):
            return f"{ip} is a {what} address"
    if not ip.is_global:
        return f"{ip} is not a globally routable address"
    return None


def embedded_ipv4(  # noqa: PLR0911 - one answer per kind of address
    ip: IPAddress,
) -> tuple[str, tuple[ipaddress.IPv4Address, ...]] | None:
    """The kind of an IPv6 address that carries IPv4 addresses, and those
    addresses; None for an ordinary address. Such an address is never
    dialled, whatever its IPv4 addresses are."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in IPV4_MAPPED:
        return "IPv4-mapped", (low32,)
    if ip in IPV4_TRANSLATED:
        return "IPv4-translated", (low32,)
    if ip in IPV4_COMPATIBLE:
        # :: and ::1 are in ::/96 too; NEVER_OPEN has judged them already.
        return "IPv4-compatible", (low32,)
    if ip in SIX_TO_FOUR:
        assert ip.sixtofour is not None
        return "6to4", (ip.sixtofour,)
    if ip in TEREDO:
        assert ip.teredo is not None
        server, client = ip.teredo
        return "Teredo", (server, client)
    if ip in NAT64_WKP:
        return "NAT64", (low32,)
    if ip in NAT64_LOCAL:
        # Local-use NAT64 may use any RFC 6052 prefix length; the usual
        # /96 layout and the /48 one (bits 48-63 and 72-87) are both judged
        # (an all-zero one is the other layout's padding).
        value = int(ip)
        at48 = ipaddress.IPv4Address(((value >> 64) & 0xFFFF) << 16 | (value >> 40) & 0xFFFF)
        return "NAT64", tuple(a for a in (low32, at48) if int(a)) or (low32,)
    return None


def resolve_order(infos: Sequence[tuple[int, int, int, str, tuple[object, ...]]]) -> list[IPAddress]:
    """Unique addresses from getaddrinfo, in the resolver's order."""
    seen: list[IPAddress] = []
    for family, _t, _p, _c, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in seen:
                seen.append(ip)
    return seen
