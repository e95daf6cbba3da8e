"""Masking: every string of an event is masked, by key name, by pointer, by
the values those found (wherever else they appear), and by secret shapes;
one table row per shape, each with a near miss that must stay readable."""

from __future__ import annotations

import json
import random
import re
import string
import time
import unicodedata
from typing import Any

import pytest

from airlock.common import ConfigError, parse_config
from airlock.gateway._config import AuditConfig, MaskConfig
from airlock.gateway._mask import _FOLD_RANGES, _SUBMATCH_BYTES, MASK, MAX_MATCHES_PER_STRING, MAX_SCAN_CHARS, Masker

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"  # AIza + 35
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0A1b2C3d4E5f6G7h8"
RSA_BODY = "MIIEowIBAAKCAQEA7bq5xO0n4mSecretKeyMaterial"
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"


# (shape, text holding a secret, the part that must vanish, a near miss that must stay as it is)
SHAPES = [
    (
        "password= in code",
        'db.connect(user="bob", password="hunter2xyz")',
        "hunter2xyz",
        "the password field is required",
    ),
    ("password: in prose", "login with password: Tr0ub4dor&3", "Tr0ub4dor", "Reset your password now, please"),
    ("password in raw JSON", '{"password": "hunter2xyz", "user": "bob"}', "hunter2xyz", '{"passwords_count": 3}'),
    ("token= in a URL query", "GET /api?token=abcdef123456&page=2", "abcdef123456", "GET /api?tokens_left=5&page=2"),
    ("JWT", f"cookie was {JWT} today", JWT.split(".")[1], "eyJhbGciOi.notajwt and eyJ.x.y"),
    (
        "URL with user:password@",
        "postgres://admin:s3cretPass@db.internal:5432/app",
        "s3cretPass",
        "https://example.com:8443/path?q=1 and mailto:bob@example.com",
    ),
    (
        "HTTP Basic",
        "Authorization was Basic dXNlcjpwYXNzd29yZA== yesterday",
        "dXNlcjpwYXNzd29yZA",
        "basic configuration",
    ),
    ("Authorization header", 'curl -H "Authorization: Token abcdef123456" x', "abcdef123456", "authorization failed"),
    ("bearer", "sent Bearer abc.def-ghi_jkl/mno to it", "abc.def-ghi_jkl", "the bearer of bad news"),
    ("OpenAI sk-", "key sk-proj-AbCdEfGhIjKlMnOpQrStUv end", "AbCdEfGhIjKlMnOpQrStUv", "sk-short is fine"),
    ("Stripe live secret", "stripe sk_live_51H8abcdEFGHijklMNOP", "51H8abcdEFGHijklMNOP", "sk_live_abc"),
    (
        "Stripe test restricted",
        "stripe rk_test_51H8abcdEFGHijklMNOP",
        "51H8abcdEFGHijklMNOP",
        "pk_live_51H8abcdEFGHijklMNOP",
    ),
    ("Slack", "slack xoxb-123456789012-abcdefABCDEF", "123456789012-abcdefABCDEF", "xoxz-123456789012-abcdef"),
    ("Google API key", f"maps {GOOGLE} end", GOOGLE[4:], "AIzaShort12345"),
    ("AWS key id", "aws AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE", "AKIAIOSFODNN7"),
    ("GitHub token", f"gh {GITHUB}", GITHUB[4:], "ghp_short"),
    (
        "private-key block",
        f"-----BEGIN RSA PRIVATE KEY-----\n{RSA_BODY}\n-----END RSA PRIVATE KEY-----",
        RSA_BODY,
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
    ),
    (
        "private-key block cut before its END",
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{RSA_BODY}",
        RSA_BODY,
        "-----BEGIN CERTIFICATE-----\nMIIB",
    ),
    # The MySQL client takes the password glued to -p; -P is the port, a
    # bare -p prompts, and mkdir -p is something else entirely.
    ("mysql -pX", "mysql -h db -u root -pHunter7xyz app", "Hunter7xyz", "mkdir -pv /srv/mysql && mysql -P3306 -p app"),
    ("mysql -p'X'", "mysqldump -u root -p'Hunter 7xyz' app", "Hunter 7xyz", "mysql -u root -p app"),
    ("mysql --password=X", "mysql --password=Hunter7xyz app", "Hunter7xyz", "mysql --password app (prompts)"),
    (
        "Azure AccountKey=",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net",
        AZURE_KEY[:40],
        "DefaultEndpointsProtocol=https;AccountName=acct;EndpointSuffix=core.windows.net",
    ),
    (
        "Azure SharedAccessSignature=",
        "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&ss=b&sig=AbCdEf%2B1%3D",
        "AbCdEf%2B1",
        "SharedAccessSignature is not enabled for this account",
    ),
    (
        "SAS sig= in a URL",
        "GET https://a.blob.core.windows.net/c/b.txt?sv=2022-11-02&sp=r&sig=AbCdEf%2B123%3D HTTP/1.1",
        "AbCdEf%2B123",
        "https://example.com/?design=flat&signal=on&sign=up",
    ),
    (
        "SAS sig= behind a JSON-escaped &",
        "https://a.blob.core.windows.net/c?sv=2022-11-02\\u0026sig=AbCdEf%2B123%3D\\u0026sp=r",
        "AbCdEf%2B123",
        "config\\u0026signal=on",
    ),
    (
        "Hugging Face token",
        f"huggingface-cli login --token {HF_TOKEN}",
        HF_TOKEN[3:],
        "from huggingface_hub import hf_hub_download",
    ),
    (
        "password\\u003d in raw text",
        "config password\\u003dHunter7xyz end",
        "Hunter7xyz",
        "the password\\u0020field is required",
    ),
    (
        "JSON-escaped quotes and colon",
        "\\u0022password\\u0022\\u003a\\u0022Hunter7xyz\\u0022",
        "Hunter7xyz",
        "\\u0022password_hint\\u0022",
    ),
    # Non-ASCII spellings are normalised (NFKD, marks and invisible characters
    # dropped) before matching; the mask lands on the original characters.
    ("p\u00e4ssword=", "login with p\u00e4ssword=Hunter7xyz", "Hunter7xyz", "p\u00e4sse w\u00f6rd gesucht"),
    (
        "fullwidth password",
        "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff1aHunter7xyz",
        "Hunter7xyz",
        "\uff50\uff41\uff53\uff53",
    ),
    ("zero-width space in the key", "pass\u200bword=Hunter7xyz", "Hunter7xyz", "pass\u200bing word"),
    ("decomposed umlaut", "pa\u0308ssword=Hunter7xyz", "Hunter7xyz", "pa\u0308sse"),
    # A quoted value runs to its closing quote, across escaped ones.
    ("escaped quote in a value", 'password = "x\\"Hunter7xyz"', "Hunter7xyz", 'password_hint = "x\\"y"'),
    (
        "escaped quote in a JSON-escaped value",
        '{"code": "password = \\"x\\\\\\"Hunter7xyz\\""}',
        "Hunter7xyz",
        '{"code": "password_hint = \\"x\\\\\\"y\\""}',
    ),
    ("a quote never closed (a cut)", "password: 'Hunter7xyz", "Hunter7xyz", "password: ''"),
    # The value patterns know every word of the key pattern.
    ("Cookie header", "curl -H 'Cookie: sid=Hunter7xyz; theme=dark' x", "Hunter7xyz", "cookie policy accepted"),
    ('"credentials": in text', '{"credentials": "Hunter7xyz"}', "Hunter7xyz", '{"credentials_file": "/etc/x"}'),
    ("private_key= in text", "private_key='Hunter7xyz'", "Hunter7xyz", "private_key_path='/etc/key'"),
    ("SECRET_KEY in code", "SECRET_KEY = 'Hunter7xyz'", "Hunter7xyz", "SECRET_KEY_FILE = 'key.txt'"),
    ("a subscript", "os.environ['DB_PASSWORD'] = 'Hunter7xyz'", "Hunter7xyz", "os.environ['DB_HOST'] = 'db'"),
    ("numbered", "password2=Hunter7xyz", "Hunter7xyz", "password_policy=strict"),
    ("plural", "api_keys=Hunter7xyz", "Hunter7xyz", "max_tokens=4096 and tokens: 5"),
    ("camelCase suffix", 'passwordConfirmation: "Hunter7xyz"', "Hunter7xyz", "tokenCount: 5, passwordless login"),
    ("pass as a word", "export DB_PASS=Hunter7xyz", "Hunter7xyz", "bypass=1 compass=north passage=3 PASS: test_x"),
    ('"pass": in JSON', '{"user": "bob", "pass": "Hunter7xyz"}', "Hunter7xyz", '{"bypass": "yes", "compass": "n"}'),
]


