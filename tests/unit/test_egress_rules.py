"""Host normalisation, allowlist matching and address checks of the egress proxy."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from airlock.executor._errors import HostError
from airlock.executor.egress.rules import (
    Allowlist,
    address_problem,
    embedded_ipv4,
    normalize_host,
    parse_networks,
    resolve_order,
)


@pytest.mark.parametrize(
    ("raw", "name", "is_ip"),
    [
        ("example.org", "example.org", False),
        ("EXAMPLE.Org", "example.org", False),
        ("example.org.", "example.org", False),
        ("bücher.example", "xn--bcher-kva.example", False),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", False),
        ("_dmarc.example.org", "_dmarc.example.org", False),
        ("93.184.216.34", "93.184.216.34", True),
        ("[2001:db8::1]", "2001:db8::1", True),
        ("[2001:DB8:0::1]", "2001:db8::1", True),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1", True),
    ],
)
def test_hosts_are_normalised(raw: str, name: str, is_ip: bool) -> None:
    host = normalize_host(raw)
    assert host.name == name
    assert (host.ip is not None) == is_ip


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("2130706433", "ip_literal"),  # decimal 127.0.0.1
        ("0x7f000001", "ip_literal"),  # hex
        ("0177.0.0.1", "ip_literal"),  # octal
        ("127.1", "ip_literal"),  # short form
        ("0x7f.1", "ip_literal"),
        ("", "bad_host"),
        ("a..b", "bad_host"),
        ("exa mple.org", "bad_host"),
        ("user@example.org", "bad_host"),
        ("example.org:80", "bad_host"),
        ("-bad.example", "bad_host"),
        ("[::1", "bad_host"),
        ("[fe80::1%eth0]", "bad_host"),
        ("[not-an-ip]", "bad_host"),
        ("a" * 64 + ".example", "bad_host"),
        ("x" * 300, "bad_host"),
    ],
)
def test_odd_hosts_are_refused(raw: str, code: str) -> None:
    with pytest.raises(HostError) as info:
        normalize_host(raw)
    assert info.value.code == code


ALLOW = Allowlist(("*.wikipedia.org:443", "api.example.com:8443", "**.docs.example:443", "93.184.216.34:443"))


@pytest.mark.parametrize(
    ("host", "port", "want"),
    [
        ("en.wikipedia.org", 443, None),
        ("EN.Wikipedia.Org.", 443, None),
        ("wikipedia.org", 443, "host_not_allowed"),  # * is exactly one label
        ("a.b.wikipedia.org", 443, "host_not_allowed"),
        ("en.wikipedia.org", 80, "port_not_allowed"),
        ("en.wikipedia.org.evil.com", 443, "host_not_allowed"),
        ("api.example.com", 8443, None),
        ("api.example.com", 443, "port_not_allowed"),
        ("x.y.docs.example", 443, None),  # ** crosses labels
        ("93.184.216.34", 443, None),  # listed literally
        ("93.184.216.35", 443, "ip_literal"),
        ("[2001:db8::1]", 443, "ip_literal"),
    ],
)
def test_allowlist(host: str, port: int, want: str | None) -> None:
    problem = ALLOW.check(normalize_host(host), port)
    assert (problem[0] if problem else None) == want


def test_a_glob_never_matches_an_ip() -> None:
    """An entry like *.*.*.* must not turn into "any IPv4 address"."""
    glob_all = Allowlist(("*.*.*.*:443",))
    problem = glob_all.check(normalize_host("10.0.0.1"), 443)
    assert problem is not None
    assert problem[0] == "ip_literal"


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "not a globally routable"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped is judged as IPv4
        ("::ffff:10.0.0.1", "private"),
        ("2002:a9fe:a9fe::1", "6to4 address that carries 169.254.169.254 is the cloud metadata"),
        ("2002:7f00:1::", "carries 127.0.0.1 is a loopback"),
        ("64:ff9b::7f00:1", "NAT64 address that carries 127.0.0.1 is a loopback"),
        ("64:ff9b:1::a00:1", "carries 10.0.0.1 is a private"),
        ("64:ff9b:1:a00:0:100::", "carries 10.0.0.1 is a private"),  # the /48 layout (RFC 6052)
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "carries 192.0.2.45"),  # Teredo (client)
        ("2001:0:a00:1:8000:63bf:3fff:fdd2", "Teredo address that carries 10.0.0.1"),  # Teredo (server)
        ("::ffff:0:a00:1", "IPv4-translated address that carries 10.0.0.1"),
        ("::a00:1", "IPv4-compatible address that carries 10.0.0.1"),
        ("fec0::1", "site-local"),
        ("100.100.100.200", "metadata"),  # Alibaba
        ("168.63.129.16", "metadata"),  # Azure WireServer
    ],
)
def test_non_public_addresses_are_denied(address: str, fragment: str) -> None:
    problem = address_problem(ipaddress.ip_address(address), ())
    assert problem is not None
    assert fragment in problem


def test_public_addresses_pass_and_listed_networks_open_private_ones() -> None:
    assert address_problem(ipaddress.ip_address("93.184.216.34"), ()) is None
    assert address_problem(ipaddress.ip_address("2606:2800:220:1::1"), ()) is None
    opened = parse_networks(("10.1.0.0/16",))
    assert address_problem(ipaddress.ip_address("10.1.2.3"), opened) is None
    assert address_problem(ipaddress.ip_address("10.2.0.1"), opened) is not None
    # An embedded form is judged by the IPv4 it carries (never dialled, see below).
    assert address_problem(ipaddress.ip_address("::ffff:10.1.2.3"), opened) is None
    assert address_problem(ipaddress.ip_address("2002:a01:203::1"), opened) is None


@pytest.mark.parametrize(
    ("cidrs", "address", "fragment"),
    [
        (("127.0.0.0/8",), "127.0.0.1", "loopback address; egress_allow_cidrs never opens it"),
        (("0.0.0.0/0",), "127.0.0.53", "loopback address; egress_allow_cidrs never opens it"),
        (("0.0.0.0/0",), "0.0.0.0", "unspecified (this-host) address; egress_allow_cidrs never opens it"),
        (("169.254.0.0/16",), "169.254.169.254", "the cloud metadata address; egress_allow_cidrs never opens it"),
        (("169.254.0.0/16",), "169.254.170.2", "link-local address; egress_allow_cidrs never opens it"),
        (("::/0",), "::1", "loopback address; egress_allow_cidrs never opens it"),
        (("fd00::/8",), "fd00:ec2::254", "the cloud metadata address; egress_allow_cidrs never opens it"),
        (("fe80::/10",), "fe80::1", "link-local address; egress_allow_cidrs never opens it"),
        # Through an embedded form: the carried address is judged the same way.
        (("::/0", "0.0.0.0/0"), "::ffff:127.0.0.1", "carries 127.0.0.1 is a loopback address; egress_allow_cidrs"),
        (("2002::/16", "0.0.0.0/0"), "2002:a9fe:a9fe::", "carries 169.254.169.254 is the cloud metadata"),
        # Not listed: denied as always, without the note.
        ((), "127.0.0.1", "127.0.0.1 is a loopback address"),
    ],
)
def test_allow_cidrs_never_open_loopback_link_local_or_metadata(
    cidrs: tuple[str, ...], address: str, fragment: str
) -> None:
    problem = address_problem(ipaddress.ip_address(address), parse_networks(cidrs))
    assert problem is not None
    assert fragment in problem
    if not cidrs:
        assert "never opens" not in problem


@pytest.mark.parametrize(
    ("address", "kind", "carried"),
    [
        ("::ffff:1.2.3.4", "IPv4-mapped", ["1.2.3.4"]),
        ("::ffff:0:1.2.3.4", "IPv4-translated", ["1.2.3.4"]),
        ("::1.2.3.4", "IPv4-compatible", ["1.2.3.4"]),
        ("2002:102:304::1", "6to4", ["1.2.3.4"]),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo", ["65.54.227.120", "192.0.2.45"]),
        ("64:ff9b::102:304", "NAT64", ["1.2.3.4"]),
        ("64:ff9b:1:102:3:400::", "NAT64", ["1.2.3.4"]),  # the /48 layout
        ("64:ff9b:1::102:304", "NAT64", ["1.2.3.4"]),  # the /96 layout
        ("2606:2800:220:1::1", None, None),
        ("93.184.216.34", None, None),
    ],
)
def test_embedded_ipv4_forms_are_recognised(address: str, kind: str | None, carried: list[str] | None) -> None:
    found = embedded_ipv4(ipaddress.ip_address(address))
    if kind is None:
        assert found is None
    else:
        assert found is not None
        assert (found[0], [str(a) for a in found[1]]) == (kind, carried)


def test_resolve_order_keeps_the_resolvers_order_without_duplicates() -> None:
    infos = [
        (socket.AF_INET, 1, 6, "", ("93.184.216.34", 443)),
        (socket.AF_INET6, 1, 6, "", ("2606:2800:220:1::1", 443, 0, 0)),
        (socket.AF_INET, 1, 6, "", ("93.184.216.34", 443)),
    ]
    assert [str(a) for a in resolve_order(infos)] == ["93.184.216.34", "2606:2800:220:1::1"]
