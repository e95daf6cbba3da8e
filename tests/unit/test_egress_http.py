"""Inspection, HTTP rules and secrets on the wire and at the executor: the
RunSpec carries them through the proto unchanged, and the executor refuses a
spec whose values break the registry's constraints (spec_invalid) or that it
cannot enforce (egress_unavailable)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from airlock.common import wire
from airlock.executor._errors import RunRefused
from airlock.executor._model import HttpRule, RunSpec, SecretRef, check_egress_http

HOST = "api.github.com:443"
RULE = HttpRule(HOST, ("GET", "POST"), ("/repos/ORG/*",), 1024**2)
SECRET = SecretRef("github_token", HOST, "Authorization", "Bearer {value}")
SPEC = RunSpec(
    run_id="r1",
    tool="github_api",
    image="img",
    argv=("python3",),
    network_mode="egress",
    egress_allowlist=(HOST, "uploads.github.com:443"),
    egress_inspect=(HOST,),
    egress_http_rules=(RULE,),
    egress_secrets=(SECRET,),
)


def test_run_spec_round_trips_through_the_proto() -> None:
    message = wire.spec_to_proto(SPEC)
    assert list(message.network.inspect_hosts) == [HOST]
    assert message.network.http_rules[0].max_body_bytes == 1024**2
    assert message.network.secrets[0].format == "Bearer {value}"
    assert wire.spec_from_proto(message) == SPEC


def test_a_well_formed_spec_runs_where_egress_http_is_enforced() -> None:
    check_egress_http(SPEC, enforced=True)
    # Nothing to enforce: every executor runs it.
    check_egress_http(replace(SPEC, egress_inspect=(), egress_http_rules=(), egress_secrets=()), enforced=False)


def test_an_executor_that_cannot_enforce_them_refuses() -> None:
    with pytest.raises(RunRefused) as info:
        check_egress_http(replace(SPEC, egress_http_rules=(), egress_secrets=()), enforced=False)
    assert info.value.code == "egress_unavailable"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        pytest.param({"network_mode": "none"}, "need network mode egress", id="without-egress"),
        pytest.param({"egress_inspect": ("evil.example:443",)}, "not in the egress allowlist", id="inspect-widens"),
        pytest.param({"egress_inspect": (HOST, HOST)}, "a host twice", id="inspect-twice"),
        pytest.param(
            {"egress_http_rules": (replace(RULE, host="uploads.github.com:443"),)},
            "http_rules[0]: host 'uploads.github.com:443' is not in inspect_hosts",
            id="rule-host-not-inspected",
        ),
        pytest.param({"egress_http_rules": (replace(RULE, methods=()),)}, "methods must not be empty", id="no-methods"),
        pytest.param({"egress_http_rules": (replace(RULE, paths=()),)}, "paths must not be empty", id="no-paths"),
        pytest.param(
            {"egress_http_rules": (replace(RULE, methods=("CONNECT",)),)}, "would open a tunnel", id="connect"
        ),
        pytest.param({"egress_http_rules": (replace(RULE, paths=("/a//b",)),)}, "empty segment", id="empty-segment"),
        pytest.param(
            {"egress_http_rules": (replace(RULE, paths=("/a%zz",)),)}, "not followed by two hex", id="bad-percent"
        ),
        pytest.param({"egress_http_rules": (replace(RULE, max_body_bytes=-1),)}, "must be in 0..", id="negative-size"),
        pytest.param(
            {"egress_secrets": (replace(SECRET, host="uploads.github.com:443"),)},
            "secrets[0]: host 'uploads.github.com:443' is not in inspect_hosts",
            id="secret-host-not-inspected",
        ),
        pytest.param({"egress_secrets": (replace(SECRET, name="Token"),)}, "name: 'Token' must match", id="name"),
        pytest.param(
            {"egress_secrets": (replace(SECRET, header="Transfer-Encoding"),)}, "hop-by-hop", id="framing-header"
        ),
        pytest.param(
            {"egress_secrets": (replace(SECRET, header="Proxy-Authorization"),)}, "hop-by-hop", id="proxy-header"
        ),
        pytest.param(
            {"egress_secrets": (replace(SECRET, format="Bearer {value}\r\nX-Evil: 1"),)},
            "control characters",
            id="header-injection",
        ),
        pytest.param({"egress_secrets": (replace(SECRET, format="é{value}"),)}, "must be ASCII", id="non-ascii"),
        pytest.param(
            {"egress_secrets": (SECRET, replace(SECRET, name="other", header="authorization"))},
            "secrets[1]: a second secret for header 'authorization'",
            id="same-header-twice",
        ),
    ],
)
def test_a_malformed_spec_is_spec_invalid(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(RunRefused) as info:
        check_egress_http(replace(SPEC, **changes), enforced=True)
    assert info.value.code == "spec_invalid"
    assert problem in str(info.value)
