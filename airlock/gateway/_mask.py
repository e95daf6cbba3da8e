"""Masks secrets in what goes to the audit log.

The audit sink (airlock/gateway/_audit.py) calls :meth:`Masker.mask_event` on every
rendered event in its writer thread, so masking never runs on the event
loop, and covers every string of the event: the policy input and result,
reason and shadow-reason messages, session_id, tool, call_id, raw arguments,
observation items, execution errors. It works in two passes:

1. **Find secrets by name.** Object keys whose name looks secret
   (``audit.mask.key_pattern``: ``password``, ``api_key``, ``authToken``,
   ...) anywhere in the event, and JSON pointers you list
   (``audit.mask.pointers``, relative to the policy input as OPA's
   ``system.log.mask`` is, e.g. ``/call/arguments/api_key``). Their values
   are replaced by ``**masked**`` and remembered.
2. **Scrub every string.** Each remembered value (when at least
   ``MIN_EXACT_SECRET_CHARS`` long, also in its JSON- and repr-escaped
   spellings) is replaced wherever else it appears -- in a schema error
   message, a reason message, the raw arguments of a malformed call -- and so
   is any text matching the value patterns (``audit.mask.value_patterns``:
   bearer and Basic credentials, ``password: x`` in free text (also with
   JSON ``\\u`` escapes for the quotes and separator), ``mysql -pX``, URLs
   with ``user:password@``, Azure ``AccountKey=``/``SharedAccessSignature=``
   and SAS ``sig=``, JWTs, OpenAI, Stripe, Slack, Google, AWS, GitHub and
   Hugging Face keys, private-key blocks).

Non-ASCII text is matched twice: as it is, and **normalised** (NFKD
compatibility decomposition, with combining marks and invisible format
characters dropped; see :func:`_fold`), so ``p\\u00e4ssword=`` (an a with an
umlaut), fullwidth letters and ``pass\\u200bword=`` (a zero-width space) read
as ``password=`` to the patterns and to the key check, while the patterns
stay ASCII. The mask lands on the original characters that produced the
match. Letters of other scripts that only look Latin (Cyrillic er,
``\\u0440``) are not normalised.

Patterns run on RE2 (``google-re2``), whose matching time is linear in the
input for every pattern, including the ones an operator configures: a
backtracking engine took ~0.9 s on one 60 KB argument with the old
private-key pattern, on the event loop. On top of that, no string longer
than ``MAX_SCAN_CHARS`` is written: its first ``MAX_SCAN_CHARS`` characters
are kept (minus a trailing partial token, which could be half a secret) and
scanned, and the rest is replaced by a marker that gives its length.

Fields the gateway itself fills from closed sets (kind, decision, the chain
fields, the authenticated principal, reason codes, ...) are left alone, so a
caller cannot blank them by choosing a "password" equal to them. The policy
still sees the real input; only the audit copy is masked, and the event's
``masked`` field lists the JSON pointers (into the event) that changed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import re2  # type: ignore[import-untyped]

MASK = "**masked**"
#: The longest string scanned and written; see the module docstring.
MAX_SCAN_CHARS = 64 * 1024
#: Shorter values found by name are masked where they stand but not searched
#: for elsewhere: they collide with ordinary words and field values, and a
#: secret that short is not much of one.
MIN_EXACT_SECRET_CHARS = 6
#: At most this many distinct values found by name are searched for in the
#: other strings (the longest first), which bounds the work per event.
MAX_EXACT_SECRETS = 64
#: Keys are matched in full, case-insensitively: any key ending in a secret word.
DEFAULT_KEY_PATTERN = (
    r"(?i)^.*(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|authorization|credentials?|cookie)$"
)
_BASIC = r"(?i)\bbasic\s{1,8}(?P<secret>[A-Za-z0-9+/]{8,}={0,2})"
#: RE2 syntax. A group whose name starts with "secret" marks what is masked
#: (the rest of the match stays readable); without one the whole match is.
DEFAULT_VALUE_PATTERNS = (
    # Authorization headers in free text (curl -H, logs), whatever the scheme.
    r"(?i)(?:proxy-)?authorization\\{0,3}[\"']?\s{0,8}[:=]\s{0,8}\\{0,3}[\"']?(?P<secret>[^\"'\\\r\n]+)",
    r"(?i)\bbearer\s{1,8}(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
    _BASIC,
    # password: x / password="x" / "password": "x" / token=x inside any string,
    # also JSON-escaped by an encoder that escapes more than it must
    # (password\u003dx, \u0022password\u0022\u003a\u0022x\u0022).
    (
        r"(?i)(?:password|passwd|pwd|passphrase|secret|api[_-]?key|access[_-]?key|access[_-]?token"
        r"|auth[_-]?token|token)(?:\\{0,3}[\"']|\\{1,3}u002[27])?\s{0,8}(?:[:=]|\\{1,3}u003[ad])\s{0,8}"
        r"(?:\\{0,3}\"(?P<secret>[^\"\r\n]+)\"|\\{0,3}'(?P<secret2>[^'\r\n]+)'"
        r"|\\{1,3}u002[27](?P<secret4>[^\"'\\\r\n]+)|(?P<secret3>[^\s\"',;&\\]+))"
    ),
    # The MySQL/MariaDB clients take the password glued to -p: -pX, -p'X', -p"X"
    # (a bare -p prompts; -P is the port).
    (
        r"(?i)\b(?:mysql(?:dump|admin|import|show|check|pump|slap|binlog|sh)?|mariadb(?:-?dump|-?admin)?)\b"
        r"[^\r\n|;&]{0,200}?\s(?-i:-p)"
        r"(?:\\{0,3}'(?P<secret>[^'\\\r\n]+)\\{0,3}'|\\{0,3}\"(?P<secret2>[^\"\\\r\n]+)\\{0,3}\""
        r"|(?P<secret3>[^\s'\"\\;&|]+))"
    ),
    # Azure connection strings: storage account keys, Service Bus/Event Hubs
    # keys, and a whole SAS token.
    r"(?i)\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)\s{0,8}=\s{0,8}(?P<secret>[^;\s\"'\\]+)",
    # A SAS token's signature in a URL or connection string (& may be \u0026-escaped).
    r"(?i)(?:^|[?&;\s\"']|\\u0026)sig=(?P<secret>[^&;\s\"'\\#]+)",
    # scheme://user:password@host
    r"(?i)\b[a-z][a-z0-9+.-]{0,30}://[^\s/?#@:]*:(?P<secret>[^\s/?#@]+)@",
    # JSON Web Tokens: base64url '{"' header and payload.
    r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    # OpenAI-style keys (sk-..., sk-proj-...).
    r"\bsk-[A-Za-z0-9_-]{16,}",
    # Stripe secret and restricted keys, live and test.
    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}",
    # Slack tokens.
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    # Google API keys.
    r"\bAIza[0-9A-Za-z_-]{35}",
    # AWS access key ids (long-term and temporary).
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    # GitHub tokens.
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    # Hugging Face access tokens.
    r"\bhf_[A-Za-z0-9]{30,}\b",
    # Private-key blocks, also when cut before their END line.
    (
        r"(?s)-----BEGIN [A-Z0-9 ]{0,64}PRIVATE KEY(?: BLOCK)?-----.*?"
        r"(?:-----END [A-Z0-9 ]{0,64}PRIVATE KEY(?: BLOCK)?-----|\z)"
    ),
)
#: Event fields the gateway fills from closed sets or its own state; see the
#: module docstring. Pointers into the rendered event.
EXEMPT_FIELDS = frozenset(
    {
        "/schema_version",
        "/kind",
        "/timestamp",
        "/decision_id",
        "/principal",
        "/decision",
        "/policy_revision",
        "/rpc",
        "/arguments_bytes",
        "/seq",
        "/prev_hash",
        "/hash",
        "/path",
        "/labels",
        "/masked",
        "/bundles",
        "/would_deny",
        "/checkpoint",
        "/obligations",
        "/input/principal",
        "/input/request",
        "/execution/outcome",
    }
)
_EXEMPT_LEAF_KEYS = {"/reasons": "code", "/shadow_reasons": "code"}
#: A trailing run of token characters at a cut: it may be half a secret that
#: the value patterns no longer recognise, so it goes with the rest.
#: Keys and strings up to this long have their verdicts cached.
_CACHED_KEY_CHARS = 128
_CUT_TOKEN = r"[^\s\"',;]{1,1000}\z"  # noqa: S105 - a pattern, not a password


def _options() -> Any:
    options = re2.Options()
    # RE2 logs every compile error to stderr; the caller reports it instead.
    options.log_errors = False
    return options


def compile_pattern(pattern: str) -> Any:
    """An RE2 program, or ValueError with RE2's reason (config load uses it)."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"mask pattern {pattern!r} is not valid RE2 syntax: {reason} "
            "(RE2 has no look-around and no backreferences, and spells Python's \\Z as \\z)"
        ) from exc