def _event(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "kind": "decision",
        "decision_id": "d1",
        "principal": "dev-agent",
        "decision": "deny",
        "session_id": "",
        "tool": "python",
        "call_id": "c1",
        "seq": "7",
        "prev_hash": "ab" * 32,
        "reasons": [],
        "input": {},
        "masked": [],
    }
    doc.update(fields)
    return doc


@pytest.mark.parametrize(("shape", "text", "secret", "near_miss"), SHAPES, ids=[row[0] for row in SHAPES])
def test_every_secret_shape_is_masked_and_its_near_miss_is_not(
    shape: str, text: str, secret: str, near_miss: str
) -> None:
    masker = Masker()
    doc = _event(reasons=[{"code": "c", "message": text}])
    assert masker.mask_event(doc) == ["/reasons/0/message"], shape
    assert secret not in doc["reasons"][0]["message"]
    assert MASK in doc["reasons"][0]["message"]
    clean = _event(reasons=[{"code": "c", "message": near_miss}])
    assert masker.mask_event(clean) == [], shape
    assert clean["reasons"][0]["message"] == near_miss


def test_url_credentials_keep_the_user_and_host_readable() -> None:
    doc = _event(session_id="postgres://admin:s3cretPass@db.internal:5432/app")
    Masker().mask_event(doc)
    assert doc["session_id"] == f"postgres://admin:{MASK}@db.internal:5432/app"


