"""Masks secrets in what goes to the audit log.

The audit sink (airlock/gateway/_audit.py) calls :meth:`Masker.mask_event` on every
rendered event in its writer thread, so masking never runs on the event
loop, and covers every string of the event: the policy input and result,
reason and shadow-reason messages, session_id, tool, call_id, raw arguments,
observation items, execution errors. It works in two passes:

1. **Find secrets by name.** Object keys whose name looks secret
   (``audit.mask.key_pattern``: ``password``, ``api_keys``, ``authToken``,
   ``passwordConfirmation``, ``db_pass``, ...) anywhere in the event, and
   JSON pointers you list (``audit.mask.pointers``, relative to the policy
   input as OPA's ``system.log.mask`` is, e.g. ``/call/arguments/api_key``).
   Their values are replaced by ``**masked**`` and remembered.
2. **Scrub every string.** Each remembered value (when at least
   ``MIN_EXACT_SECRET_CHARS`` long, also in its JSON- and repr-escaped
   spellings) is replaced wherever else it appears -- in a schema error
   message, a reason message, the raw arguments of a malformed call -- and so
   is any text matching the value patterns (``audit.mask.value_patterns``:
   bearer and Basic credentials, Authorization and Cookie headers,
   ``password: x`` and ``"cookie": "x"`` in free text for every word of the
   key pattern (quoted values across escaped quotes, also with JSON ``\\u``
   escapes for the quotes and separator), ``mysql -pX``, URLs with
   ``user:password@``, Azure ``AccountKey=``/``SharedAccessSignature=`` and
   SAS ``sig=``, JWTs, OpenAI, Stripe, Slack, Google, AWS, GitHub and
   Hugging Face keys, private-key blocks). Raw JSON text (a refused call's
   ``arguments_raw``, an unparsed observation item) is also checked by key
   name: each ``"key":`` in it is decoded (``"\\u0070assword"``) and, when
   secret, its value is masked, whether or not the text parses.

Masking a string costs time linear in its length with a small constant: the
text is encoded once and each pattern runs on RE2's DFA; groups are read only
over a match, and a match longer than ``_SUBMATCH_BYTES`` is masked whole; a
string with more than ``MAX_MATCHES_PER_STRING`` matches is masked whole.
All spans are masked in one pass. The writer thread is shared by every
principal, so this bounds what one crafted string can take from the others
(60 KB of ``\\u00e4password=a`` repeated took 0.2-0.4 s before, 2 ms now).

Non-ASCII text is matched twice: as it is, and **normalised** (NFKD
compatibility decomposition, with combining marks and invisible format
characters dropped; see :func:`_fold`), so ``p\\u00e4ssword=`` (an a with an
umlaut), fullwidth letters and ``pass\\u200bword=`` (a zero-width space) read
as ``password=`` to the patterns and to the key check, while the patterns
stay ASCII. The mask lands on the original characters that produced the
match. Letters of other scripts that only look Latin (Cyrillic er,
``\\u0440``) are not normalised, nor are Hangul syllables (they decompose
into jamo, never into ASCII, and keeping them spares Korean text the
second pass).

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
import bisect
import contextlib
import functools
import itertools
import json
import re
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
#: The secret words: one list for the key pattern and the value patterns.
_WORDS = (
    r"password|passwd|passphrase|secret[_-]?key|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|authorization|credentials?|cookie|pwd"
)
#: ``pass`` only as a word of its own (``pass``, ``db_pass``, ``dbPass``), so
#: that ``bypass``, ``compass`` and ``passage`` stay readable.
_PASS = r"(?:(?:^|[^a-z])pass|(?-i:[a-z0-9]P)ass)"  # noqa: S105 - a pattern, not a password
#: Keys are matched in full, case-insensitively: any key ending in a secret
#: word, also with a numeric suffix (``password2``), as a plural
#: (``api_keys``) or with a camelCase suffix (``passwordConfirmation``). A
#: group whose name starts with "loose" marks the forms that also name
#: counts and flags: when it takes part in the match, a number or boolean
#: under the key stays (``max_tokens: 4096``, ``passwordRequired: true``).
DEFAULT_KEY_PATTERN = (
    rf"(?i)^.*(?:{_WORDS}|{_PASS})(?P<loose_plural>s)?(?:[_-]?[0-9]+)?"
    r"(?P<loose_camel>(?-i:[A-Z][a-z])[A-Za-z0-9]*)?$"
)
_BASIC = r"(?i)\bbasic\s{1,8}(?P<secret>[A-Za-z0-9+/]{8,}={0,2})"
#: After a secret word in text: the key's closing quote (also JSON-escaped,
#: or closing a subscript: ``env['DB_PASSWORD'] = x``), then ``:`` or ``=``
#: (also as ``\u003a``/``\u003d``).
_KEY_QUOTE = r"(?:\\{0,3}[\"']\]?|\\{1,3}u002[27])"
_KEY_END = rf"{_KEY_QUOTE}?\s{{0,8}}(?:[:=]|\\{{1,3}}u003[ad])\s{{0,8}}"
#: The value after it. A quoted value spans escaped characters (``"x\"y"``
#: is masked whole; in JSON-escaped text, ``\"x\\\"y\"``, the escapes are
#: doubled), and a quote that is never closed (a cut string) masks the rest
#: of the line.
_VALUE = (
    r"(?:\"(?P<secret>(?:[^\"\\\r\n]|\\.)*)\""
    r"|\\\"(?P<secret2>(?:[^\"\\\r\n]|\\[^\"\\\r\n]|\\\\(?:\\.|[^\\\r\n]))*)\\\""
    r"|\\{1,3}\"(?P<secret3>[^\"\r\n]+)\""
    r"|\\{0,3}'(?P<secret4>(?:[^'\\\r\n]|\\+[^\\\r\n])*)\\{0,3}'"
    r"|\\{1,3}u002[27](?P<secret5>[^\"'\\\r\n]+)"
    r"|(?P<secret6>[^\s\"',;&\\]+)"
    r"|\\{0,3}[\"'](?P<secret7>[^\r\n]+))"
)
_BARE = r"(?P<secret6>[^\s\"',;&\\]+)"
#: The same after a "loose" form (plural, camelCase suffix): a bare number stays.
_TEXT_VALUE = _VALUE.replace(_BARE, r"(?P<secret6>[^\s\"',;&\\0-9.+-][^\s\"',;&\\]*)")
#: RE2 syntax. A group whose name starts with "secret" marks what is masked
#: (the rest of the match stays readable); without one the whole match is.
#: No long counted repetition where matches can overlap (``[a-z]{0,30}``
#: before a URL's ``://``, ``{0,200}`` after ``mysql``): every overlapping
#: count is a DFA state of its own, and crafted text (``a.b.c...``) made
#: RE2's DFA outgrow its cache and fall back to the NFA, 0.1-0.3 s per 64 KB.
DEFAULT_VALUE_PATTERNS = (
    # Authorization and Cookie headers in free text (curl -H, logs), whatever the scheme.
    (
        r"(?i)(?:(?:proxy-)?authorization|(?:set-)?cookie)\\{0,3}[\"']?\s{0,8}[:=]\s{0,8}\\{0,3}[\"']?"
        r"(?P<secret>[^\"'\\\r\n]+)"
    ),
    r"(?i)\bbearer\s{1,8}(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
    _BASIC,
    # password: x / password="x" / "password": "x" / token=x inside any string
    # (the key pattern's words), also JSON-escaped by an encoder that escapes
    # more than it must (password\u003dx, \u0022password\u0022\u003a\u0022x\u0022).
    rf"(?i)(?:{_WORDS})(?:[_-]?[0-9]{{1,4}})?{_KEY_END}{_VALUE}",
    # The key pattern's loose forms: api_keys=x, passwordConfirmation: x (tokens: 5 stays).
    rf"(?i)(?:{_WORDS})(?:s|(?-i:[A-Z][a-z])[A-Za-z0-9]*){_KEY_END}{_TEXT_VALUE}",
    # pass as a word of its own: quoted with : or =, bare with = only (so a
    # test report's "PASS: test_x" stays).
    (
        rf"(?i){_PASS}(?:[_-]?[0-9]{{1,4}})?"
        rf"(?:{_KEY_QUOTE}\s{{0,8}}(?:[:=]|\\{{1,3}}u003[ad])|\s{{0,8}}(?:=|\\{{1,3}}u003d))\s{{0,8}}"
        rf"{_VALUE}"
    ),
    # The MySQL/MariaDB clients take the password glued to -p: -pX, -p'X', -p"X"
    # (a bare -p prompts; -P is the port).
    (
        r"(?i)\b(?:mysql(?:dump|admin|import|show|check|pump|slap|binlog|sh)?|mariadb(?:-?dump|-?admin)?)\b"
        r"[^\r\n|;&]*?\s(?-i:-p)"
        r"(?:\\{0,3}'(?P<secret>[^'\\\r\n]+)\\{0,3}'|\\{0,3}\"(?P<secret2>[^\"\\\r\n]+)\\{0,3}\""
        r"|(?P<secret3>[^\s'\"\\;&|]+))"
    ),
    # Azure connection strings: storage account keys, Service Bus/Event Hubs
    # keys, and a whole SAS token.
    r"(?i)\b(?:AccountKey|SharedAccessKey|SharedAccessSignature)\s{0,8}=\s{0,8}(?P<secret>[^;\s\"'\\]+)",
    # A SAS token's signature in a URL or connection string (& may be \u0026-escaped).
    r"(?i)(?:^|[?&;\s\"']|\\u0026)sig=(?P<secret>[^&;\s\"'\\#]+)",
    # scheme://user:password@host
    r"(?i)\b[a-z][a-z0-9+.-]*://[^\s/?#@:]*:(?P<secret>[^\s/?#@]+)@",
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
#: Event fields holding JSON text as it came: a refused call's raw arguments
#: and an item that did not parse (both cut to ``RAW_AUDIT_CHARS`` when the
#: event is built). Their keys are checked by name too (see ``_raw_pairs``).
RAW_JSON_FIELDS = frozenset({"/input/call/arguments_raw", "/input/item/item_json"})
#: A string in which the value patterns match more often than this (or, in
#: raw JSON text, which has more keys than this) is masked whole: the work
#: per match is what a crafted string multiplies (60 KB of ``password=a ``
#: took 0.2-0.4 s in the writer thread that every principal shares), and
#: this keeps a string's cost linear in its length with a small constant.
MAX_MATCHES_PER_STRING = 128
#: A match longer than this many bytes is masked whole (see ``_Pattern.add``).
_SUBMATCH_BYTES = 512
#: Keys and strings up to this long have their verdicts cached.
_CACHED_KEY_CHARS = 128
#: A trailing run of token characters at a cut: it may be half a secret that
#: the value patterns no longer recognise, so it goes with the rest.
_CUT_TOKEN = r"[^\s\"',;]{1,1000}\z"  # noqa: S105 - a pattern, not a password
#: A named group's opening in a pattern (not after an escaping backslash).
_GROUP = re.compile(r"(?<!\\)((?:\\\\)*)\(\?P<[A-Za-z_][A-Za-z0-9_]*>")
#: A key in JSON text: its quoted name (escapes included) and the colon.
_JSON_KEY = r"\"((?:[^\"\\\r\n]|\\.)*)\"\s*:\s*"
#: What a key's name says about its value (see DEFAULT_KEY_PATTERN).
_PLAIN, _SECRET, _SECRET_TEXT = 0, 1, 2
_JSON_DECODER = json.JSONDecoder()


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


#: Where the characters that _fold changes live; every other code point
#: folds to itself (tests/unit/test_mask.py checks all of Unicode).
_FOLD_RANGES = ((0x80, 0x20000), (0x2F800, 0x2FA20), (0xE0000, 0xE1000))
_HANGUL_SYLLABLES = range(0xAC00, 0xD7A4)


def _fold_char(codepoint: int) -> str:
    char = chr(codepoint)
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):
        # Combining marks and invisible format characters (zero-width
        # space and joiners, soft hyphen) only hide a word.
        return ""
    if codepoint in _HANGUL_SYLLABLES:
        # They decompose into jamo, never into anything a pattern looks
        # for; kept, Korean text costs no normalised pass.
        return char
    return "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)) or char


class _FoldTable(dict[int, str]):
    """str.translate table for :func:`_fold`, filled as characters are met."""

    def __missing__(self, codepoint: int) -> str:
        out = _fold_char(codepoint)
        self[codepoint] = out
        return out


_FOLD_TABLE = _FoldTable()


def _fold(text: str) -> str:
    """Compatibility-decomposed, without combining marks or format
    characters: ``pässword`` -> ``password``, fullwidth -> ASCII. Case is
    kept; the patterns say (?i) where they mean it."""
    return text.translate(_FOLD_TABLE)


class _FoldLengths(dict[int, str]):
    """str.translate table: each character to chr(the length of its fold)."""

    def __missing__(self, codepoint: int) -> str:
        out = chr(len(_FOLD_TABLE[codepoint]))
        self[codepoint] = out
        return out


_FOLD_LENGTHS = _FoldLengths()


def _char_class(codepoints: list[int]) -> Any:
    ranges: list[list[int]] = []
    for cp in codepoints:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return compile_pattern("[" + "".join(f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges) + "]")


@functools.cache
def _fold_classes() -> tuple[Any, Any]:
    """RE2 classes of the characters _fold changes, and of those it does not
    fold to exactly one character: two DFA scans tell whether a text needs
    the normalised pass, and whether its indices shift. Built once (~0.1 s)."""
    changes: list[int] = []
    resizes: list[int] = []
    for low, high in _FOLD_RANGES:
        for cp in range(low, high):
            if 0xD800 <= cp < 0xE000:  # noqa: PLR2004 - surrogates
                continue
            out = _fold_char(cp)
            if out != chr(cp):
                changes.append(cp)
                if len(out) != 1:
                    resizes.append(cp)
    return _char_class(changes), _char_class(resizes)


def _unfold(text: str, data: bytes, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans in ``_fold(text)`` as spans of ``text`` (``data`` is its UTF-8):
    C-speed prefix sums of the fold lengths, one Python step per span."""
    if _fold_classes()[1].search(data) is None:
        return spans  # every character folds to one: the same indices
    # NFKD expands a character to at most 18, so every length is one byte.
    ends = list(itertools.accumulate(text.translate(_FOLD_LENGTHS).encode("latin-1")))
    return [(bisect.bisect_right(ends, start), bisect.bisect_right(ends, end - 1) + 1) for start, end in spans]


