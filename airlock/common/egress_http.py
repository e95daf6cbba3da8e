"""Per-request egress (issue 17): which hosts' TLS the egress proxy opens,
the HTTP rules a request to them must match, and the secrets the proxy adds
to their requests. The registry declares them (``egress_http``), the policy
turns them into the network obligation, the gateway carries them in the
RunSpec and the executor enforces them. All three check them with these
functions, so a value one accepts the others accept too. No values of
secrets ever pass through here: only their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: A secret's name, as grants list it and the executor looks it up.
SECRET_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: RFC 9110 token (tchar+): a header field name.
TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: An upper-case method token (RFC 9110 methods are case-sensitive; the
#: proxy compares them exactly).
METHOD_RE = re.compile(r"^[A-Z][A-Z0-9_-]{0,31}$")
#: CONNECT inside an inspected connection would open a tunnel no rule sees.
REFUSED_METHODS = frozenset({"CONNECT"})
#: Hop-by-hop and framing headers: a secret in one of them would change how
#: the request is routed or framed, not what it says.
REFUSED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "te", "trailer", "upgrade", "keep-alive"}
)
#: Where the secret's value goes in ``format``.
VALUE_PLACEHOLDER = "{value}"
#: The default ``format``: the header is the secret's value.
DEFAULT_FORMAT = VALUE_PLACEHOLDER
#: A path pattern's characters: RFC 3986 pchar (without ``*``, which is the
#: glob), ``/`` and ``*``. No ``?`` (query) or ``#`` (fragment).
_PATH_CHARS_RE = re.compile(r"^[A-Za-z0-9\-._~!$&'()+,;=:@%/*]+$")
_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Longest path pattern accepted.
MAX_PATH_CHARS = 2048
#: Largest per-request body cap (1 TiB): within int64 on the wire.
MAX_BODY_BYTES = 1 << 40


@dataclass(frozen=True)
class HttpRule:
    """Requests to ``host`` (a ``host:port`` of the allowlist) may use one of
    ``methods`` on a path matching one of ``paths``. A host with rules allows
    only requests some rule matches; a host without any allows every method
    and path."""

    host: str
    methods: tuple[str, ...]
    paths: tuple[str, ...]
    #: Largest request body in bytes; 0: no per-request cap (the call's
    #: egress byte limits still apply).
    max_body_bytes: int = 0


@dataclass(frozen=True)
class SecretRef:
    """The egress proxy sets header ``header`` to ``format`` with ``{value}``
    replaced by the secret ``name`` on every request to ``host``."""

    name: str
    host: str
    header: str
    format: str = DEFAULT_FORMAT


def method_problem(method: str) -> str | None:
    if not METHOD_RE.match(method):
        return f"{method!r} is not an upper-case HTTP method token"
    if method in REFUSED_METHODS:
        return f"{method} would open a tunnel the rules cannot see"
    return None


def path_problem(path: str) -> str | None:  # noqa: PLR0911 - one answer per way a pattern is wrong
    """Why ``path`` is not a path pattern: ``/``-rooted, ``*`` within one
    segment, ``**`` across segments, no query string or fragment."""
    if not path.startswith("/"):
        return f"{path!r} must start with '/'"
    if len(path) > MAX_PATH_CHARS:
        return f"must be at most {MAX_PATH_CHARS} characters"
    if "?" in path or "#" in path:
        return f"{path!r} must not contain a query string or fragment ('?', '#')"
    if not _PATH_CHARS_RE.match(path):
        return f"{path!r} has characters outside a URL path (letters, digits, -._~!$&'()+,;=:@%/ and *)"
    if _PCT_RE.search(path):
        return f"{path!r} has a '%' not followed by two hex digits"
    if "***" in path:
        return f"{path!r}: '*' matches within a segment and '**' across them; '***' means neither"
    segments = path.split("/")[1:]
    if any(s in {".", ".."} for s in segments):
        return f"{path!r} has a '.' or '..' segment; patterns match normalized paths"
    if any(s == "" for s in segments[:-1]):
        return f"{path!r} has an empty segment ('//')"
    return None


def header_problem(header: str) -> str | None:
    if not TOKEN_RE.match(header):
        return f"{header!r} is not an HTTP header name (RFC 9110 token)"
    lower = header.lower()
    if lower in REFUSED_HEADERS or lower.startswith("proxy-"):
        return f"{header!r} is a hop-by-hop or framing header; a secret cannot go there"
    return None


def format_problem(fmt: str) -> str | None:
    if fmt.count(VALUE_PLACEHOLDER) != 1:
        return f"must contain {VALUE_PLACEHOLDER} exactly once, got {fmt!r}"
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in fmt):  # noqa: PLR2004 - C0 controls and DEL
        return "must not contain control characters (CR, LF, NUL, ...)"
    if not fmt.isascii():
        return "must be ASCII: a header value's bytes must not depend on an encoding"
    return None


def secret_name_problem(name: str) -> str | None:
    if not SECRET_NAME_RE.match(name):
        return f"{name!r} must match {SECRET_NAME_RE.pattern}"
    return None


def rule_problem(rule: HttpRule) -> str | None:
    """Why one rule is malformed (its host aside)."""
    if not rule.methods:
        return "methods must not be empty"
    if not rule.paths:
        return "paths must not be empty"
    if not 0 <= rule.max_body_bytes <= MAX_BODY_BYTES:
        return f"max_body_bytes must be in 0..{MAX_BODY_BYTES}"
    for i, method in enumerate(rule.methods):
        if problem := method_problem(method):
            return f"methods[{i}]: {problem}"
    for i, path in enumerate(rule.paths):
        if problem := path_problem(path):
            return f"paths[{i}]: {problem}"
    return None


def secret_problem(secret: SecretRef) -> str | None:
    """Why one secret reference is malformed (its host aside)."""
    for what, problem in (
        ("name", secret_name_problem(secret.name)),
        ("header", header_problem(secret.header)),
        ("format", format_problem(secret.format)),
    ):
        if problem:
            return f"{what}: {problem}"
    return None


def obligation_problem(
    *,
    egress: bool,
    allowlist: Iterable[str],
    inspect: Iterable[str],
    rules: Iterable[HttpRule],
    secrets: Iterable[SecretRef],
) -> str | None:
    """Why a network obligation's (or run spec's) inspection, rules and
    secrets do not hang together; None when they do. Rules and secrets need
    their host inspected, and an inspected host must be one of the
    allowlist's: none of them may widen where the run can go."""
    inspect, rules, secrets = tuple(inspect), tuple(rules), tuple(secrets)
    if not egress and (inspect or rules or secrets):
        return "inspect_hosts, http_rules and secrets need network mode egress"
    allowed = set(allowlist)
    if len(set(inspect)) != len(inspect):
        return "inspect_hosts has a host twice"
    for host in inspect:
        if host not in allowed:
            return f"inspect_hosts: {host!r} is not in the egress allowlist"
    return _rules_problem(rules, set(inspect)) or _secrets_problem(secrets, set(inspect))


