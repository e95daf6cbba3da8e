"""Unit tier: dynamic tools' validation, canonical form and ids, the program
a call runs, the catalog's scopes, and the CLI's escaping. The real path
(OPA, Docker, the openai SDK) is tests/integration/test_dynamic_tools.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airlock.cli._tools_cmd import escape
from airlock.gateway.tooldefs import Catalog, Definition, DefinitionError, DefinitionRecord, parse_definition, program

REGISTERED = {"python": object(), "shell": object()}
SCHEMA = json.dumps({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})


def args(**over: Any) -> dict[str, Any]:
    base = {
        "name": "summarize_csv",
        "description": "Summarise a CSV file.",
        "parameters": SCHEMA,
        "source": "print(ARGS['path'])",
        "base": "python",
        "network": False,
    }
    return {**base, **over}


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"name": "x"}, "definition_invalid"),
        (args(extra=1), "definition_invalid"),
        (args(network="no"), "definition_invalid"),
        (args(name="1abc"), "definition_name_invalid"),
        (args(name="a-b"), "definition_name_invalid"),
        (args(name="x" * 65), "definition_name_invalid"),
        (args(name="python"), "definition_name_taken"),
        (args(name="define_tool"), "definition_name_taken"),
        (args(description="d" * 1025), "definition_invalid"),
        (args(source="x" * (64 * 1024 + 1)), "source_too_large"),
        (args(base="nope"), "base_unknown"),
        (args(parameters="{"), "schema_invalid"),
        (args(parameters="[]"), "schema_invalid"),
        (args(parameters='{"type": "string"}'), "schema_invalid"),
        (args(parameters='{"type": "object", "properties": {"a": {"type": 5}}}'), "schema_invalid"),
        (args(parameters='{"type": "object", "properties": {"a": {"$ref": "http://x/y"}}}'), "schema_invalid"),
        (args(parameters='{"type": "object", "properties": {"a": {"$ref": "#/$defs/none"}}}'), "schema_invalid"),
        (args(parameters='{"type": "object", "a": ' + "[" * 40 + "]" * 40 + "}"), "schema_invalid"),
    ],
)
def test_a_bad_definition_is_refused_with_its_own_code(arguments: dict[str, Any], code: str) -> None:
    with pytest.raises(DefinitionError) as err:
        parse_definition(arguments, REGISTERED)
    assert err.value.code == code


#: Outside the linear-time subset: fetched, backtracking, quadratic, multiplying.
OUTSIDE_THE_SUBSET: list[dict[str, Any]] = [
    {"properties": {"a": {"$dynamicRef": "http://127.0.0.1/x"}}},
    {"properties": {"a": {"$ref": "#/$defs/d"}}, "$defs": {"d": {}}},
    {"$id": "http://127.0.0.1/s"},
    {"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}},
    {"patternProperties": {"^(a+)+$": {}}},
    {"propertyNames": {"maxLength": 3}},
    {"properties": {"a": {"type": "array", "uniqueItems": True}}},
    {"allOf": [{}, {}]},
    {"properties": {"a": {"format": "email"}}},
    {"properties": {"a": {"items": {"anyOf": [{}]}}}},
    {"properties": {"a": {"enum": list(range(65))}}},
    {"$schema": "http://json-schema.org/draft-04/schema#"},
]


@pytest.mark.parametrize("schema", OUTSIDE_THE_SUBSET)
def test_a_schema_outside_the_subset_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError) as err:
        parse_definition(args(parameters=json.dumps({"type": "object", **schema})), REGISTERED)
    assert err.value.code == "schema_invalid"


def test_a_good_definition_parses() -> None:
    d = parse_definition(args(), REGISTERED)
    assert d.name == "summarize_csv"
    assert d.parameters["required"] == ["path"]
    assert d.policy_doc()["source_bytes"] == len("print(ARGS['path'])")


def test_the_canonical_form_and_ids() -> None:
    a = parse_definition(args(), REGISTERED)
    # The same definition with its schema written differently is the same.
    b = parse_definition(args(parameters=json.dumps(json.loads(SCHEMA), indent=4)), REGISTERED)
    assert a.canonical() == b.canonical()
    assert a.sha256 == b.sha256
    assert a.id_for("alice") == b.id_for("alice")
    # Another owner, another id; another body, another digest.
    assert a.id_for("alice") != a.id_for("bob")
    assert a.id_for("alice").startswith("tool_")
    assert len(a.id_for("alice")) == len("tool_") + 32
    c = parse_definition(args(source="print(2)"), REGISTERED)
    assert c.sha256 != a.sha256


@pytest.mark.parametrize(
    "arguments",
    [
        {"path": "a.csv"},
        {"path": "'''\"\"\"\\n\\x00 é \U0001f600", "n": [1, 2, {"k": None}]},
        {"path": "'); import os; os.system('id'); ('"},
    ],
)
def test_the_program_passes_arguments_and_source_as_data(arguments: dict[str, Any]) -> None:
    d = Definition(
        "echo",
        "",
        {"type": "object"},
        "import json, sys\nprint(json.dumps(ARGS, sort_keys=True))\nprint(__name__)\n",
        "python",
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", program(d, arguments)], capture_output=True, text=True, check=True
    ).stdout
    first, second = out.splitlines()
    assert json.loads(first) == arguments
    assert second == "__main__"


def test_a_traceback_names_the_tool_and_its_own_line() -> None:
    d = Definition("boom", "", {"type": "object"}, "x = 1\nraise ValueError('no')\n", "python")
    err = subprocess.run([sys.executable, "-I", "-c", program(d, {})], check=False, capture_output=True, text=True)
    assert 'File "<tool boom>", line 2' in err.stderr


def _record(did: str, owner: str, name: str, session: str, created_at: float = 1.0) -> DefinitionRecord:
    return DefinitionRecord(
        id=did,
        owner=owner,
        name=name,
        base="python",
        sha256="0" * 64,
        scope="session",
        retired=False,
        created_at=created_at,
        session_id=session,
        call_id="c",
        policy_revision="r",
        decision_id="d",
        artifact_id="art_x",
        description="",
        network=False,
    )


def test_the_catalog_scopes(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "c" / "tools.sqlite")
    assert oct((tmp_path / "c" / "tools.sqlite").stat().st_mode & 0o777) == "0o600"
    rec, created = cat.add(_record("tool_a", "alice", "t", "s1"))
    assert created
    assert rec.scope == "session"
    # Its session sees it; another session of its owner, and anyone else, do not.
    assert [r.id for r in cat.visible("alice", "default", "s1")] == ["tool_a"]
    assert cat.visible("alice", "default", "s2") == []
    assert cat.visible("bob", "default", "s1") == []
    # Defined again in s2 by the same owner: the same record, visible there too.
    _, created = cat.add(_record("tool_a", "alice", "t", "s2"))
    assert not created
    assert [r.id for r in cat.visible("alice", "default", "s2")] == ["tool_a"]
    # Promoted to the principal: every session of alice, still not bob.
    cat.set_scope("tool_a", "principal")
    assert [r.id for r in cat.visible("alice", "default", "s9")] == ["tool_a"]
    assert cat.visible("bob", "default", "s1") == []
    # To a profile: its principals, not another profile's; its owner keeps it.
    cat.set_scope("tool_a", "profile:default")
    assert [r.id for r in cat.visible("bob", "default", "")] == ["tool_a"]
    assert cat.visible("carol", "untrusted", "") == []
    cat.set_scope("tool_a", "profile:other")
    assert [r.id for r in cat.visible("alice", "default", "s7")] == ["tool_a"]
    cat.set_scope("tool_a", "profile:default")
    # Used twice in one session, once in another.
    cat.used("tool_a", "s1")
    cat.used("tool_a", "s1")
    cat.used("tool_a", "s3")
    got = cat.get("tool_a")
    assert got is not None
    assert (got.calls, got.sessions) == (3, 2)
    # Retired: visible no more, but found among the retired.
    cat.retire("tool_a")
    assert cat.visible("bob", "default", "") == []
    assert [r.id for r in cat.visible("bob", "default", "", name="t", retired=True)] == ["tool_a"]
    assert cat.owned_live("alice") == 0
    assert cat.owned_count("alice") == 1
    assert cat.retired_name("alice", "t")
    assert not cat.retired_name("alice", "u")
    cat.close()


def test_the_most_specific_scope_wins(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "tools.sqlite")
    cat.add(_record("tool_shared", "bob", "t", "b1", created_at=1.0))
    cat.set_scope("tool_shared", "profile:default")
    cat.add(_record("tool_mine", "alice", "t", "s1", created_at=2.0))
    assert [r.id for r in cat.visible("alice", "default", "s1", name="t")] == ["tool_mine", "tool_shared"]
    assert [r.id for r in cat.visible("alice", "default", "s2", name="t")] == ["tool_shared"]


def test_escape_shows_what_a_model_wrote_without_obeying_it() -> None:
    hostile = "ok\x1b[2J\x1b]0;pwned\x07\r\u202egnp.exe\u200b\x85\x7f"
    shown = escape(hostile)
    assert all(c.isprintable() for c in shown)
    assert shown == "ok\\x1b[2J\\x1b]0;pwned\\x07\\r\\u202egnp.exe\\u200b\\x85\\x7f"
    assert escape("a\n\tb\r", keep_lines=True) == "a\n\tb\\r"
    assert escape("back\\slash é ✓") == "back\\\\slash é ✓"


def test_a_subset_schema_parses() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 9, "description": "d"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
            "mode": {"enum": ["a", "b"]},
            "opts": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
        "required": ["n"],
        "additionalProperties": False,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
    }
    assert parse_definition(args(parameters=json.dumps(schema)), REGISTERED).parameters == schema


def test_a_schema_that_points_outside_is_never_fetched() -> None:
    """Registry schemas too: the validators resolve nothing outside the
    schema (no retrieval), so such a reference fails instead of fetching."""
    import referencing.exceptions  # noqa: PLC0415

    from airlock.gateway._input import schema_errors  # noqa: PLC0415

    with pytest.raises(referencing.exceptions.Unresolvable):
        schema_errors({"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}, {"a": 1})