def _json_name(text: str) -> str:
    """A JSON key's name from its quoted text: ``\\u0070assword`` reads as
    ``password``. Text that does not decode is taken as it stands."""
    try:
        name = json.loads(f'"{text}"')
    except ValueError:
        return text
    # A lone surrogate (\ud800) cannot be matched (RE2 takes UTF-8).
    return str(name).encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _masks(kind: int, value: Any) -> bool:
    """Whether a value under a key of this kind is masked: never an empty
    one; a number or boolean only under a strictly secret key."""
    if kind == _PLAIN or value is None or value == MASK:
        return False
    if isinstance(value, str | list | dict) and not value:
        return False  # nothing to hide (an empty `secrets: []` obligation, say)
    return kind == _SECRET or not isinstance(value, int | float)


def _escape(part: str) -> str:
    if "~" not in part and "/" not in part:
        return part
    return part.replace("~", "~0").replace("/", "~1")


class _Pattern:
    def __init__(self, source: str) -> None:
        self.regex = compile_pattern(source)
        # Matches are found by a program without groups, which RE2 runs on
        # its DFA alone; the groups are read by running the capturing one on
        # the match only. (never_capture is not enough: google-re2 still
        # asks for every group, and reading groups over a 64 KB match takes
        # RE2's NFA ~20 ms.)
        self.find = self.regex
        bare = _GROUP.sub(r"\1(?:", source)
        if bare != source:
            with contextlib.suppress(ValueError):
                find = compile_pattern(bare)
                if find.groups == 0:
                    self.find = find
        # Indices: google-re2's Match.span takes a group number only.
        self.groups = [index for name, index in self.regex.groupindex.items() if name.startswith("secret")]
        self.check = _VALIDATORS.get(source)

    def add(self, data: bytes, start: int, end: int, out: list[tuple[int, int]]) -> None:
        """The byte spans one match (``data[start:end]``) masks. A match
        longer than ``_SUBMATCH_BYTES`` is masked whole: reading its groups
        costs RE2's NFA time in proportion to its length."""
        m = self.regex.fullmatch(data[start:end]) if self.groups and end - start <= _SUBMATCH_BYTES else None
        if m is None:
            out.append((start, end))
            return
        for s, e in (m.span(g) for g in self.groups):
            if s >= 0 and e > s and (self.check is None or self.check(data[start + s : start + e].decode())):
                out.append((start + s, start + e))