def _is_basic_credential(token: str) -> bool:
    """HTTP Basic: base64 of ``user:password``. Checking that keeps prose
    like "basic configuration" readable."""
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


_VALIDATORS: dict[str, Callable[[str], bool]] = {_BASIC: _is_basic_credential}


class _FoldTable(dict[int, str]):
    """str.translate table for :func:`_fold`, filled as characters are met."""

    def __missing__(self, codepoint: int) -> str:
        char = chr(codepoint)
        if unicodedata.category(char) in ("Mn", "Me", "Cf"):
            # Combining marks and invisible format characters (zero-width
            # space and joiners, soft hyphen) only hide a word.
            out = ""
        else:
            out = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)) or char
        self[codepoint] = out
        return out


_FOLD_TABLE = _FoldTable()


def _fold(text: str) -> str:
    """Compatibility-decomposed, without combining marks or format
    characters: ``pässword`` -> ``password``, fullwidth -> ASCII. Case is
    kept; the patterns say (?i) where they mean it."""
    return text.translate(_FOLD_TABLE)


def _fold_origins(text: str) -> list[int]:
    """For each character of ``_fold(text)``, the index in ``text`` it came from."""
    out: list[int] = []
    for i, char in enumerate(text):
        out.extend([i] * len(_FOLD_TABLE[ord(char)]))
    return out


