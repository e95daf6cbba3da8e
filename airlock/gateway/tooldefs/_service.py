"""Dynamic tools' lifecycle: prepare and save a definition the policy
admitted, resolve a call's tool name to the definition in scope, list what a
principal sees, and the operators' promote and retire (each audited).

The gateway core decides (policy, audit of the decision, metrics); this
module keeps the catalog (SQLite) and the bodies (the artifact store, under
a namespace no principal can name: ``airlock:tools:<owner>``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from airlock.gateway._events import tool_definition_event
from airlock.gateway._model import Principal
from airlock.gateway.artifacts import ArtifactError, ArtifactStore, PutRequest, Quota
from airlock.gateway.tooldefs._catalog import Catalog, now
from airlock.gateway.tooldefs._model import Definition, DefinitionError, DefinitionRecord, Resolved
from airlock.v1 import audit_pb2

#: The store namespace of a principal's definitions. Agent ids may not start
#: with "airlock:" (gateway config), so no principal can reach it through
#: ArtifactService, and the retention sweeper leaves it alone.
NAMESPACE = "airlock:tools:"
#: A profile name in a "profile:NAME" scope.
_PROFILE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: What one owner's definitions may take in the store (bodies are small:
#: the gateway caps source and schema well below this).
_QUOTA = Quota(max_bytes=64 * 1024 * 1024, max_count=10_000, max_artifact_bytes=256 * 1024)
#: Bodies kept in memory (they never change: content-addressed).
_CACHE_ENTRIES = 1024

_T = TypeVar("_T")
Record = Callable[[audit_pb2.AuditEvent], Awaitable[None]]


@dataclass(frozen=True)
class Prepared:
    """A definition checked against the catalog, before the policy."""

    definition: Definition
    id: str
    existing: DefinitionRecord | None
    owner_definitions: int


class ToolDefinitions:
    def __init__(self, catalog: Catalog, store: ArtifactStore) -> None:
        self._catalog = catalog
        self._store = store
        self._bodies: dict[str, Definition] = {}

    async def _in_thread(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- defining ----------------------------------------------------------------

    async def prepare(self, principal: Principal, session: str, definition: Definition) -> Prepared:
        """Raises DefinitionError: the name is another visible tool's
        (definition_name_taken), or this very definition was retired."""
        did = definition.id_for(principal.id)
        same_name = await self._in_thread(
            self._catalog.visible, principal.id, principal.profile, session, name=definition.name
        )
        if any(r.id != did for r in same_name):
            raise DefinitionError(
                "definition_name_taken", f"a tool named {definition.name!r} is already visible in this session"
            )
        existing = await self._in_thread(self._catalog.get, did)
        if existing is not None and existing.retired:
            raise DefinitionError("definition_retired", f"this definition ({did}) was retired by an operator")
        # A retired name stays retired for its owner: a changed body under
        # the same name is not a way around an operator's retire.
        if await self._in_thread(self._catalog.retired_name, principal.id, definition.name):
            raise DefinitionError("definition_retired", f"{definition.name!r} was retired by an operator")
        # Retired ones count too: retiring does not hand the quota back.
        owned = await self._in_thread(self._catalog.owned_count, principal.id)
        return Prepared(definition, did, existing, owned)

    async def save(
        self,
        principal: Principal,
        prepared: Prepared,
        *,
        session: str,
        call_id: str,
        decision_id: str,
        policy_revision: str,
    ) -> tuple[DefinitionRecord, bool]:
        """Stores the body (unless this owner already has it) and adds it to
        the catalog in the session's scope. Returns the record and whether
        it is new."""
        d = prepared.definition
        created_at = now()
        artifact_id = prepared.existing.artifact_id if prepared.existing else ""
        if prepared.existing is None:
            body = {
                "definition": json.loads(d.canonical()),
                "id": prepared.id,
                "sha256": d.sha256,
                "owner": principal.id,
                "session_id": session,
                "call_id": call_id,
                "decision_id": decision_id,
                "policy_revision": policy_revision,
                "created_at": rfc3339(created_at),
            }
            content = json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")
            req = PutRequest(NAMESPACE + principal.id, f"{prepared.id}.json", "", "application/json")
            try:
                stored = await self._in_thread(self._store.put, req, [content], _QUOTA)
            except ArtifactError as exc:
                raise DefinitionError(
                    "artifact_store_unavailable", f"the definition was not stored: {exc.code}"
                ) from exc
            artifact_id = stored.id
        record = DefinitionRecord(
            id=prepared.id,
            owner=principal.id,
            name=d.name,
            base=d.base,
            sha256=d.sha256,
            scope="session",
            retired=False,
            created_at=created_at,
            session_id=session,
            call_id=call_id,
            policy_revision=policy_revision,
            decision_id=decision_id,
            artifact_id=artifact_id,
            description=d.description,
            network=d.network,
        )
        saved, created = await self._in_thread(self._catalog.add, record)
        self._remember(saved.id, d)
        return saved, created

    # -- calling -----------------------------------------------------------------

    async def resolve(self, principal: Principal, session: str, name: str) -> Resolved | None:
        """The dynamic tool ``name`` in scope for this principal and session
        (None if there is none). Raises DefinitionError: tool_retired when
        the name is only a retired one's, or the store failing."""
        rows = await self._in_thread(self._catalog.visible, principal.id, principal.profile, session, name=name)
        if not rows:
            retired = await self._in_thread(
                self._catalog.visible, principal.id, principal.profile, session, name=name, retired=True
            )
            if retired:
                raise DefinitionError("tool_retired", f"tool {name[:64]!r} was retired by an operator")
            return None
        record = rows[0]
        return Resolved(record, await self.body(record))

    async def used(self, record: DefinitionRecord, session: str) -> None:
        await self._in_thread(self._catalog.used, record.id, session)

    async def visible(self, principal: Principal, session: str) -> list[Resolved]:
        rows = await self._in_thread(self._catalog.visible, principal.id, principal.profile, session)
        seen: set[str] = set()
        out = []
        for r in rows:  # most specific first: a shadowed name is not listed twice
            if r.name not in seen:
                seen.add(r.name)
                out.append(Resolved(r, await self.body(r)))
        return out

    async def body(self, record: DefinitionRecord) -> Definition:
        cached = self._bodies.get(record.id)
        if cached is not None:
            return cached
        try:
            chunks = await self._in_thread(
                lambda: b"".join(self._store.read(NAMESPACE + record.owner, record.artifact_id))
            )
        except ArtifactError as exc:
            raise DefinitionError(
                "artifact_store_unavailable", f"the definition could not be read: {exc.code}"
            ) from exc
        try:
            doc = json.loads(chunks)["definition"]
            definition = Definition(**doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise DefinitionError("definition_corrupt", f"the stored definition {record.id} is unreadable") from exc
        if definition.sha256 != record.sha256 or definition.id_for(record.owner) != record.id:
            raise DefinitionError("definition_corrupt", f"the stored definition {record.id} does not match its digest")
        self._remember(record.id, definition)
        return definition

    def _read(self, record: DefinitionRecord) -> bytes:
        return b"".join(self._store.read(NAMESPACE + record.owner, record.artifact_id))

    def _remember(self, definition_id: str, definition: Definition) -> None:
        if len(self._bodies) >= _CACHE_ENTRIES:
            self._bodies.pop(next(iter(self._bodies)))
        self._bodies[definition_id] = definition

    # -- listing and operators ---------------------------------------------------

    async def listed(self, principal: Principal, *, everyone: bool, session: str) -> list[DefinitionRecord]:
        if everyone:
            _operator(principal, "listing every principal's tool definitions")
            return list(await self._in_thread(self._catalog.everything))
        owned = await self._in_thread(self._catalog.owned, principal.id)
        seen = {r.id for r in owned}
        shared = await self._in_thread(self._catalog.visible, principal.id, principal.profile, session)
        return owned + [r for r in shared if r.id not in seen]

    async def shown(self, principal: Principal, definition_id: str) -> Resolved:
        record = await self._in_thread(self._catalog.get, definition_id)
        # Another principal's definition does not exist for an agent, unless
        # it was promoted to the agent's profile.
        if record is None or not (
            "operator" in principal.roles
            or record.owner == principal.id
            or record.scope == f"profile:{principal.profile}"
        ):
            raise DefinitionError("definition_not_found", "no such tool definition")
        return Resolved(record, await self.body(record))

    async def promote(self, principal: Principal, definition_id: str, to: str, record: Record) -> DefinitionRecord:
        _operator(principal, "promoting a tool definition")
        if to != "principal" and not (to.startswith("profile:") and _PROFILE_RE.fullmatch(to.removeprefix("profile:"))):
            raise DefinitionError("scope_invalid", "promote to 'principal' or 'profile:NAME'")
        before = await self._existing(definition_id)
        if before.retired:
            raise DefinitionError("definition_retired", "a retired definition cannot be promoted")
        after = await self._in_thread(self._catalog.set_scope, definition_id, to)
        await record(_event(principal, "promote", after, previous_scope=before.scope))
        return after

    async def retire(self, principal: Principal, definition_id: str, record: Record) -> DefinitionRecord:
        _operator(principal, "retiring a tool definition")
        before = await self._existing(definition_id)
        after = await self._in_thread(self._catalog.retire, definition_id)
        await record(_event(principal, "retire", after, previous_scope=before.scope))
        return after

    async def _existing(self, definition_id: str) -> DefinitionRecord:
        found = await self._in_thread(self._catalog.get, definition_id)
        if found is None:
            raise DefinitionError("definition_not_found", "no such tool definition")
        return found

    def close(self) -> None:
        self._catalog.close()


def _operator(principal: Principal, what: str) -> None:
    if "operator" not in principal.roles:
        raise DefinitionError("forbidden", f"{what} needs the operator role")


def audit_doc(record: DefinitionRecord, operation: str, *, created: bool = False) -> audit_pb2.AuditToolDefinition:
    return audit_pb2.AuditToolDefinition(
        operation=operation,
        id=record.id,
        name=record.name,
        base=record.base,
        scope=record.scope,
        owner=record.owner,
        sha256=record.sha256,
        created=created,
    )


def _event(
    principal: Principal, operation: str, after: DefinitionRecord, *, previous_scope: str
) -> audit_pb2.AuditEvent:
    doc = audit_doc(after, operation)
    doc.previous_scope = previous_scope
    return tool_definition_event(str(uuid.uuid4()), principal.id, doc)


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
