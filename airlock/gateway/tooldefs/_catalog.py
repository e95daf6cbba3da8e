"""The catalog of dynamic tools: who defined what, in which scope, whether
it is retired, and how often it was used. SQLite in the gateway's own
(0700) artifacts folder; the definitions' bodies are in the artifact store.

Every method is synchronous and short; the service calls them in a thread."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airlock.gateway.tooldefs._model import DefinitionError, DefinitionRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS definitions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    base TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    scope TEXT NOT NULL,
    retired INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    session_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    policy_revision TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    artifact_id TEXT NOT NULL,
    description TEXT NOT NULL,
    network INTEGER NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS definitions_owner ON definitions (owner);
CREATE INDEX IF NOT EXISTS definitions_scope ON definitions (scope);
-- The sessions a session-scoped definition is visible in: the one that
-- defined it and any of its owner's sessions that defined it again.
CREATE TABLE IF NOT EXISTS definition_sessions (
    id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (id, session_id)
);
-- The sessions that called it (for the reuse counts).
CREATE TABLE IF NOT EXISTS definition_uses (
    id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (id, session_id)
);
"""
_COLUMNS = (
    "id, owner, name, base, sha256, scope, retired, created_at, session_id, call_id, policy_revision, "
    "decision_id, artifact_id, description, network, calls"
)
#: Most specific first: a session's own tool wins over its owner's, which
#: wins over its profile's.
_SCOPE_RANK = "CASE WHEN scope = 'session' THEN 0 WHEN scope = 'principal' THEN 1 ELSE 2 END"


class Catalog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        path.chmod(0o600)
        self._lock = threading.Lock()
        # executescript commits on its own: not inside _tx.
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise DefinitionError("tool_catalog_unavailable", "the tool catalog failed") from exc
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads -------------------------------------------------------------------

    def get(self, definition_id: str) -> DefinitionRecord | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM definitions WHERE id = ?", (definition_id,)).fetchone()  # noqa: S608 - fixed columns
            return self._record(db, row) if row else None

    def owned_live(self, owner: str) -> int:
        with self._tx() as db:
            (n,) = db.execute("SELECT count(*) FROM definitions WHERE owner = ? AND retired = 0", (owner,)).fetchone()
            return int(n)

    def owned_count(self, owner: str) -> int:
        """Every definition the owner has, retired ones too."""
        with self._tx() as db:
            (n,) = db.execute("SELECT count(*) FROM definitions WHERE owner = ?", (owner,)).fetchone()
            return int(n)

    def retired_name(self, owner: str, name: str) -> bool:
        with self._tx() as db:
            row = db.execute(
                "SELECT 1 FROM definitions WHERE owner = ? AND name = ? AND retired = 1 LIMIT 1", (owner, name)
            ).fetchone()
            return row is not None

    def visible(
        self, owner: str, profile: str, session: str, *, name: str | None = None, retired: bool = False
    ) -> list[DefinitionRecord]:
        """What a principal of ``profile`` sees in ``session``: most specific
        scope first, then oldest. ``retired`` lists the retired ones instead."""
        sql = (
            f"SELECT {_COLUMNS} FROM definitions WHERE retired = ? AND ("  # noqa: S608 - fixed columns
            " (scope = 'session' AND owner = ? AND id IN (SELECT id FROM definition_sessions WHERE session_id = ?))"
            " OR (scope != 'session' AND owner = ?) OR scope = ?)"
        )
        # scope != 'session' for the owner: promoting a tool to a profile
        # its owner is not in does not take it from its owner.
        params: list[object] = [int(retired), owner, session, owner, f"profile:{profile}"]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        sql += f" ORDER BY {_SCOPE_RANK}, created_at"
        with self._tx() as db:
            return [self._record(db, r) for r in db.execute(sql, params).fetchall()]

    def everything(self) -> list[DefinitionRecord]:
        with self._tx() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM definitions ORDER BY created_at").fetchall()  # noqa: S608 - fixed columns
            return [self._record(db, r) for r in rows]

    def owned(self, owner: str) -> list[DefinitionRecord]:
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM definitions WHERE owner = ? ORDER BY created_at",  # noqa: S608 - fixed columns
                (owner,),
            ).fetchall()
            return [self._record(db, r) for r in rows]

    @staticmethod
    def _record(db: sqlite3.Connection, row: tuple[object, ...]) -> DefinitionRecord:
        (n,) = db.execute("SELECT count(*) FROM definition_uses WHERE id = ?", (row[0],)).fetchone()
        return DefinitionRecord(
            id=str(row[0]),
            owner=str(row[1]),
            name=str(row[2]),
            base=str(row[3]),
            sha256=str(row[4]),
            scope=str(row[5]),
            retired=bool(row[6]),
            created_at=float(row[7]),  # type: ignore[arg-type]
            session_id=str(row[8]),
            call_id=str(row[9]),
            policy_revision=str(row[10]),
            decision_id=str(row[11]),
            artifact_id=str(row[12]),
            description=str(row[13]),
            network=bool(row[14]),
            calls=int(row[15]),  # type: ignore[call-overload]
            sessions=int(n),
        )

    # -- writes ------------------------------------------------------------------

    def add(self, record: DefinitionRecord) -> tuple[DefinitionRecord, bool]:
        """Adds the definition, or (same id: the same owner defined the same
        thing) makes the existing one visible in this session too. Returns
        the record and whether it is new."""
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM definitions WHERE id = ?", (record.id,)).fetchone()  # noqa: S608 - fixed columns
            created = row is None
            if created:
                db.execute(
                    f"INSERT INTO definitions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed columns
                    (
                        record.id,
                        record.owner,
                        record.name,
                        record.base,
                        record.sha256,
                        record.scope,
                        0,
                        record.created_at,
                        record.session_id,
                        record.call_id,
                        record.policy_revision,
                        record.decision_id,
                        record.artifact_id,
                        record.description,
                        int(record.network),
                        0,
                    ),
                )
            db.execute(
                "INSERT OR IGNORE INTO definition_sessions (id, session_id) VALUES (?, ?)",
                (record.id, record.session_id),
            )
            row = db.execute(f"SELECT {_COLUMNS} FROM definitions WHERE id = ?", (record.id,)).fetchone()  # noqa: S608 - fixed columns
            return self._record(db, row), created

    def used(self, definition_id: str, session: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE definitions SET calls = calls + 1 WHERE id = ?", (definition_id,))
            db.execute("INSERT OR IGNORE INTO definition_uses (id, session_id) VALUES (?, ?)", (definition_id, session))

    def set_scope(self, definition_id: str, scope: str) -> DefinitionRecord:
        with self._tx() as db:
            db.execute("UPDATE definitions SET scope = ? WHERE id = ?", (scope, definition_id))
            row = db.execute(f"SELECT {_COLUMNS} FROM definitions WHERE id = ?", (definition_id,)).fetchone()  # noqa: S608 - fixed columns
            if row is None:
                raise DefinitionError("definition_not_found", "no such tool definition")
            return self._record(db, row)

    def retire(self, definition_id: str) -> DefinitionRecord:
        with self._tx() as db:
            db.execute("UPDATE definitions SET retired = 1 WHERE id = ?", (definition_id,))
            row = db.execute(f"SELECT {_COLUMNS} FROM definitions WHERE id = ?", (definition_id,)).fetchone()  # noqa: S608 - fixed columns
            if row is None:
                raise DefinitionError("definition_not_found", "no such tool definition")
            return self._record(db, row)


def now() -> float:
    return time.time()