def test_a_value_masked_by_key_name_is_masked_everywhere_else_too() -> None:
    """The leaks the review found: a password masked under its key came back
    in clear in a schema error message, a reason message and arguments_raw."""
    secret = 'CorrectHorse"Battery'
    doc = _event(
        input={
            "call": {
                "arguments": {"password": secret, "note": "x"},
                "arguments_errors": [f"{secret!r} is too long"],
                "arguments_raw": json.dumps({"password": secret}),
            }
        },
        reasons=[{"code": "arguments_invalid", "message": f"/password: {secret!r} is too long"}],
        shadow_reasons=[{"code": "argument_denied", "message": f"saw {secret}"}],
        result={"reasons": [{"code": "x", "message": f"value {secret}"}]},
        execution={"outcome": "error", "error": f"exit: {secret}"},
    )
    masked = Masker().mask_event(doc)
    text = json.dumps(doc)
    assert "CorrectHorse" not in text
    assert masked == [
        "/execution/error",
        "/input/call/arguments/password",
        "/input/call/arguments_errors/0",
        "/input/call/arguments_raw",
        "/reasons/0/message",
        "/result/reasons/0/message",
        "/shadow_reasons/0/message",
    ]
    assert doc["reasons"][0]["code"] == "arguments_invalid"  # codes are a closed set: never touched


