"""`airlock policy replay`'s judgement, without OPA: a policy answer as an
outcome, the change between two outcomes, masked values' substitutes, which
events replay, the restored input, and the tally's table and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airlock.cli._paths import DEFAULT_REGISTRY
from airlock.cli._replay import not_replayable, read_events, restore
from airlock.cli._replay_diff import (
    MASK,
    Outcome,
    Tally,
    change,
    input_pointers,
    judge,
    outcome,
    substituted,
)
from airlock.gateway import load_registry

ALLOWED = {"allow": True, "reasons": [{"code": "allowed", "message": "ok"}], "shadow": []}


def answer(allow: bool, *codes: str, **extra: Any) -> dict[str, Any]:
    return {"allow": allow, "reasons": [{"code": c, "message": c} for c in codes], **extra}


@pytest.mark.parametrize(
    ("doc", "defined", "want"),
    [
        (ALLOWED, True, Outcome("allow", ("allowed",))),
        (answer(False, "b", "a"), True, Outcome("deny", ("a", "b"))),
        (answer(False, "approval_required", ask=True), True, Outcome("ask", ("approval_required",))),
        (answer(False, "approval_required", verdict="ask"), True, Outcome("ask", ("approval_required",))),
        # Shadowed denies and asks are part of the outcome, sorted together.
        (
            answer(True, "allowed", shadow=[{"code": "z", "message": ""}], shadow_asks=[{"code": "y", "message": ""}]),
            True,
            Outcome("allow", ("allowed",), ("y", "z")),
        ),
        # Fail closed, as the gateway does.
        (None, False, Outcome("deny", ("policy_undefined",))),
        ({"allow": "yes", "reasons": []}, True, Outcome("deny", ("policy_malformed",))),
        ({"allow": True, "reasons": []}, True, Outcome("deny", ("policy_malformed",))),
        ({"allow": False, "reasons": [{"message": "no code"}]}, True, Outcome("deny", ("policy_malformed",))),
        ([1, 2], True, Outcome("deny", ("policy_malformed",))),
    ],
)
def test_an_answer_as_an_outcome(doc: Any, defined: bool, want: Outcome) -> None:
    assert outcome(doc, defined=defined) == want


A = Outcome("allow", ("allowed",))
D = Outcome("deny", ("tool_not_granted",))
D2 = Outcome("deny", ("argument_denied",))
Q = Outcome("ask", ("approval_required",))


@pytest.mark.parametrize(
    ("old", "new", "want"),
    [
        (A, A, None),
        (A, D, "allow->deny"),
        (D, A, "deny->allow"),
        (A, Q, "allow->ask"),
        (D, Q, "deny->ask"),
        (Q, A, "ask->allow"),
        (D, D2, "reasons"),
        (A, Outcome("allow", ("allowed",), ("argument_denied",)), "reasons"),
    ],
)
def test_the_change_between_two_outcomes(old: Outcome, new: Outcome, want: str | None) -> None:
    assert change(old, new) == want


def test_substitutes_that_disagree_make_the_event_undetermined_never_unchanged() -> None:
    assert judge(A, [A, D]) == "undetermined"
    assert judge(A, [D, A]) == "undetermined"
    assert judge(A, [A, A]) is None
    assert judge(A, [D, D]) == "allow->deny"


def test_masked_pointers_into_the_input_except_the_tool_entry() -> None:
    masked = ["/input/call/arguments/command", "/input/tool/env/x", "/reasons/0/message", "/input/call/a~1b~0c"]
    assert input_pointers(masked) == [["call", "arguments", "command"], ["call", "a/b~c"]]


def test_the_second_substitute_drops_the_masks_and_leaves_the_rest() -> None:
    doc = {
        "call": {
            "arguments": {"command": f"echo password={MASK}", "api_key": MASK, "list": ["a", MASK]},
            "tool": "shell",
        }
    }
    pointers = input_pointers(
        [
            "/input/call/arguments/command",
            "/input/call/arguments/api_key",
            "/input/call/arguments/list/1",
            "/input/call/missing/x",
        ]
    )
    other = substituted(doc, pointers)
    assert other is not None
    assert other["call"]["arguments"] == {"command": "echo password=", "api_key": "", "list": ["a", ""]}
    assert doc["call"]["arguments"]["api_key"] == MASK  # a copy
    assert substituted(doc, input_pointers(["/input/call/missing/x"])) is None


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "decision",
        "decision_id": "d1",
        "tool": "shell",
        "path": "airlock/decision",
        "reasons": [{"code": "allowed", "message": ""}],
        "input": {"call": {"tool": "shell", "arguments": {"command": "ls"}}, "tool": {"name": "shell"}},
        "result": ALLOWED,
        "masked": [],
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("ev", "want"),
    [
        (event(), None),
        # Refused before the policy: the raw call, no path.
        (
            event(
                path="",
                reasons=[{"code": "arguments_malformed", "message": ""}],
                input={"call": {"arguments_raw": "{x"}},
            ),
            "arguments_malformed",
        ),
        # The minimal event of a decision whose event could not be built.
        (event(path="", reasons=[{"code": "internal_error", "message": ""}], input={}), "internal_error"),
        # Asked but never answered: no recorded verdict to compare with.
        (
            {k: v for k, v in event(reasons=[{"code": "policy_unreachable", "message": ""}]).items() if k != "result"},
            "policy_unreachable",
        ),
    ],
)
def test_which_events_replay(ev: dict[str, Any], want: str | None) -> None:
    assert not_replayable(ev) == want


def test_the_candidate_registry_entry_is_put_back_and_the_schema_rechecked() -> None:
    registry = load_registry(DEFAULT_REGISTRY)
    doc = {
        "call": {"tool": "shell", "arguments": {"command": "ls", "extra": 1.0}, "arguments_errors": []},
        "tool": {"name": "shell"},
        "counters": {"session_calls": 3.0, "ratio": 0.5},
    }
    got = restore(doc, registry, keep_errors=False)
    assert got["tool"] == registry.tool_data("shell")
    # Whole numbers are integers again, as the gateway's input had them.
    assert got["counters"] == {"session_calls": 3, "ratio": 0.5}
    assert isinstance(got["counters"]["session_calls"], int)
    assert got["call"]["arguments_errors"], "the extra argument breaks shell's schema"
    kept = restore(
        {"call": {"tool": "shell", "arguments": {"command": MASK, "x": 1}, "arguments_errors": ["as recorded"]},
         "tool": {"name": "shell"}},
        registry,
        keep_errors=True,
    )  # fmt: skip
    assert kept["call"]["arguments_errors"] == ["as recorded"]
    # A tool the candidate registry does not have: no entry, as the gateway would send.
    gone = restore({"call": {"tool": "gone", "arguments": {}}, "tool": {"name": "gone"}}, registry, keep_errors=False)
    assert gone["tool"] is None
    # Not a tool call (a tool definition's admission): as recorded.
    define = {"op": "define", "definition": {"name": "x"}}
    assert restore(dict(define), registry, keep_errors=False) == define


def test_a_corrupt_line_is_recorded_with_its_file_and_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_text(
        json.dumps({"kind": "checkpoint", "seq": "1"}) + "\n" + "garbage\n" + "[1]\n" + json.dumps(event()) + "\n"
    )
    tally = Tally()
    events = list(read_events([log], tally))
    assert [e["decision_id"] for e in events] == ["d1"]
    assert [(c.file, c.line) for c in tally.corrupt] == [(str(log), 2), (str(log), 3)]
    assert str(tally.corrupt[0]).startswith(f"{log}:2: not JSON")


def test_the_tally_counts_keeps_n_examples_per_cell_and_renders_a_table() -> None:
    tally = Tally(examples=2)
    for i in range(3):
        tally.record("python", f"p{i}", "allow->deny")
    tally.record("shell", "s0", "undetermined")
    tally.record("shell", "s1", None)
    tally.record("shell", "s2", "reasons")
    tally.skip("arguments_malformed")
    doc = tally.as_json(policy_revision="r")
    assert doc["policy_revision"] == "r"
    assert (doc["replayed"], doc["changed"], doc["undetermined"], doc["unchanged"]) == (6, 4, 1, 1)
    assert doc["not_replayable"] == {"arguments_malformed": 1}
    assert doc["changes"] == [
        {"tool": "python", "change": "allow->deny", "count": 3, "examples": ["p0", "p1"]},
        {"tool": "shell", "change": "reasons", "count": 1, "examples": ["s2"]},
        {"tool": "shell", "change": "undetermined", "count": 1, "examples": ["s0"]},
    ]
    assert tally.exit_code == 1
    lines = tally.text().splitlines()
    assert lines[0].startswith("4 of 6 replayed decision(s) changed; 1 undetermined")
    assert "1 not replayable (arguments_malformed 1)" in lines[0]
    assert lines[2].split() == ["TOOL", "CHANGE", "COUNT", "EXAMPLES"]
    assert lines[3].split() == ["python", "allow->deny", "3", "p0", "p1"]


def test_nothing_changed_exits_0_and_undetermined_alone_exits_1() -> None:
    tally = Tally()
    tally.record("shell", "s", None)
    tally.skip("internal_error")
    assert tally.exit_code == 0
    tally.record("shell", "u", "undetermined")
    assert tally.exit_code == 1
