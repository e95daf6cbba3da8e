"""Prints how long masking takes on hostile and ordinary input, before
(the old backtracking private-key pattern, Python `re`) and after (RE2, the
whole-event Masker). A script, not a test: timings are machine-dependent.

    .venv/bin/python tests/data/audit/mask_timing.py
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from airlock.gateway._mask import Masker

OLD_PRIVATE_KEY = r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"


def _best(fn: Any, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    hostile = "-----BEGIN PRIVATE KEY-----" * 2200  # ~60 KB, no END line
    old = re.compile(OLD_PRIVATE_KEY)
    masker = Masker()

    def event(text: str) -> dict[str, Any]:
        return {"kind": "decision", "input": {"call": {"arguments": {"code": text}}}, "reasons": [], "masked": []}

    print(f"hostile argument: {len(hostile)} chars")
    print(f"  old: private-key pattern alone (re)      {_best(lambda: old.sub('x', hostile), 2) * 1000:9.1f} ms")
    new = _best(lambda: masker.mask_event(event(hostile)))
    print(f"  new: whole event, every pattern (RE2)    {new * 1000:9.1f} ms")
    ordinary = json.dumps({"code": "import math\n" + "print(math.sqrt(2))\n" * 3000})
    print(f"ordinary argument: {len(ordinary)} chars")
    new = _best(lambda: masker.mask_event(event(ordinary)))
    print(f"  new: whole event                         {new * 1000:9.1f} ms")
    small = {
        "kind": "decision",
        "session_id": "s1",
        "tool": "python",
        "call_id": "call_1",
        "input": {"call": {"arguments": {"code": "print(1)"}, "arguments_errors": []}},
        "reasons": [{"code": "allowed", "message": "allowed"}],
        "masked": [],
    }
    runs = 2000
    started = time.perf_counter()
    for _ in range(runs):
        masker.mask_event(json.loads(json.dumps(small)))
    print(f"typical small event: {(time.perf_counter() - started) / runs * 1e6:9.1f} µs per event")


if __name__ == "__main__":
    main()