def test_top_level_session_tool_and_call_id_are_masked() -> None:
    doc = _event(session_id="sk-live-0123456789abcdefXYZ", tool="AKIAIOSFODNN7EXAMPLE", call_id=f"call {JWT}")
    masked = Masker().mask_event(doc)
    assert masked == ["/call_id", "/session_id", "/tool"]
    assert "0123456789abcdef" not in json.dumps(doc)


def test_pointers_stay_relative_to_the_policy_input() -> None:
    masker = Masker(pointers=["/call/arguments/custom_field"])
    doc = _event(
        input={"call": {"arguments": {"custom_field": "plain-looking-value", "other": "echo plain-looking-value"}}}
    )
    assert masker.mask_event(doc) == ["/input/call/arguments/custom_field", "/input/call/arguments/other"]
    assert doc["input"]["call"]["arguments"] == {"custom_field": MASK, "other": f"echo {MASK}"}


def test_fields_from_closed_sets_survive_a_password_chosen_to_match_them() -> None:
    """A caller cannot blank its own principal, the verdict or the chain by
    picking a "password" equal to them."""
    doc = _event(
        input={
            "principal": {"id": "dev-agent", "profile": "default"},
            "call": {"arguments": {"password": "dev-agent", "api_key": "decision"}},
        }
    )
    Masker().mask_event(doc)
    assert doc["principal"] == "dev-agent"
    assert doc["input"]["principal"]["id"] == "dev-agent"
    assert doc["kind"] == "decision"
    assert doc["prev_hash"] == "ab" * 32


def test_keys_numbers_and_nested_values_under_secret_keys() -> None:
    doc = _event(
        input={
            "call": {
                "arguments": {
                    "sk-live-0123456789abcdefXYZ": 1,
                    "pin_password": 73920184,
                    "credentials": {"user": "bob", "pass": "nested-secret-value"},
                    "log": "pin 73920184 and nested-secret-value",
                }
            }
        }
    )
    Masker().mask_event(doc)
    args = doc["input"]["call"]["arguments"]
    assert "sk-live-0123456789abcdefXYZ" not in json.dumps(doc)
    assert args["pin_password"] == MASK
    assert args["credentials"] == MASK
    assert args["log"] == f"pin {MASK} and {MASK}"


def test_an_empty_value_under_a_secret_key_is_not_reported_masked() -> None:
    """Nothing to hide: an empty list, object or string stays, and no
    pointer says it was masked (every decision has `secrets: []`)."""
    doc = _event(input={"call": {"arguments": {"secrets": [], "token": {}, "password": "", "api_keys": ["k-123456"]}}})
    masked = Masker().mask_event(doc)
    args = doc["input"]["call"]["arguments"]
    assert (args["secrets"], args["token"], args["password"]) == ([], {}, "")
    assert args["api_keys"] == MASK
    assert masked == ["/input/call/arguments/api_keys"]


def test_non_ascii_spellings_of_secret_keys_are_normalised() -> None:
    """Keys are matched after the same normalisation as text: p\u00e4ssword,
    fullwidth API_KEY and a key split by a zero-width space are secret keys."""
    fullwidth_api_key = "".join(chr(ord(c) + 0xFEE0) for c in "API_KEY")
    doc = _event(
        input={
            "p\u00e4ssword": "Hunter7xyz",
            fullwidth_api_key: "abcdefgh",
            "pass\u200bword": "zwsp-secret",
            "p\u00e4sse": "stays",
            "note": "Hunter7xyz and zwsp-secret",
        }
    )
    masked = Masker().mask_event(doc)
    assert doc["input"] == {
        "p\u00e4ssword": MASK,
        fullwidth_api_key: MASK,
        "pass\u200bword": MASK,
        "p\u00e4sse": "stays",
        "note": f"{MASK} and {MASK}",
    }
    assert masked == sorted(
        ["/input/p\u00e4ssword", f"/input/{fullwidth_api_key}", "/input/pass\u200bword", "/input/note"]
    )


