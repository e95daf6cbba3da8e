"""What ``airlock policy replay`` compares and how it reports it, with no I/O:
a policy answer reduced to its outcome (verdict, reason codes, shadowed
codes), the change between the recorded outcome and the candidate's, the
masked values' substitutes, and the tally printed as a table or as JSON.
airlock/cli/_replay.py reads the audit log and asks OPA; this module judges."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

#: What the audit sink writes in place of a masked value (airlock/gateway/_mask.py).
MASK = "**masked**"
VERDICTS = ("allow", "deny", "ask")
#: The change kinds, in the order the table lists them. A change of verdict
#: is named ``old->new``; ``reasons`` is the same verdict with other reason
#: (or shadowed) codes; ``undetermined`` is an event whose masked values
#: decide the candidate's outcome.
CHANGES = (
    "allow->deny",
    "deny->allow",
    "allow->ask",
    "deny->ask",
    "ask->allow",
    "ask->deny",
    "reasons",
    "undetermined",
)
DEFAULT_EXAMPLES = 3


@dataclass(frozen=True)
class Outcome:
    """A decision as replay compares it."""

    verdict: str
    #: The reason codes, sorted (their order and messages are not compared).
    codes: tuple[str, ...]
    #: Shadowed (report-only) deny and ask codes, sorted.
    shadow: tuple[str, ...] = ()


def _codes(raw: Any) -> tuple[str, ...] | None:
    if not isinstance(raw, list):
        return None
    codes = [c for r in raw if isinstance(r, dict) and isinstance(c := r.get("code"), str) and c]
    if len(codes) != len(raw):
        return None
    return tuple(sorted(codes))


def outcome(answer: Any, *, defined: bool = True) -> Outcome:
    """A policy answer as the gateway would take it, failing closed: an
    undefined answer is a deny (``policy_undefined``) and a malformed one a
    deny (``policy_malformed``). ``ask`` is an answer with ``ask: true`` or
    ``verdict: "ask"`` that does not allow (deny beats ask, ask beats allow)."""
    if not defined:
        return Outcome("deny", ("policy_undefined",))
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        return Outcome("deny", ("policy_malformed",))
    codes = _codes(answer.get("reasons"))
    shadow = _codes(answer.get("shadow", [])) or ()
    shadow_asks = _codes(answer.get("shadow_asks", [])) or ()
    if not codes:
        return Outcome("deny", ("policy_malformed",))
    stated = answer.get("verdict")
    if answer["allow"] and stated in (None, "allow"):
        verdict = "allow"
    elif answer.get("ask") is True or stated == "ask":
        verdict = "ask"
    else:
        verdict = "deny"
    return Outcome(verdict, codes, tuple(sorted(shadow + shadow_asks)))


def change(old: Outcome, new: Outcome) -> str | None:
    """The change kind (one of :data:`CHANGES`), or None when nothing changed."""
    if old.verdict != new.verdict:
        return f"{old.verdict}->{new.verdict}"
    if old.codes != new.codes or old.shadow != new.shadow:
        return "reasons"
    return None


def judge(old: Outcome, candidates: Sequence[Outcome]) -> str | None:
    """The change for one event, evaluated once per substitute of its masked
    values: when the substitutes disagree the masked values decide, so the
    event is ``undetermined``, never unchanged."""
    if len(set(candidates)) > 1:
        return "undetermined"
    return change(old, candidates[0])


# -- masked values -----------------------------------------------------------------


def input_pointers(masked: Iterable[Any]) -> list[list[str]]:
    """The masked JSON pointers that point into the policy input, as paths
    relative to it. The tool's registry entry is not among them: replay puts
    the candidate registry's entry back."""
    out = []
    for pointer in masked:
        if not isinstance(pointer, str) or not pointer.startswith("/input/"):
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[2:]]
        if parts and parts[0] == "tool":
            continue
        out.append(parts)
    return out


