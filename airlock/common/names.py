"""The one rule for an artifact's name, which the gateway applies to what
it stores and the executor to what a sandbox leaves under /outputs and what
goes into /inputs: a plain file name that cannot name a path, hide a
character, or look like another name."""

from __future__ import annotations

import unicodedata

#: The longest name in UTF-8 bytes (a common file system's file name limit).
MAX_NAME_BYTES = 255
#: Control, format, surrogate and line/paragraph separator characters.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def name_problem(name: str) -> str | None:  # noqa: PLR0911 - one return per rule reads best
    """Why ``name`` is not a plain file name, or None: not empty, not . or
    .., no / or \\, no control, format or separator character, no
    whitespace at either end (so a name is never blank and never looks like
    another), at most MAX_NAME_BYTES in UTF-8, in NFC (so two spellings of
    one name are never two names)."""
    if not name:
        return "is empty"
    if name in {".", ".."}:
        return f"cannot be {name!r}"
    if "/" in name or "\\" in name:
        return "cannot contain / or \\"
    if any(unicodedata.category(c) in _HIDDEN for c in name):
        return "cannot contain control, format or separator characters"
    if name != name.strip() or any(unicodedata.category(c) == "Zs" for c in (name[0], name[-1])):
        return "cannot start or end with whitespace"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode"
    if size > MAX_NAME_BYTES:
        return f"is at most {MAX_NAME_BYTES} bytes in UTF-8 (got {size})"
    if unicodedata.normalize("NFC", name) != name:
        return "must be in Unicode NFC form"
    return None


__all__ = ["MAX_NAME_BYTES", "name_problem"]

#: The gateway's built-in tool through which a model defines a tool of its
#: own (docs/dynamic-tools.md); the agent loop re-lists its tools after one.
DEFINE_TOOL = "define_tool"
