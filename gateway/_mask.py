"""Masks secrets in what goes to the audit log.

Three kinds of rule, all configurable in gateway.yaml (``audit.mask``):
JSON pointers into the policy input (OPA's ``system.log.mask`` style, e.g.
``/call/arguments/api_key``), object keys whose name looks secret
(``password``, ``token``, ``api_key``, ...), and regular expressions for
secret-shaped strings anywhere (bearer tokens, ``sk-...`` keys, AWS key ids,
private-key blocks). The policy still sees the real input; only the audit
copy is masked, and the event lists the pointers it masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "**masked**"
DEFAULT_KEY_PATTERN = r"(?i)^(.*[_-])?(password|passwd|secret|token|api[_-]?key|authorization|credentials?)$"
DEFAULT_VALUE_PATTERNS = (
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"(?i)\b(password|passwd|secret|api[_-]?key|token)=[^\s&;'\"]+",
)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


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
        self._key = re.compile(key_pattern) if key_pattern else None
        self._values = tuple(re.compile(p) for p in value_patterns)

    def mask(self, doc: Any) -> tuple[Any, list[str]]:
        """A masked deep copy of ``doc`` and the pointers that were masked."""
        # _walk builds new containers all the way down, so the pointer edits
        # below touch only the copy.
        masked: list[str] = []
        out = self._walk(doc, "", masked)
        masked.extend(pointer for pointer in self._pointers if _set_pointer(out, pointer))
        return out, sorted(set(masked))

    def _walk(self, node: Any, at: str, masked: list[str]) -> Any:
        if isinstance(node, dict):
            result = {}
            for k, v in node.items():
                here = f"{at}/{_escape(str(k))}"
                if self._key is not None and isinstance(k, str) and self._key.match(k) and v not in (MASK, None, ""):
                    result[k] = MASK
                    masked.append(here)
                else:
                    result[k] = self._walk(v, here, masked)
            return result
        if isinstance(node, list):
            return [self._walk(v, f"{at}/{i}", masked) for i, v in enumerate(node)]
        if isinstance(node, str) and node != MASK:
            text = node
            for pattern in self._values:
                text = pattern.sub(MASK, text)
            if text != node:
                masked.append(at)
            return text
        return node


def _set_pointer(doc: Any, pointer: str) -> bool:
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
    if isinstance(node, dict) and last in node:
        node[last] = MASK
        return True
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = MASK
        return True
    return False
