"""Dynamic tools: tools a model defines through the built-in ``define_tool``,
admitted by policy (data.airlock.tool_definitions), content-addressed,
stored in the artifact store, scoped (session, principal, profile) and
reused. See docs/dynamic-tools.md."""

from __future__ import annotations

from airlock.common.names import DEFINE_TOOL
from airlock.gateway.tooldefs._catalog import Catalog
from airlock.gateway.tooldefs._model import (
    SCOPE_KINDS,
    Definition,
    DefinitionError,
    DefinitionRecord,
    Resolved,
    ScopeKind,
)
from airlock.gateway.tooldefs._service import NAMESPACE, Prepared, ToolDefinitions, audit_doc, rfc3339
from airlock.gateway.tooldefs._validate import (
    DESCRIPTION,
    PARAMETERS,
    parse_definition,
    program,
)

#: The policy path that admits or refuses a definition.
DECISION_PATH = "airlock/tool_definitions/decision"

__all__ = [
    "DECISION_PATH",
    "DEFINE_TOOL",
    "DESCRIPTION",
    "NAMESPACE",
    "PARAMETERS",
    "SCOPE_KINDS",
    "Catalog",
    "Definition",
    "DefinitionError",
    "DefinitionRecord",
    "Prepared",
    "Resolved",
    "ScopeKind",
    "ToolDefinitions",
    "audit_doc",
    "parse_definition",
    "program",
    "rfc3339",
]