def test_overlapping_matches_are_masked_as_one() -> None:
    """Spans found on the normalised text and on the original may overlap;
    none may be left half shown."""
    doc = _event(session_id="p\u00e4ssword=Hunter7xyz password=Other7xyz")
    Masker().mask_event(doc)
    assert "Hunter7xyz" not in doc["session_id"]
    assert "Other7xyz" not in doc["session_id"]


def test_camel_case_and_suffixed_secret_keys() -> None:
    doc = _event(input={"accessToken": "a" * 10, "clientSecret": "b" * 10, "db_password": "c" * 10, "tokens": 5})
    Masker().mask_event(doc)
    assert doc["input"] == {"accessToken": MASK, "clientSecret": MASK, "db_password": MASK, "tokens": 5}


SECRET_KEYS = [
    "api_keys",
    "secrets",
    "tokens",
    "cookies",
    "password2",
    "token_1",
    "passwordConfirmation",
    "tokenValue",
    "pass",
    "pwd",
    "db_pass",
    "dbPass",
    "DB_PASS",
    "secret_key",
    "SECRET_KEY",
]
#: Near misses of the rules above: other words, and (under the plural and
#: camelCase forms) numbers and flags, which are counts and settings.
PLAIN_KEYS = {
    "passage": "x",
    "compass": "north",
    "bypass": "yes",
    "passes": "x",
    "passport": "x",
    "passwordless": "x",
    "password_policy": "strict",
    "tokenizer": "gpt2",
    "secretary": "bob",
    "tokens": 5,
    "max_tokens": 4096,
    "tokenCount": 5,
    "passwordRequired": True,
}


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_plural_numbered_camel_case_and_pass_keys_are_secret(key: str) -> None:
    doc = _event(input={"call": {"arguments": {key: "Hunter7xyz", "note": "was Hunter7xyz"}}})
    assert Masker().mask_event(doc) == sorted([f"/input/call/arguments/{key}", "/input/call/arguments/note"])
    assert "Hunter7xyz" not in json.dumps(doc)


def test_near_misses_of_the_key_rules_stay_readable() -> None:
    doc = _event(input={"call": {"arguments": dict(PLAIN_KEYS)}})
    assert Masker().mask_event(doc) == []
    assert doc["input"]["call"]["arguments"] == PLAIN_KEYS


def test_a_number_under_a_strictly_secret_key_is_still_masked() -> None:
    doc = _event(input={"pin_password": 7392, "password2": 1234, "tokens": 5})
    Masker().mask_event(doc)
    assert doc["input"] == {"pin_password": MASK, "password2": MASK, "tokens": 5}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Any duplicate key makes a call malformed: its arguments are
        # recorded as text, where parsed keys' masking never ran.
        ('{"code":"1","cookie":"Zq7hunter2SECRET","code":"2"}', '{"code":"1","cookie":"**masked**","code":"2"}'),
        ('{"credentials": "Zq7hunter2SECRET", "a": 1, "a": 2}', '{"credentials": "**masked**", "a": 1, "a": 2}'),
        ('{"private_key": "Zq7hunter2SECRET", "a": 1, "a": 2}', '{"private_key": "**masked**", "a": 1, "a": 2}'),
        ('{"\\u0070assword": "Zq7hunter2SECRET", "a": 1, "a": 2}', '{"\\u0070assword": "**masked**", "a": 1, "a": 2}'),
        ('{"p\\u00e4ssword": "Zq7hunter2SECRET", "a": 1, "a": 2}', '{"p\\u00e4ssword": "**masked**", "a": 1, "a": 2}'),
        ('{"api_keys": ["Zq7hunter2SECRET", "k2"], "a": 1, "a": 2}', '{"api_keys": **masked**, "a": 1, "a": 2}'),
        (
            '{"auth": {"user": "u", "pwd": "Zq7hunter2SECRET"}, "a": 1, "a": 2}',
            '{"auth": {"user": "u", "pwd": "**masked**"}, "a": 1, "a": 2}',
        ),
        ('{"tokens": 5, "max_tokens": 99, "a": 1, "a": 2}', '{"tokens": 5, "max_tokens": 99, "a": 1, "a": 2}'),
        # Cut (or otherwise broken) inside the value: masked to the end.
        ('{"a": 1, "a": 2, "cookie": "Zq7hunter2SECRET', '{"a": 1, "a": 2, "cookie": **masked**'),
    ],
)
def test_raw_json_arguments_are_masked_by_key_name(raw: str, expected: str) -> None:
    doc = _event(input={"call": {"tool": "python", "arguments_raw": raw}})
    Masker().mask_event(doc)
    assert doc["input"]["call"]["arguments_raw"] == expected


