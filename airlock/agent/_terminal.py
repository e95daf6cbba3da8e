"""Model text on the operator's terminal. ``airlock agent run`` prints what
the model wrote (answers, tool arguments, the refusal messages that quote
them); a terminal obeys control characters in it, so unescaped text could
move the cursor, rewrite earlier lines (CR, ANSI CSI), set the title or
clipboard (OSC), ring the bell, or reorder what is shown (bidi overrides).
``escape_controls`` turns every such character into a visible escape, so
what is on the screen is what was sent."""

from __future__ import annotations

import unicodedata

#: Categories escaped: control (C0, DEL, C1 incl. U+0085), format (bidi
#: embeddings/overrides/isolates, zero-width characters), lone surrogates
#: (which a UTF-8 stream cannot even encode), unassigned code points (may be
#: assigned to any of these later), and the line/paragraph separators
#: U+2028/U+2029.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    # \n, \r, \t, \xNN, \uNNNN or \UNNNNNNNN; a lone surrogate too.
    return ch.encode("unicode_escape").decode("ascii")


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character that could steer a terminal written as
    ``\\xNN``, ``\\uNNNN`` or ``\\n``/``\\r``/``\\t``. With ``keep_newlines``
    (a multi-line answer), ``\\n`` and ``\\t`` stay as they are; CR never does,
    since it lets a line overwrite itself. Backslashes are left alone: the
    output is for a human reading a terminal, not for parsing back."""
    if text.isascii() and text.isprintable():
        return text  # the common case: plain ASCII, nothing to do
    keep = ("\n", "\t") if keep_newlines else ()
    return "".join(
        _escape(ch) if ch not in keep and unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch for ch in text
    )
