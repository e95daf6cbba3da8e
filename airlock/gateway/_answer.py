"""Validates OPA's answer into a typed PolicyAnswer. Anything that is not the
documented decision shape is ``policy_malformed``: the gateway never guesses
what an odd answer meant. No grpc, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airlock.common.egress_http import HttpRule, SecretRef, obligation_problem
from airlock.common.wire import ARTIFACT_LIMIT_KEYS, LIMIT_KEYS, ArtifactLimits, Limits, SandboxPlan
from airlock.gateway._errors import PolicyError
from airlock.gateway._model import Obligations, Reason


@dataclass(frozen=True)
class PolicyAnswer:
    """A well-formed decision document."""

    allowed: bool
    reasons: tuple[Reason, ...]
    obligations: Obligations
    #: Report-only denies (shadow mode).
    shadow: tuple[Reason, ...]
    #: The registry entry the policy decided with, or None when it sent none.
    tool: Mapping[str, Any] | None
    #: The policy asks for a human's approval (never with allowed).
    ask: bool = False
    #: Report-only asks (shadow mode: would_ask).
    shadow_asks: tuple[Reason, ...] = ()


def _bad(why: str) -> PolicyError:
    return PolicyError(f"malformed policy decision: {why}", code="policy_malformed")


def parse_answer(doc: Any) -> PolicyAnswer:
    """The decision document as OPA answered it, validated field by field."""
    allow, reasons = parse_admission(doc)
    obligations = doc.get("obligations")
    if not isinstance(obligations, dict):
        raise _bad("'obligations' must be an object")
    ask = doc.get("ask", False)
    if not isinstance(ask, bool):
        raise _bad("'ask' must be true or false")
    if ask and allow:
        raise _bad("a decision cannot both allow and ask")
    return PolicyAnswer(
        allowed=allow,
        reasons=reasons,
        # An ask runs once approved: it must say how, as an allow does.
        obligations=_obligations(obligations, allow=allow or ask),
        shadow=parse_reasons(doc.get("shadow", []), "shadow"),
        tool=_tool(doc.get("tool")),
        ask=ask,
        shadow_asks=parse_reasons(doc.get("shadow_asks", []), "shadow_asks"),
    )


def parse_admission(doc: Any) -> tuple[bool, tuple[Reason, ...]]:
    """``{"allow": bool, "reasons": [...]}``: a tool definition's admission
    (data.airlock.tool_definitions.decision), and the head of every decision."""
    if not isinstance(doc, dict):
        raise _bad("not an object")
    allow = doc.get("allow")
    if not isinstance(allow, bool):
        raise _bad("'allow' must be true or false")
    raw_reasons = doc.get("reasons")
    if not isinstance(raw_reasons, list) or not raw_reasons:
        raise _bad("'reasons' must be a non-empty list")
    return allow, parse_reasons(raw_reasons, "reasons")


def parse_reasons(raw: Any, what: str) -> tuple[Reason, ...]:
    if not isinstance(raw, list):
        raise _bad(f"'{what}' must be a list")
    out = []
    for r in raw:
        if not (
            isinstance(r, dict) and isinstance(r.get("code"), str) and r["code"] and isinstance(r.get("message"), str)
        ):
            raise _bad(f"each of '{what}' needs a non-empty 'code' and a 'message'")
        out.append(Reason(r["code"], r["message"]))
    return tuple(out)


def _obligations(doc: dict[str, Any], *, allow: bool) -> Obligations:
    limits_doc = doc.get("limits", {})
    network = doc.get("network", {})
    if not isinstance(limits_doc, dict) or not isinstance(network, dict):
        raise _bad("'obligations.limits' and 'obligations.network' must be objects")
    limits: dict[str, int] = {}
    for key in LIMIT_KEYS:
        value = limits_doc.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(f"'obligations.limits.{key}' must be a non-negative integer")
        limits[key] = value
    if allow and any(limits[k] == 0 for k in LIMIT_KEYS):
        # An allow must say how tightly to run; "0 = executor default" is only
        # acceptable on a deny, where nothing runs.
        raise _bad("an allow must set every obligations.limits key")
    mode, allowlist, cidrs = _network(network, _bad)
    inspect, rules, secrets = _egress_http(network, mode=mode, allowlist=allowlist)
    sandbox = _sandbox(doc.get("sandbox", {}), allow=allow)
    computer = doc.get("computer", {})
    if not isinstance(computer, dict) or not isinstance(computer.get("acknowledge_safety_checks", False), bool):
        raise _bad("'obligations.computer.acknowledge_safety_checks' must be true or false")
    return Obligations(
        Limits(**limits),
        mode,
        allowlist,
        cidrs,
        sandbox,
        _artifacts(doc.get("artifacts", {})),
        acknowledge_safety_checks=computer.get("acknowledge_safety_checks", False),
        egress_inspect=inspect,
        egress_http_rules=rules,
        egress_secrets=secrets,
    )


def _artifacts(doc: Any) -> ArtifactLimits:
    """obligations.artifacts; absent (or a key absent) means 0: no outputs
    collected, no inputs allowed. A policy that wants them says so."""
    if not isinstance(doc, dict):
        raise _bad("'obligations.artifacts' must be an object")
    unknown = sorted(set(doc) - set(ARTIFACT_LIMIT_KEYS))
    if unknown:
        raise _bad(f"'obligations.artifacts' has unknown key {unknown[0]!r}")
    values: dict[str, int] = {}
    for key in ARTIFACT_LIMIT_KEYS:
        value = doc.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(f"'obligations.artifacts.{key}' must be a non-negative integer")
        values[key] = value
    return ArtifactLimits(**values)


def _sandbox(doc: Any, *, allow: bool) -> SandboxPlan:
    """obligations.sandbox; absent means ephemeral. A session needs both
    durations on an allow: "0 = executor default" would hand the choice of
    how long a container lives to whichever executor runs it."""
    if not isinstance(doc, dict):
        raise _bad("'obligations.sandbox' must be an object")
    mode = doc.get("mode", "ephemeral")
    if mode not in ("ephemeral", "session"):
        raise _bad("'obligations.sandbox.mode' must be 'ephemeral' or 'session'")
    values: dict[str, int] = {}
    for key in ("idle_ttl_ms", "max_lifetime_ms"):
        value = doc.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(f"'obligations.sandbox.{key}' must be a non-negative integer")
        values[key] = value
    if allow and mode == "session" and not all(values.values()):
        raise _bad("a session sandbox needs idle_ttl_ms and max_lifetime_ms above 0")
    return SandboxPlan(mode, values["idle_ttl_ms"], values["max_lifetime_ms"])


def _network(
    network: dict[str, Any], bad: Callable[[str], PolicyError]
) -> tuple[Literal["none", "egress"], tuple[str, ...], tuple[str, ...]]:
    mode = network.get("mode", "none")
    if mode not in ("none", "egress"):
        raise bad("'obligations.network.mode' must be 'none' or 'egress'")
    lists: list[tuple[str, ...]] = []
    for key in ("egress_allowlist", "egress_allow_cidrs"):
        value = network.get(key, [])
        if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
            raise bad(f"'obligations.network.{key}' must be a list of strings")
        lists.append(tuple(value))
    return mode, lists[0], lists[1]


_RULE_KEYS = frozenset({"host", "methods", "paths", "max_body_bytes"})
_SECRET_KEYS = frozenset({"name", "host", "header", "format"})


def _egress_http(
    network: dict[str, Any], *, mode: str, allowlist: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[HttpRule, ...], tuple[SecretRef, ...]]:
    """obligations.network.inspect, http_rules and secrets; absent means none.
    Every key of a rule or secret is required and no other is allowed: an
    entry the gateway half understood would be enforced half."""
    inspect = network.get("inspect", [])
    if not isinstance(inspect, list) or not all(isinstance(h, str) for h in inspect):
        raise _bad("'obligations.network.inspect' must be a list of strings")
    raw_rules, raw_secrets = network.get("http_rules", []), network.get("secrets", [])
    if not isinstance(raw_rules, list) or not isinstance(raw_secrets, list):
        raise _bad("'obligations.network.http_rules' and 'obligations.network.secrets' must be lists")
    rules = []
    for i, r in enumerate(raw_rules):
        where = f"'obligations.network.http_rules[{i}]'"
        if not isinstance(r, dict) or set(r) != _RULE_KEYS:
            raise _bad(f"{where} must be an object with exactly {', '.join(sorted(_RULE_KEYS))}")
        size = r["max_body_bytes"]
        if not (
            isinstance(r["host"], str)
            and _strings(r["methods"])
            and _strings(r["paths"])
            and isinstance(size, int)
            and not isinstance(size, bool)
        ):
            raise _bad(f"{where} needs a string host, lists of strings methods and paths, an integer max_body_bytes")
        rules.append(HttpRule(r["host"], tuple(r["methods"]), tuple(r["paths"]), size))
    secrets = []
    for i, x in enumerate(raw_secrets):
        where = f"'obligations.network.secrets[{i}]'"
        if not isinstance(x, dict) or set(x) != _SECRET_KEYS or not all(isinstance(v, str) for v in x.values()):
            raise _bad(f"{where} must be an object of strings {', '.join(sorted(_SECRET_KEYS))}")
        secrets.append(SecretRef(x["name"], x["host"], x["header"], x["format"]))
    problem = obligation_problem(
        egress=mode == "egress", allowlist=allowlist, inspect=inspect, rules=rules, secrets=secrets
    )
    if problem:
        raise _bad(f"'obligations.network': {problem}")
    return tuple(inspect), tuple(rules), tuple(secrets)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _tool(tool: Any) -> Mapping[str, Any] | None:
    if tool is None:
        return None
    if not isinstance(tool, dict):
        raise _bad("'tool' is not a registry entry")
    return tool
