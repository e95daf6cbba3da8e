"""Host normalisation, allowlist matching and address checks of the egress proxy."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from executor.egress.rules import Allowlist, HostError, address_problem, normalize_host, parse_networks, resolve_order


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
        ("2002:a9fe:a9fe::1", "carries 169.254.169.254 is the cloud metadata"),  # 6to4
        ("2002:7f00:1::", "carries 127.0.0.1 is a loopback"),
        ("64:ff9b::7f00:1", "carries 127.0.0.1 is a loopback"),  # NAT64
        ("64:ff9b:1::a00:1", "carries 10.0.0.1 is a private"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "carries 192.0.2.45"),  # Teredo
        ("fec0::1", "site-local"),
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
    assert address_problem(ipaddress.ip_address("::ffff:10.1.2.3"), opened) is None


def test_resolve_order_keeps_the_resolvers_order_without_duplicates() -> None:
    infos = [
        (socket.AF_INET, 1, 6, "", ("93.184.216.34", 443)),
        (socket.AF_INET6, 1, 6, "", ("2606:2800:220:1::1", 443, 0, 0)),
        (socket.AF_INET, 1, 6, "", ("93.184.216.34", 443)),
    ]
    assert [str(a) for a in resolve_order(infos)] == ["93.184.216.34", "2606:2800:220:1::1"]
