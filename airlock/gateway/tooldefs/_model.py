"""Dynamic tools' objects: a definition as the model wrote it, its canonical
form and digest, the catalog's record of it, and the errors (each with the
reason code the caller, the audit log and the metrics see)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from airlock.gateway._errors import GatewayError

#: The scopes a definition can have: its defining session (and sessions that
#: defined the same thing again), all of its owner's sessions, or every
#: principal of a profile ("profile:NAME").
ScopeKind = Literal["session", "principal", "profile"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("session", "principal", "profile")


class DefinitionError(GatewayError):
    """A definition, or a use of one, that is refused; ``code`` is the reason."""

    code = "definition_invalid"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class Definition:
    """What the model asked for, validated (airlock.gateway.tooldefs._validate)."""

    name: str
    description: str
    parameters: dict[str, Any]
    source: str
    base: str
    network: bool = False

    def canonical(self) -> bytes:
        """Sorted keys, no whitespace, UTF-8: the same definition always has
        the same bytes, so the same digest."""
        doc = {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "source": self.source,
            "base": self.base,
            "network": self.network,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def id_for(self, owner: str) -> str:
        """Content-addressed within one owner: two owners who define the same
        thing get different ids, so an id reveals nothing across principals."""
        digest = hashlib.sha256(owner.encode("utf-8") + b"\n" + self.canonical()).hexdigest()
        return f"tool_{digest[:32]}"

    def policy_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "source": self.source,
            "base": self.base,
            "network": self.network,
            "sha256": self.sha256,
            "source_bytes": len(self.source.encode("utf-8")),
        }


@dataclass(frozen=True)
class DefinitionRecord:
    """The catalog's row for one definition (its body lives in the artifact store)."""

    id: str
    owner: str
    name: str
    base: str
    sha256: str
    scope: str
    retired: bool
    created_at: float
    session_id: str
    call_id: str
    policy_revision: str
    decision_id: str
    artifact_id: str
    description: str
    network: bool
    calls: int = 0
    sessions: int = 0

    @property
    def scope_kind(self) -> ScopeKind:
        kind = self.scope.partition(":")[0]
        return "principal" if kind == "principal" else "profile" if kind == "profile" else "session"


@dataclass(frozen=True)
class Resolved:
    """A dynamic tool a call names: its record and its definition."""

    record: DefinitionRecord
    definition: Definition

    def policy_doc(self) -> dict[str, Any]:
        """``input.tool_definition`` for the call's decision."""
        return {
            **self.definition.policy_doc(),
            "id": self.record.id,
            "scope": self.record.scope,
            "owner": self.record.owner,
        }