def test_an_unparsed_observation_item_is_masked_by_key_name() -> None:
    item = '{"type": "mcp_call", "n": NaN, "credentials": {"user": "u", "secret": "Zq7hunter2SECRET"}}'
    doc = _event(input={"item": {"item_json": item, "status": "completed"}})
    Masker().mask_event(doc)
    assert doc["input"]["item"]["item_json"] == '{"type": "mcp_call", "n": NaN, "credentials": **masked**}'


def test_a_string_with_too_many_matches_is_masked_whole() -> None:
    """Each match costs work in the audit writer every principal shares (60
    KB of ``password=a `` took 0.2-0.4 s): past MAX_MATCHES_PER_STRING the
    string is masked whole, so a string's cost stays linear in its length."""
    many = "password=a " * (MAX_MATCHES_PER_STRING + 1)
    fewer = "password=a " * MAX_MATCHES_PER_STRING
    doc = _event(input={"many": many, "fewer": fewer})
    Masker().mask_event(doc)
    assert doc["input"]["many"] == MASK
    assert doc["input"]["fewer"] == f"password={MASK} " * MAX_MATCHES_PER_STRING


def test_a_long_match_is_masked_whole() -> None:
    """Reading a match's groups costs RE2's NFA time in proportion to the
    match: past _SUBMATCH_BYTES the whole match goes, keyword included."""
    value = "v" * (_SUBMATCH_BYTES + 1)
    doc = _event(input={"long": f'see password="{value}" here', "short": 'see password="vv" here'})
    Masker().mask_event(doc)
    assert doc["input"] == {"long": f"see {MASK} here", "short": f'see password="{MASK}" here'}


N = 64 * 1024