def _substitute(value: Any) -> Any:
    """The other substitute for a masked value: the recorded text without
    its masks (a wholly masked value becomes the empty string), so a rule
    that reads the value (its emptiness, length, content) tells the two apart."""
    if isinstance(value, str) and value != MASK and MASK in value:
        return value.replace(MASK, "")
    return ""


def substituted(doc: dict[str, Any], pointers: Sequence[Sequence[str]]) -> dict[str, Any] | None:
    """A copy of the policy input with the second substitute at every masked
    pointer; None when no pointer reaches a value (nothing to vary)."""
    out = orjson.loads(orjson.dumps(doc))
    hit = False
    for parts in pointers:
        node: Any = out
        for part in parts[:-1]:
            node = _child(node, part)
            if node is None:
                break
        if node is None or not parts:
            continue
        last = parts[-1]
        if isinstance(node, dict) and last in node:
            node[last] = _substitute(node[last])
            hit = True
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = _substitute(node[int(last)])
            hit = True
    return out if hit else None


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None


# -- the tally ------------------------------------------------------------------------


@dataclass
class Cell:
    count: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Corrupt:
    """An audit line that is not a JSON object."""

    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


@dataclass
class Tally:
    """Every decision event of the replay, counted."""

    examples: int = DEFAULT_EXAMPLES
    #: Decision events read (replayed or not).
    decisions: int = 0
    replayed: int = 0
    unchanged: int = 0
    changed: int = 0
    undetermined: int = 0
    #: Decision events with no recorded policy input or answer, by reason code.
    not_replayable: Counter[str] = field(default_factory=Counter)
    corrupt: list[Corrupt] = field(default_factory=list)
    #: (tool, change) -> count and example decision ids.
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def record(self, tool: str, decision_id: str, kind: str | None) -> None:
        """One replayed decision and its change (None: unchanged)."""
        self.replayed += 1
        if kind is None:
            self.unchanged += 1
            return
        if kind == "undetermined":
            self.undetermined += 1
        else:
            self.changed += 1
        cell = self.cells.setdefault((tool, kind), Cell())
        cell.count += 1
        if len(cell.examples) < self.examples:
            cell.examples.append(decision_id)

    def skip(self, reason: str) -> None:
        self.not_replayable[reason or "unknown"] += 1

    @property
    def exit_code(self) -> int:
        """1 when a decision changed or could not be determined, else 0."""
        return 1 if self.changed or self.undetermined else 0

    def rows(self) -> list[tuple[str, str, Cell]]:
        order = {c: i for i, c in enumerate(CHANGES)}
        return sorted(
            ((tool, kind, cell) for (tool, kind), cell in self.cells.items()),
            key=lambda r: (r[0], order.get(r[1], len(order)), r[1]),
        )

    def as_json(self, **about: Any) -> dict[str, Any]:
        return {
            **about,
            "decisions": self.decisions,
            "replayed": self.replayed,
            "changed": self.changed,
            "undetermined": self.undetermined,
            "unchanged": self.unchanged,
            "not_replayable": dict(sorted(self.not_replayable.items())),
            "corrupt_lines": [{"file": c.file, "line": c.line, "problem": c.problem} for c in self.corrupt],
            "changes": [
                {"tool": tool, "change": kind, "count": cell.count, "examples": list(cell.examples)}
                for tool, kind, cell in self.rows()
            ],
        }

    def text(self) -> str:
        skipped = sum(self.not_replayable.values())
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.not_replayable.items()))
        lines = [
            f"{self.changed} of {self.replayed} replayed decision(s) changed; {self.undetermined} undetermined "
            f"(masked values decide); {self.unchanged} unchanged; {skipped} not replayable"
            + (f" ({why})" if why else "")
        ]
        lines.extend(f"corrupt line {c}" for c in self.corrupt)
        rows = [(tool, kind, str(cell.count), " ".join(cell.examples)) for tool, kind, cell in self.rows()]
        if rows:
            head = ("TOOL", "CHANGE", "COUNT", "EXAMPLES")
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
            lines.append("")
            lines.extend("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in [head, *rows])
        return "\n".join(lines)


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)