def _char_spans(text: str, data: bytes, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte spans of ``data`` (``text`` in UTF-8) as character spans."""
    if len(data) == len(text):
        return spans
    chars: dict[int, int] = {}
    at_byte = at_char = 0
    for offset in sorted({o for span in spans for o in span}):
        at_char += len(data[at_byte:offset].decode("utf-8", "surrogatepass"))
        chars[offset] = at_char
        at_byte = offset
    return [(chars[start], chars[end]) for start, end in spans]


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
        self._key_loose = (
            [index for name, index in self._key.groupindex.items() if name.startswith("loose")] if self._key else []
        )
        self._values = tuple(_Pattern(p) for p in value_patterns)
        # One pass over a string tells whether any pattern can match; most
        # strings match none, and then one search replaces one per pattern.
        # (An alternation, not an RE2::Set: a Set that runs out of DFA memory
        # reports "no match", where one program falls back to the NFA. Its
        # DFA stays small because no pattern has an overlapping count; see
        # DEFAULT_VALUE_PATTERNS.)
        self._any = None
        if self._values:
            options = _options()
            options.never_capture = True
            self._any = re2.compile("|".join(f"(?:{p.find.pattern})" for p in self._values), options)
        self._cut = compile_pattern(_CUT_TOKEN)
        self._json_key = compile_pattern(_JSON_KEY)
        # Built once per process, here rather than on the first non-ASCII
        # event, which would wait for it in the writer thread.
        _fold_classes()
        # Key names repeat across events; their verdicts are worth keeping.
        self._key_verdicts = functools.lru_cache(maxsize=4096)(self._key_kind_uncached)
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
        raw = frozenset(p.removeprefix("/input") for p in RAW_JSON_FIELDS)
        copy = _Scrub(self, secrets, exempt=False, raw=raw).walk(copy, "", masked)
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
                if _masks(self._key_kind(k), v):
                    _collect(v, secrets)
                    node[k] = MASK
                    masked.add(here)
                else:
                    node[k] = self._by_name_node(v, here, masked, secrets)
            return node
        if isinstance(node, list):
            return [self._by_name_node(v, f"{at}/{i}", masked, secrets) for i, v in enumerate(node)]
        return node

    def _key_kind(self, key: Any) -> int:
        if self._key is None or not isinstance(key, str):
            return _PLAIN
        return int(self._key_verdicts(key)) if len(key) <= _CACHED_KEY_CHARS else self._key_kind_uncached(key)

    def _key_kind_uncached(self, key: str) -> int:
        assert self._key is not None
        key = key[:MAX_SCAN_CHARS]
        m = self._key.match(key)
        if m is None and not key.isascii():
            m = self._key.match(_fold(key))
        if m is None:
            return _PLAIN
        loose = any(m.span(g)[1] > m.span(g)[0] >= 0 for g in self._key_loose)
        return _SECRET_TEXT if loose else _SECRET

    def scan_key(self, key: str) -> str:
        return self.scan(key, [])

    # -- pass 2 helpers --------------------------------------------------------------

    def scan(self, text: str, exact: list[str], *, raw: bool = False) -> str:
        """One string: cut to the cap, known secrets replaced, value patterns
        (and, in ``raw`` JSON text, secret-looking keys) masked."""
        out = text
        if len(out) > MAX_SCAN_CHARS:
            head = self._cut.sub("", out[:MAX_SCAN_CHARS])
            out = f"{head}**cut {len(text) - len(head)} chars**"
        for secret in exact:
            if secret in out:
                out = out.replace(secret, MASK)
        if raw:
            return self._patterns(out, raw=True)
        return str(self._short_scans(out)) if len(out) <= _CACHED_KEY_CHARS else self._patterns(out)

    def _patterns(self, text: str, *, raw: bool = False) -> str:
        """Every span to mask is found on the text as it is (and on its
        normalised form), then all are masked in one pass."""
        spans: list[tuple[int, int]] = []
        if raw and not self._raw_pairs(text, spans):
            return MASK
        if self._any is not None:
            if not self._spans(text, spans):
                return MASK
            data = b"" if text.isascii() else text.encode("utf-8", "surrogatepass")
            if data and _fold_classes()[0].search(data) is not None:
                found: list[tuple[int, int]] = []
                if not self._spans(_fold(text), found):
                    return MASK
                if found:
                    spans.extend(_unfold(text, data, found))
        return _apply(text, spans) if spans else text

    def _spans(self, text: str, out: list[tuple[int, int]]) -> bool:
        """The value patterns' spans in ``text``; False past
        MAX_MATCHES_PER_STRING matches. The text is encoded once and every
        program runs on the bytes (google-re2 encodes a str on every call)."""
        assert self._any is not None
        data = text.encode("utf-8", "surrogatepass")
        if self._any.search(data) is None:
            return True
        found: list[tuple[int, int]] = []
        matches = 0
        for pattern in self._values:
            for m in pattern.find.finditer(data):
                matches += 1
                if matches > MAX_MATCHES_PER_STRING:
                    return False
                start, end = m.span()
                pattern.add(data, start, end, found)
        try:
            out.extend(_char_spans(text, data, found))
        except UnicodeDecodeError:  # a configured pattern split a character (\C)
            return False
        return True

    def _raw_pairs(self, text: str, out: list[tuple[int, int]]) -> bool:
        """Values under secret-looking keys in JSON text that was not parsed
        (duplicate keys, a cut, any malformation): each key's name is
        decoded (``\\u0070assword``) and checked like a parsed key, and its
        value, found with a JSON scanner, is masked; a value that does not
        scan (cut, malformed) is masked to the end. False past
        MAX_MATCHES_PER_STRING keys."""
        if self._key is None:
            return True
        keys = 0
        done = 0  # keys inside a value already masked are skipped
        for m in self._json_key.finditer(text):
            keys += 1
            if keys > MAX_MATCHES_PER_STRING:
                return False
            name = m.group(1)
            if m.start() < done:
                continue
            kind = self._key_kind(_json_name(name) if "\\" in name else name)
            if kind == _PLAIN:
                continue
            start = m.end()
            try:
                value, end = _JSON_DECODER.raw_decode(text, start)
            except (ValueError, RecursionError):
                out.append((start, len(text)))
                return True
            if not _masks(kind, value):
                continue
            out.append((start + 1, end - 1) if isinstance(value, str) else (start, end))
            done = end
        return True


class _Scrub:
    """Pass 2 over one document: every string, keys included."""

    def __init__(
        self, masker: Masker, secrets: list[str], *, exempt: bool = True, raw: frozenset[str] = RAW_JSON_FIELDS
    ) -> None:
        self._masker = masker
        self._exempt = exempt
        self._raw = raw
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
            out = self._masker.scan(node, self._exact, raw=at in self._raw)
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