def _rules_problem(rules: tuple[HttpRule, ...], inspected: set[str]) -> str | None:
    for i, rule in enumerate(rules):
        problem = rule_problem(rule)
        if rule.host not in inspected:
            problem = f"host {rule.host!r} is not in inspect_hosts"
        if problem:
            return f"http_rules[{i}]: {problem}"
    return None


def _secrets_problem(secrets: tuple[SecretRef, ...], inspected: set[str]) -> str | None:
    seen: set[tuple[str, str]] = set()
    for i, secret in enumerate(secrets):
        key = (secret.host, secret.header.lower())
        problem = secret_problem(secret)
        if secret.host not in inspected:
            problem = f"host {secret.host!r} is not in inspect_hosts"
        elif "*" in secret.host:
            problem = f"host {secret.host!r} is a glob: a secret goes to one exact host"
        elif key in seen:
            problem = f"a second secret for header {secret.header!r} of {secret.host!r}"
        if problem:
            return f"secrets[{i}]: {problem}"
        seen.add(key)
    return None


__all__ = [
    "DEFAULT_FORMAT",
    "HttpRule",
    "SecretRef",
    "format_problem",
    "header_problem",
    "method_problem",
    "obligation_problem",
    "path_problem",
    "rule_problem",
    "secret_name_problem",
    "secret_problem",
]