def _escape(part: str) -> str:
    if "~" not in part and "/" not in part:
        return part
    return part.replace("~", "~0").replace("/", "~1")


class _Pattern:
    def __init__(self, source: str) -> None:
        self.regex = compile_pattern(source)
        # Indices: google-re2's Match.span takes a group number only.
        self.groups = [index for name, index in self.regex.groupindex.items() if name.startswith("secret")]
        self.check = _VALIDATORS.get(source)

    def spans(self, text: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for m in self.regex.finditer(text):
            spans = [m.span(g) for g in self.groups] if self.groups else [m.span()]
            for start, end in spans:
                if start >= 0 and end > start and (self.check is None or self.check(text[start:end])):
                    out.append((start, end))
        return out


def _apply(text: str, spans: list[tuple[int, int]]) -> str:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            # Overlapping matches are masked as one: none is left half shown.
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts, at = [], 0
    for start, end in merged:
        parts.append(text[at:start])
        parts.append(MASK)
        at = end
    parts.append(text[at:])
    return "".join(parts)


class Masker:
    def __init__(
        self,
        pointers: Iterable[str] = (),
        key_pattern: str | None = DEFAULT_KEY_PATTERN,
        value_patterns: Iterable[str] = DEFAULT_VALUE_PATTERNS,
    ) -> None:
        self._pointers = tuple(pointers)
        for p in self._pointers:
            if not p.startswith("/"):
                raise ValueError(f"mask pointer {p!r} must start with '/'")
        self._key = compile_pattern(key_pattern) if key_pattern else None
        self._values = tuple(_Pattern(p) for p in value_patterns)
        # One pass over a string tells whether any pattern can match; most
        # strings match none, and then one search replaces one per pattern.
        # (An alternation, not an RE2::Set: a Set that runs out of DFA memory
        # reports "no match", where one program falls back to the NFA.)
        self._any = None
        if self._values:
            options = _options()
            options.never_capture = True
            self._any = re2.compile("|".join(f"(?:{p.regex.pattern})" for p in self._values), options)
        self._cut = compile_pattern(_CUT_TOKEN)
        # Key names repeat across events; their verdicts are worth keeping.
        self._key_verdicts = functools.lru_cache(maxsize=4096)(self._secret_key_uncached)
        # Short strings repeat too (tool names, reason texts, profiles).
        self._short_scans = functools.lru_cache(maxsize=8192)(self._patterns)

    # -- the sink's entry point -------------------------------------------------

    def mask_event(self, doc: dict[str, Any]) -> list[str]:
        """Masks a rendered event (``MessageToDict`` output) in place and
        returns the pointers into it that changed, sorted."""
        masked: set[str] = set()
        secrets: list[str] = []
        self._by_name(doc, "", masked, secrets)
        inp = doc.get("input")
        if isinstance(inp, dict):
            for pointer in self._pointers:
                if _take_pointer(inp, pointer, secrets):
                    masked.add("/input" + pointer)
        scrub = _Scrub(self, secrets)
        for k in list(doc):
            doc[k] = scrub.walk(doc[k], f"/{_escape(k)}", masked)
        return sorted(masked)

    def mask(self, doc: Any) -> tuple[Any, list[str]]:
        """A masked deep copy of ``doc`` (e.g. a policy input) and the
        pointers into it that were masked: both passes, nothing exempt."""
        copy = json.loads(json.dumps(doc))
        masked: set[str] = set()
        secrets: list[str] = []
        copy = self._by_name_node(copy, "", masked, secrets)
        for pointer in self._pointers:
            if _take_pointer(copy, pointer, secrets):
                masked.add(pointer)
        copy = _Scrub(self, secrets, exempt=False).walk(copy, "", masked)
        return copy, sorted(masked)

    # -- pass 1: by name -----------------------------------------------------------

    def _by_name(self, doc: dict[str, Any], at: str, masked: set[str], secrets: list[str]) -> None:
        for k in list(doc):
            here = f"{at}/{_escape(k)}"
            if here in EXEMPT_FIELDS:
                continue
            doc[k] = self._by_name_node(doc[k], here, masked, secrets)

    def _by_name_node(self, node: Any, at: str, masked: set[str], secrets: list[str]) -> Any:
        if isinstance(node, dict):
            for k in list(node):
                here = f"{at}/{_escape(str(k))}"
                if here in EXEMPT_FIELDS:
                    continue
                v = node[k]
                if self._secret_key(k) and v not in (MASK, None, ""):
                    _collect(v, secrets)
                    node[k] = MASK
                    masked.add(here)
                else:
                    node[k] = self._by_name_node(v, here, masked, secrets)
            return node
        if isinstance(node, list):
            return [self._by_name_node(v, f"{at}/{i}", masked, secrets) for i, v in enumerate(node)]
        return node

    def _secret_key(self, key: Any) -> bool:
        if self._key is None or not isinstance(key, str):
            return False
        return bool(self._key_verdicts(key)) if len(key) <= _CACHED_KEY_CHARS else self._secret_key_uncached(key)

    def _secret_key_uncached(self, key: str) -> bool:
        assert self._key is not None
        key = key[:MAX_SCAN_CHARS]
        if self._key.match(key) is not None:
            return True
        return not key.isascii() and self._key.match(_fold(key)) is not None

    def scan_key(self, key: str) -> str:
        return self.scan(key, [])

    # -- pass 2 helpers --------------------------------------------------------------

    def scan(self, text: str, exact: list[str]) -> str:
        """One string: cut to the cap, known secrets replaced, value patterns masked."""
        out = text
        if len(out) > MAX_SCAN_CHARS:
            head = self._cut.sub("", out[:MAX_SCAN_CHARS])
            out = f"{head}**cut {len(text) - len(head)} chars**"
        for secret in exact:
            if secret in out:
                out = out.replace(secret, MASK)
        return str(self._short_scans(out)) if len(out) <= _CACHED_KEY_CHARS else self._patterns(out)

    def _patterns(self, text: str) -> str:
        out = text
        if self._any is None:
            return out
        if self._any.search(out) is not None:
            for pattern in self._values:
                spans = pattern.spans(out)
                if spans:
                    out = _apply(out, spans)
        if not out.isascii():
            out = self._folded_patterns(out)
        return out

    def _folded_patterns(self, text: str) -> str:
        """The value patterns on the normalised text, masked in the original."""
        assert self._any is not None
        folded = _fold(text)
        if folded == text or self._any.search(folded) is None:
            return text
        spans = [span for pattern in self._values for span in pattern.spans(folded)]
        if not spans:
            return text
        origin = _fold_origins(text)
        return _apply(text, [(origin[start], origin[end - 1] + 1) for start, end in spans])


class _Scrub:
    """Pass 2 over one document: every string, keys included."""

    def __init__(self, masker: Masker, secrets: list[str], *, exempt: bool = True) -> None:
        self._masker = masker
        self._exempt = exempt
        variants: set[str] = set()
        for s in sorted(set(secrets), key=len, reverse=True)[:MAX_EXACT_SECRETS]:
            if len(s) < MIN_EXACT_SECRET_CHARS or s == MASK:
                continue
            # The spellings a value takes inside other text: raw, JSON-escaped
            # (arguments_raw), repr-quoted (Python error messages).
            variants.update({s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1], repr(s)[1:-1]})
        # Longest first, so a value is not half-replaced by a shorter one inside it.
        self._exact = sorted((v for v in variants if len(v) >= MIN_EXACT_SECRET_CHARS), key=len, reverse=True)

    def walk(self, node: Any, at: str, masked: set[str]) -> Any:
        if self._exempt and at in EXEMPT_FIELDS:
            return node
        if isinstance(node, str):
            if node == MASK:
                return node
            out = self._masker.scan(node, self._exact)
            if out != node:
                masked.add(at)
            return out
        if isinstance(node, list):
            leaf = _EXEMPT_LEAF_KEYS.get(at) if self._exempt else None
            return [self._item(v, f"{at}/{i}", masked, leaf) for i, v in enumerate(node)]
        if isinstance(node, dict):
            out_dict: dict[str, Any] = {}
            for k, v in node.items():
                # Keys get the value patterns only: a "password" equal to an
                # ordinary key name must not reshape the record.
                key = self._masker.scan_key(k) if isinstance(k, str) else k
                if key != k:
                    while key in out_dict or key in node:
                        key += "#"
                    masked.add(f"{at}/{_escape(key)}")
                out_dict[key] = self.walk(v, f"{at}/{_escape(key)}", masked)
            return out_dict
        return node

    def _item(self, v: Any, at: str, masked: set[str], leaf: str | None) -> Any:
        if leaf is not None and isinstance(v, dict):
            return {k: (x if k == leaf else self.walk(x, f"{at}/{_escape(k)}", masked)) for k, x in v.items()}
        return self.walk(v, at, masked)


def _collect(value: Any, out: list[str]) -> None:
    """Every scalar under a secret key, as the text it would appear as."""
    if isinstance(value, str):
        out.append(value[:MAX_SCAN_CHARS])
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        out.append(json.dumps(value))
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out)
    elif isinstance(value, list):
        for v in value:
            _collect(v, out)


def _take_pointer(doc: Any, pointer: str, secrets: list[str]) -> bool:
    """Masks the value at ``pointer``; True when there was one to mask."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    last = parts[-1] if parts else ""
    if isinstance(node, dict) and last in node and node[last] not in (MASK, None, ""):
        _collect(node[last], secrets)
        node[last] = MASK
        return True
    if isinstance(node, list) and last.isdigit() and int(last) < len(node) and node[int(last)] not in (MASK, None, ""):
        _collect(node[int(last)], secrets)
        node[int(last)] = MASK
        return True
    return False