def _repeat(unit: str) -> str:
    return (unit * (N // len(unit) + 1))[:N]


def _scheme_like(seed: int) -> str:
    """Runs of letters and dots after a match: an overlapping ``{0,30}``
    count before a URL's ``://`` made RE2's DFA outgrow its cache."""
    rng = random.Random(seed)
    runs = ("".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 3))) + "." for _ in range(N // 3))
    return ("password=x " + "".join(runs))[:N]


def _mysql_gaps(seed: int) -> str:
    """``mysql`` with irregular gaps: the same with ``{0,200}?`` after it."""
    rng = random.Random(seed)
    return "".join("mysql" + " " * rng.randint(1, 12) for _ in range(N // 6))[:N]


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        ("password=a", _repeat("password=a ")),
        ("umlaut and password=a", _repeat("\u00e4password=a ")),
        ("zero-width space in password", _repeat("p\u200bassword=a ")),
        ("user:password@", _repeat("a://b:c@ ")),
        ("scheme-like runs", _scheme_like(1)),
        ("mysql", _mysql_gaps(2)),
    ],
)
def test_masking_a_crafted_64_kib_string_takes_milliseconds(shape: str, text: str) -> None:
    """CPU time, best of three, with a wide margin: these took 40-110 ms
    before on the 2-core development machine (0.2-0.4 s under load, in the
    audit writer every principal shares); now 1.5-7 ms."""
    masker = Masker()
    best = float("inf")
    for _ in range(3):
        doc = _event(input={"call": {"arguments": {"code": text}}})
        started = time.process_time()
        masker.mask_event(doc)
        best = min(best, time.process_time() - started)
    assert best < 0.02, f"{shape}: {best * 1000:.0f} ms"


def test_only_the_scanned_ranges_hold_characters_that_normalise() -> None:
    """_fold_classes looks for normalising characters in _FOLD_RANGES only."""
    outside = [
        cp
        for cp in range(0x80, 0x110000)
        if not any(low <= cp < high for low, high in _FOLD_RANGES)
        and not 0xD800 <= cp < 0xE000  # surrogates
        and (unicodedata.category(chr(cp)) in ("Mn", "Me", "Cf") or unicodedata.decomposition(chr(cp)))
    ]
    assert outside == []


def test_short_values_are_masked_in_place_only() -> None:
    """A 3-letter password is masked under its key, but not searched for in
    other text, where it would hit ordinary words."""
    doc = _event(input={"call": {"arguments": {"password": "abc", "text": "abcdef"}}})
    Masker().mask_event(doc)
    assert doc["input"]["call"]["arguments"] == {"password": MASK, "text": "abcdef"}


def test_long_strings_are_cut_to_the_cap_with_no_half_token_left() -> None:
    head = "x " * (MAX_SCAN_CHARS // 2 - 5)
    straddling = "sk-" + "A" * 40  # starts before the cap, ends after it
    text = head + straddling + " tail" * 1000
    doc = _event(reasons=[{"code": "c", "message": text}])
    assert Masker().mask_event(doc) == ["/reasons/0/message"]
    out = doc["reasons"][0]["message"]
    m = re.search(r"\*\*cut (\d+) chars\*\*$", out)
    assert m is not None
    kept = out[: m.start()]
    assert len(kept) <= MAX_SCAN_CHARS
    assert int(m.group(1)) == len(text) - len(kept)
    assert "sk-" not in out
    assert kept.startswith("x x x")


def test_a_60kb_private_key_argument_is_masked() -> None:
    """The input that took the old backtracking pattern ~0.9 s; correctness
    only here (no timed asserts): tests/data/audit/mask_timing.py prints the
    numbers."""
    text = "-----BEGIN PRIVATE KEY-----" * 2200
    doc = _event(input={"call": {"arguments": {"code": text}}})
    Masker().mask_event(doc)
    assert doc["input"]["call"]["arguments"]["code"] == MASK


def test_legacy_mask_of_a_policy_input_still_works() -> None:
    out, masked = Masker().mask({"call": {"arguments": {"api_key": "abcdef123", "x": "abcdef123!"}}})
    assert out == {"call": {"arguments": {"api_key": MASK, "x": f"{MASK}!"}}}
    assert masked == ["/call/arguments/api_key", "/call/arguments/x"]


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        ({"value_patterns": ["(?=lookahead)x"]}, "not valid RE2 syntax: invalid perl operator: (?="),
        ({"value_patterns": [r"(a)\1"]}, r"not valid RE2 syntax: invalid escape sequence: \1"),
        ({"key_pattern": "(unclosed"}, "not valid RE2 syntax: missing ): (unclosed"),
        ({"pointers": ["call/arguments/x"]}, "must start with '/'"),
    ],
)
def test_mask_config_rejects_patterns_re2_cannot_run(mask: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"path": "/x/audit.jsonl", "mask": mask}, AuditConfig, source="gateway.yaml", key="audit")
    assert message in str(info.value)
    assert "gateway.yaml: audit.mask" in str(info.value)


def test_mask_config_accepts_the_defaults_and_a_custom_pattern() -> None:
    cfg = parse_config({"value_patterns": [r"\bACME-[0-9]{8}\b"]}, MaskConfig, source="x", key="mask")
    doc = _event(session_id="ACME-12345678")
    assert Masker(cfg.pointers, cfg.key_pattern, cfg.value_patterns).mask_event(doc) == ["/session_id"]
