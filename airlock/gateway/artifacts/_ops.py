"""Artifact operations as the gateway decides them -- no grpc in here.

Every operation (an ArtifactService call, an artifact a tool call names as
input or stores as output) goes through the same table, and each refusal
has its own reason code:

    authenticated?                          unauthenticated
    a valid name (put, output)              artifact_name_invalid
    the artifact exists for this principal  artifact_not_found (get, stat, delete, input)
    the policy (data.airlock.artifacts)     its codes; policy_* when it gives no usable answer
    the store                               artifact_too_large, artifact_truncated,
                                            artifact_checksum_mismatch, artifact_quota_exceeded,
                                            artifact_store_unavailable
    the audit event durable                 audit_failed

Each operation writes one audit event (kind "artifact": the reference with
sha256 and size, never the content) and counts one metric. The servicer
(airlock/gateway/_server.py) only translates messages to ArtifactOp and the
answer back; ArtifactAccess (_access.py) is the Invoke path's use of the
same operations. The store is synchronous: it runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import time
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from airlock.gateway._admission import FairSlots, SlotTimeoutError
from airlock.gateway._answer import parse_reasons
from airlock.gateway._errors import AuditError, GatewayError, PolicyError
from airlock.gateway._events import summary_event
from airlock.gateway._input import now, principal_doc
from airlock.gateway._metrics import GatewayMetrics
from airlock.gateway._model import Principal, Reason
from airlock.gateway._policy import PolicyEngine, PolicyResult
from airlock.gateway.artifacts._events import artifact_event
from airlock.gateway.artifacts._model import (
    ArtifactError,
    ArtifactRecord,
    ArtifactTruncatedError,
    PutRequest,
    Quota,
    StoreUnavailableError,
    check_name,
)
from airlock.gateway.artifacts._store import ArtifactStore
from airlock.v1 import audit_pb2

T = TypeVar("T")


class StoreBusyError(ArtifactError):
    """Every upload slot is taken (or the principal's share of them)."""

    code = "artifact_store_busy"


#: Store namespaces of the gateway's own (airlock:tools:<owner>, dynamic
#: tools' definitions): no agent id starts with it (gateway config).
RESERVED_PREFIX = "airlock:"

log = logging.getLogger("airlock.gateway.artifacts")

Operation = Literal["put", "get", "stat", "list", "delete", "input", "output"]
#: How a refusal surfaces; the servicer maps it to a gRPC status code.
Status = Literal[
    "ok",
    "unauthenticated",
    "invalid_argument",
    "not_found",
    "resource_exhausted",
    "permission_denied",
    "unavailable",
    "internal",
]
#: Reason code -> status; every other code (policy denials, policy_*
#: failures) is permission_denied.
STATUS_BY_CODE: Mapping[str, Status] = {
    "allowed": "ok",
    "unauthenticated": "unauthenticated",
    "artifact_name_invalid": "invalid_argument",
    "artifact_truncated": "invalid_argument",
    "artifact_checksum_mismatch": "invalid_argument",
    "artifact_header_missing": "invalid_argument",
    "artifact_header_invalid": "invalid_argument",
    "artifact_not_found": "not_found",
    "artifact_too_large": "resource_exhausted",
    "artifact_quota_exceeded": "resource_exhausted",
    "artifact_store_busy": "resource_exhausted",
    "rate_limited": "resource_exhausted",
    "too_many_in_flight": "resource_exhausted",
    "artifact_store_unavailable": "unavailable",
    "audit_failed": "unavailable",
    "internal_error": "internal",
}
DEFAULT_MEDIA_TYPE = "application/octet-stream"
#: Unauthenticated refusals recorded one event each per window (the rest:
#: one unauthenticated_summary event per window), as the core's default.
UNAUTHENTICATED_RECORDS = 20
UNAUTHENTICATED_WINDOW_S = 10.0
#: Bounded hand-over of upload chunks from the event loop to the store's thread.
_CHUNK_QUEUE = 8
_END = object()
#: An upload that sends nothing for this long is cut off (artifact_truncated),
#: and so is one that takes longer than _PUT_DEADLINE_S in all (a 256 MiB
#: artifact at 1 MiB/s): a trickle cannot hold a store thread for ever.
_STALL_S = 15.0
_PUT_DEADLINE_S = 300.0
#: The store's own threads: uploads, reads and listings never wait for, and
#: never hold up, the default executor that the audit writer uses (an attack
#: run froze every call with six stalled uploads when they shared it).
STORE_THREADS = 12
#: Uploads streamed from clients at once, and per principal; a put that
#: finds none free within PUT_QUEUE_S is refused (artifact_store_busy). The
#: rest of the store's threads serve reads, listings and call outputs.
PUT_SLOTS = 8
PUT_SLOTS_PER_PRINCIPAL = 2
PUT_QUEUE_S = 5.0


@dataclass(frozen=True)
class ArtifactOp:
    """One artifact operation's input. ``principal`` comes from
    authentication only (None when it failed; ``authn_error`` says why)."""

    operation: Operation
    principal: Principal | None
    rpc: str = ""
    authn_error: str = ""
    #: The calling session (input, output), or the session a put belongs to.
    session: str = ""
    #: get, stat, delete, input.
    artifact_id: str = ""
    #: put, output.
    name: str = ""
    media_type: str = ""
    size: int | None = None
    sha256: str | None = None
    #: list: one session's artifacts (None: all), only shared ones, a name prefix.
    list_session: str | None = None
    shared_only: bool = False
    prefix: str = ""


@dataclass(frozen=True)
class ArtifactDecision:
    """The answer for one operation. ``reasons`` is never empty."""

    decision_id: str
    allowed: bool
    reasons: tuple[Reason, ...]
    status: Status
    policy_revision: str = ""
    principal: str = ""
    path: str = ""
    policy_input: Any = field(default=None, compare=False, repr=False)
    policy_result: Any = field(default=None, compare=False, repr=False)
    bundles: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.reasons:
            raise ValueError("a decision always carries at least one reason")
        if self.allowed != (self.status == "ok"):
            raise ValueError("an allowed decision has status ok and a denied one has a refusal")

    @property
    def code(self) -> str:
        return self.reasons[0].code

    @property
    def verdict(self) -> str:
        return "allow" if self.allowed else "deny"


@dataclass(frozen=True)
class Answer:
    """A decision and what the operation produced (a record, a listing,
    the content's chunks for a get)."""

    decision: ArtifactDecision
    record: ArtifactRecord | None = None
    records: tuple[ArtifactRecord, ...] = ()
    chunks: Iterator[bytes] | None = field(default=None, compare=False, repr=False)


class ArtifactDenied(ArtifactError):  # noqa: N818 - the name the Invoke path's seam was agreed with
    """An artifact operation was refused; ``code`` is the reason code,
    ``message`` its text and ``decision`` the whole decision (audited)."""

    def __init__(self, code: str, message: str, decision: ArtifactDecision | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.decision = decision


Chunks = AsyncIterable[bytes] | Iterable[bytes]
AuditWriter = Callable[[audit_pb2.AuditEvent], Awaitable[None]]
#: The core's per-principal rate and in-flight cap (Gateway.admitted): a
#: context manager that raises GatewayError (rate_limited, too_many_in_flight).
Admission = Callable[[Principal], AbstractContextManager[None]]


class ArtifactOps:
    """Decides, performs, audits and counts artifact operations."""

    def __init__(
        self,
        *,
        store: ArtifactStore,
        policy: PolicyEngine,
        record: AuditWriter,
        metrics: GatewayMetrics,
        quota: Quota,
        decision_path: str,
    ) -> None:
        self.store = store
        self._policy = policy
        self._record = record
        self._metrics = metrics
        self.quota = quota
        self._path = decision_path
        self._admit: Admission | None = None
        self._unauthenticated = _Sampler(UNAUTHENTICATED_RECORDS, UNAUTHENTICATED_WINDOW_S)
        #: "code:principal" -> its sampler: a principal over its rate or
        #: in-flight cap can repeat the refusal at will, so it is recorded
        #: one by one up to a rate and then summarised, as the core does.
        self._admission: dict[str, _Sampler] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._threads = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="airlock-artifacts")
        self._put_slots = FairSlots(PUT_SLOTS, PUT_SLOTS_PER_PRINCIPAL)

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` in one of the store's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(fn, *args, **kwargs))

    def bind_admission(self, admit: Admission) -> None:
        """ArtifactService calls count against the principal's rate and
        in-flight cap like its other calls (the gateway's main binds the
        core's once both exist). A call's inputs and outputs do not: the
        Invoke that names them is admitted already."""
        self._admit = admit

    # -- the operations ------------------------------------------------------

    async def put(self, op: ArtifactOp, chunks: Chunks) -> Answer:
        """put and output: the policy decides on what the header declares;
        the store checks the content whole. Shielded: a client that goes
        away mid-put cannot skip the audit event (the upload fails as
        truncated)."""
        aborted = asyncio.Event()
        task = asyncio.ensure_future(self._admitted(op, lambda: self._put(op, chunks, aborted)))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            aborted.set()
            raise

    async def read(self, op: ArtifactOp) -> Answer:
        """get and input: the decision, the record and the content's chunks
        (to be consumed with ``next_chunk``)."""
        return await asyncio.shield(self._admitted(op, lambda: self._by_id(op, read=True)))

    async def stat(self, op: ArtifactOp) -> Answer:
        return await asyncio.shield(self._admitted(op, lambda: self._by_id(op)))

    async def delete(self, op: ArtifactOp) -> Answer:
        return await asyncio.shield(self._admitted(op, lambda: self._by_id(op, delete=True)))

    async def list(self, op: ArtifactOp) -> Answer:
        return await asyncio.shield(self._admitted(op, lambda: self._list(op)))

    async def refuse(self, op: ArtifactOp, code: str, message: str) -> Answer:
        """A refusal before the operation could start (a put without its
        header), audited and counted like the rest; unauthenticated first."""
        if op.principal is None:
            code, message = "unauthenticated", op.authn_error
        return await self._finish(op, self._refusal(op, str(uuid.uuid4()), code, message))

    async def next_chunk(self, chunks: Iterator[bytes]) -> bytes | None:
        """The next chunk of a read (None at the end), read in a store thread."""
        return await self._in_thread(next, chunks, None)

    # -- flows ---------------------------------------------------------------

    async def _admitted(self, op: ArtifactOp, flow: Callable[[], Awaitable[Answer]]) -> Answer:
        if self._admit is None or op.principal is None or op.operation in ("input", "output"):
            return await flow()
        admission = self._admit(op.principal)
        try:
            admission.__enter__()
        except GatewayError as exc:
            refusal = self._refusal(op, str(uuid.uuid4()), exc.code, str(exc))
            key = f"{exc.code}:{op.principal.id}"
            sampler = self._admission.setdefault(key, _Sampler(UNAUTHENTICATED_RECORDS, UNAUTHENTICATED_WINDOW_S))
            if not sampler.record_individually(op.rpc):
                self._schedule_flush()
                reason = self._metrics.artifact_reason_label(refusal.code)
                self._metrics.artifact_operations.labels(op.operation, refusal.verdict, reason).inc()
                return Answer(refusal, None)
            return await self._finish(op, refusal)
        try:
            return await flow()
        finally:
            admission.__exit__(None, None, None)

    async def _put(self, op: ArtifactOp, chunks: Chunks, aborted: asyncio.Event) -> Answer:
        decision_id = str(uuid.uuid4())
        principal = op.principal
        if principal is None:
            return await self._finish(op, self._refusal(op, decision_id, "unauthenticated", op.authn_error))
        try:
            check_name(op.name)
        except ArtifactError as exc:
            return await self._finish(op, self._refusal(op, decision_id, exc.code, str(exc)))
        asked = self._artifact_doc(op, None)
        decision = await self._ask(op, principal, decision_id, asked)
        if not decision.allowed:
            return await self._finish(op, decision)
        request = PutRequest(
            principal=principal.id,
            name=op.name,
            session=op.session,
            media_type=op.media_type or DEFAULT_MEDIA_TYPE,
            expected_sha256=op.sha256,
            expected_size=op.size,
        )
        try:
            record = await self._store_put(request, chunks, aborted)
        except ArtifactError as exc:
            return await self._finish(op, _deny(decision, exc.code, str(exc)))
        self._metrics.artifact_bytes.labels("in").inc(record.size)
        if op.size is None:
            # The policy decided without a size; ask again with the real one
            # (a profile's max_artifact_bytes) before the artifact counts.
            again = await self._ask(op, principal, decision_id, self._artifact_doc(op, record))
            if not again.allowed:
                await self._undo(record)
                return await self._finish(op, again, record)
            decision = again
        answer = await self._finish(op, decision, record)
        if not answer.decision.allowed:
            await self._undo(record)  # no durable record, no artifact
        return answer

    async def _by_id(self, op: ArtifactOp, *, read: bool = False, delete: bool = False) -> Answer:
        decision_id = str(uuid.uuid4())
        principal = op.principal
        if principal is None:
            return await self._finish(op, self._refusal(op, decision_id, "unauthenticated", op.authn_error))
        try:
            record = await self._in_thread(self.store.stat, principal.id, op.artifact_id)
        except ArtifactError as exc:
            return await self._finish(op, self._refusal(op, decision_id, exc.code, str(exc)))
        decision = await self._ask(op, principal, decision_id, self._artifact_doc(op, record))
        if not decision.allowed:
            return await self._finish(op, decision, record)
        if delete:
            return await self._delete(op, decision, record)
        if read:
            return await self._read(op, decision, record)
        return await self._finish(op, decision, record)

    async def _read(self, op: ArtifactOp, decision: ArtifactDecision, record: ArtifactRecord) -> Answer:
        assert op.principal is not None
        try:
            chunks = await self._in_thread(self.store.read, op.principal.id, record.id)
        except ArtifactError as exc:
            return await self._finish(op, _deny(decision, exc.code, str(exc)), record)
        answer = await self._finish(op, decision, record)
        if chunks is not None:
            if answer.decision.allowed:
                self._metrics.artifact_bytes.labels("out").inc(record.size)
                return replace(answer, chunks=chunks)
            with contextlib.suppress(Exception):
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        return answer

    async def _delete(self, op: ArtifactOp, decision: ArtifactDecision, record: ArtifactRecord) -> Answer:
        """The allow is recorded before anything is removed (no durable
        record, no action); a removal that then fails is recorded too."""
        answer = await self._finish(op, decision, record)
        if not answer.decision.allowed:
            return answer
        assert op.principal is not None
        try:
            removed = await self._in_thread(self.store.delete, op.principal.id, record.id)
        except ArtifactError as exc:
            return await self._finish(op, _deny(decision, exc.code, str(exc)), record)
        return replace(answer, record=removed)

    async def _list(self, op: ArtifactOp) -> Answer:
        decision_id = str(uuid.uuid4())
        principal = op.principal
        if principal is None:
            return await self._finish(op, self._refusal(op, decision_id, "unauthenticated", op.authn_error))
        doc = {
            "list": {
                "session": op.list_session if op.list_session is not None else None,
                "shared_only": op.shared_only,
                "prefix": op.prefix,
            }
        }
        decision = await self._ask(op, principal, decision_id, doc)
        if not decision.allowed:
            return await self._finish(op, decision)
        session = "" if op.shared_only else op.list_session
        try:
            records = await self._in_thread(self.store.list_artifacts, principal.id, session=session, prefix=op.prefix)
        except ArtifactError as exc:
            return await self._finish(op, _deny(decision, exc.code, str(exc)))
        answer = await self._finish(op, decision, listed=len(records))
        return replace(answer, records=tuple(records)) if answer.decision.allowed else answer

    # -- pieces --------------------------------------------------------------

    def _artifact_doc(self, op: ArtifactOp, record: ArtifactRecord | None) -> dict[str, Any]:
        if record is None:
            return {
                "artifact": {
                    "id": "",
                    "name": op.name,
                    "size": op.size,
                    "sha256": op.sha256,
                    "media_type": op.media_type or DEFAULT_MEDIA_TYPE,
                    "session": op.session,
                    "principal": op.principal.id if op.principal else "",
                }
            }
        return {
            "artifact": {
                "id": record.id,
                "name": record.name,
                "size": record.size,
                "sha256": record.sha256,
                "media_type": record.media_type,
                "session": record.session,
                "principal": record.principal,
                "age_seconds": max(0.0, time.time() - record.created_at),
            }
        }

    async def _ask(
        self, op: ArtifactOp, principal: Principal, decision_id: str, extra: Mapping[str, Any]
    ) -> ArtifactDecision:
        input_doc: dict[str, Any] = {
            "operation": op.operation,
            "decision_id": decision_id,
            "principal": principal_doc(principal),
            "session": op.session,
            **extra,
        }

        def refuse(code: str, message: str, result: PolicyResult | None = None) -> ArtifactDecision:
            return ArtifactDecision(
                decision_id,
                False,
                (Reason(code, message),),
                STATUS_BY_CODE.get(code, "permission_denied"),
                policy_revision=result.revision if result else "",
                principal=principal.id,
                path=self._path,
                policy_input=input_doc,
                policy_result=result.result if result else None,
                bundles=dict(result.bundles) if result else None,
            )

        try:
            result = await self._policy.evaluate(self._path, input_doc)
        except PolicyError as exc:
            return refuse(exc.code, str(exc))
        self._metrics.policy_revision(result.revision)
        doc = result.result
        try:
            reasons = _malformed(doc)
        except PolicyError as exc:
            return refuse(exc.code, str(exc), result)
        allowed = bool(doc["allow"])
        if not allowed:
            return (
                refuse(reasons[0].code, reasons[0].message, result)
                if len(reasons) == 1
                else replace(refuse(reasons[0].code, reasons[0].message, result), reasons=reasons)
            )
        return ArtifactDecision(
            decision_id,
            True,
            reasons,
            "ok",
            policy_revision=result.revision,
            principal=principal.id,
            path=self._path,
            policy_input=input_doc,
            policy_result=doc,
            bundles=dict(result.bundles),
        )

    def _refusal(self, op: ArtifactOp, decision_id: str, code: str, message: str) -> ArtifactDecision:
        return ArtifactDecision(
            decision_id,
            False,
            (Reason(code, message or code),),
            STATUS_BY_CODE.get(code, "permission_denied"),
            principal=op.principal.id if op.principal else "",
        )

    async def _store_put(self, request: PutRequest, chunks: Chunks, aborted: asyncio.Event) -> ArtifactRecord:
        if not isinstance(chunks, AsyncIterable):
            return await self._in_thread(self.store.put, request, chunks, self.quota)
        try:
            async with self._put_slots.slot(request.principal, PUT_QUEUE_S):
                return await self._streamed_put(request, chunks, aborted)
        except SlotTimeoutError:
            raise StoreBusyError(f"no upload slot free within {PUT_QUEUE_S:.0f} s; retry later") from None

    async def _streamed_put(
        self, request: PutRequest, chunks: AsyncIterable[bytes], aborted: asyncio.Event
    ) -> ArtifactRecord:
        # The store reads in its thread; the loop feeds it from the stream.
        handover: queue.Queue[object] = queue.Queue(maxsize=_CHUNK_QUEUE)
        stored = asyncio.ensure_future(self._in_thread(self.store.put, request, _pulled(handover), self.quota))
        feed = asyncio.ensure_future(_feed(chunks, handover, stored))
        gone = asyncio.ensure_future(aborted.wait())
        try:
            await asyncio.wait({feed, gone, stored}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not feed.done():
            # The client went away mid-stream, or the store refused early (too
            # large, over quota): stop reading, and tell the store's thread
            # (if it still waits) that no more chunks will come.
            feed.cancel()
            await _hand(handover, ArtifactTruncatedError("the client went away"), stored)
        elif feed.cancelled() or feed.exception() is not None:
            await _hand(handover, feed.exception() if not feed.cancelled() else asyncio.CancelledError(), stored)
        return await stored

    async def _undo(self, record: ArtifactRecord) -> None:
        try:
            await self._in_thread(self.store.delete, record.principal, record.id)
        except ArtifactError:
            log.exception("artifact %s could not be removed after its put was refused", record.id)

    async def _finish(
        self, op: ArtifactOp, decision: ArtifactDecision, record: ArtifactRecord | None = None, *, listed: int = 0
    ) -> Answer:
        """Audits the operation (an allow that cannot be recorded becomes a
        deny) and counts it. Unauthenticated refusals, which anyone can
        repeat at will, are recorded one by one up to a rate and then
        counted into one summary event per window, as the core does."""
        if op.principal is None and not self._unauthenticated.record_individually(op.rpc):
            self._schedule_flush()
            self._metrics.artifact_operations.labels(
                op.operation, decision.verdict, self._metrics.artifact_reason_label(decision.code)
            ).inc()
            return Answer(decision, record)
        try:
            await self._record(artifact_event(op, decision, record, listed=listed))
        except AuditError as exc:
            decision = _deny(decision, "audit_failed", str(exc))
        except Exception as exc:
            log.exception("artifact audit event could not be built")
            decision = _deny(decision, "internal_error", f"the operation could not be recorded: {type(exc).__name__}")
        self._metrics.artifact_operations.labels(
            op.operation, decision.verdict, self._metrics.artifact_reason_label(decision.code)
        ).inc()
        return Answer(decision, record)

    def _schedule_flush(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._unauthenticated.window_s)
        await self.flush_summaries()

    async def sizes(self, principal: str, ids: Sequence[str]) -> int:
        """The bytes of the principal's artifacts among ``ids`` (others' and
        unknown ids count 0: their read is refused, and audited, anyway);
        no decision, no content read."""
        total = 0
        for artifact_id in ids:
            with contextlib.suppress(ArtifactError):
                total += (await self._in_thread(self.store.stat, principal, artifact_id)).size
        return total

    async def close(self) -> None:
        """At shutdown: the pending summaries are written, then the store closes."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush_summaries()
        self._threads.shutdown(wait=False)
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    async def flush_summaries(self) -> None:
        """Writes the pending summary events (also at shutdown): the
        unauthenticated refusals, and each principal's rate_limited and
        too_many_in_flight ones."""
        pending = [("unauthenticated", "", self._unauthenticated)]
        for key, sampler in list(self._admission.items()):
            code, _, principal = key.partition(":")
            pending.append((code, principal, sampler))
        for code, principal, sampler in pending:
            since, by_rpc = sampler.take()
            for rpc, suppressed in sorted(by_rpc.items()):
                event = summary_event(
                    str(uuid.uuid4()),
                    kind=f"{code}_summary",
                    principal=principal,
                    rpc=rpc,
                    suppressed=suppressed,
                    by_reason={code: suppressed},
                    since=since,
                )
                try:
                    await self._record(event)
                except AuditError:
                    log.exception("artifact %s summary was not written", code)
        # Forget the principals that went quiet, so the table stays small.
        self._admission = {k: v for k, v in self._admission.items() if v.active()}

    # -- retention -------------------------------------------------------------

    async def sweep(self, retention_seconds: int | None, now: float | None = None) -> int:
        """Removes artifacts older than the retention period (each one an
        audit event, reason "retention"), then blobs no record names, then
        refreshes the stored-bytes gauges. Returns how many were removed."""
        removed = 0
        if retention_seconds is not None:
            cutoff = (time.time() if now is None else now) - retention_seconds
            for record in await self._in_thread(self.store.older_than, cutoff):
                if record.principal.startswith(RESERVED_PREFIX):
                    # Dynamic tools' definitions: kept while the catalog names them.
                    continue
                try:
                    await self._in_thread(self.store.delete, record.principal, record.id)
                except ArtifactError as exc:
                    if exc.code != "artifact_not_found":
                        log.warning("sweeper: %s not removed: %s", record.id, exc)
                    continue
                removed += 1
                self._metrics.artifacts_swept.inc()
                op = ArtifactOp("delete", None, rpc="sweep", artifact_id=record.id)
                decision = ArtifactDecision(
                    str(uuid.uuid4()),
                    True,
                    (Reason("retention", f"older than the {retention_seconds} s retention period"),),
                    "ok",
                    principal=record.principal,
                )
                try:
                    await self._record(artifact_event(op, decision, record, operation="sweep"))
                except AuditError:
                    log.exception("sweeper: the removal of %s was not recorded", record.id)
                self._metrics.artifact_operations.labels("sweep", "allow", "retention").inc()
        remove_orphans = getattr(self.store, "remove_orphans", None)
        if remove_orphans is not None:
            with contextlib.suppress(StoreUnavailableError):
                await self._in_thread(remove_orphans)
        await self.refresh_gauges()
        return removed

    async def refresh_gauges(self) -> None:
        try:
            records = await self._in_thread(self.store.older_than, float("inf"))
        except ArtifactError:
            return
        distinct = {(r.principal, r.sha256): r.size for r in records}
        self._metrics.artifacts_stored_bytes.set(sum(distinct.values()))
        self._metrics.artifacts_stored.set(len(records))

    async def run_sweeper(self, retention_seconds: int | None, interval_s: float, stop: asyncio.Event) -> None:
        """Sweeps at start and then every ``interval_s`` until ``stop``."""
        while not stop.is_set():
            try:
                await self.sweep(retention_seconds)
            except Exception:
                log.exception("artifact sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


class _Sampler:
    """How many refusals of one kind get an event of their own per window;
    the rest are counted by RPC for one summary event."""

    def __init__(self, per_window: int, window_s: float) -> None:
        self.per_window = per_window
        self.window_s = window_s
        self._start = 0.0
        self._recorded = 0
        self._since = ""
        self._suppressed: dict[str, int] = {}

    def record_individually(self, rpc: str) -> bool:
        t = time.monotonic()
        if t - self._start >= self.window_s:
            self._start, self._recorded = t, 0
        if self._recorded < self.per_window:
            self._recorded += 1
            return True
        if not self._suppressed:
            self._since = now()
        self._suppressed[rpc] = self._suppressed.get(rpc, 0) + 1
        return False

    def active(self) -> bool:
        return time.monotonic() - self._start < self.window_s

    def take(self) -> tuple[str, dict[str, int]]:
        out = (self._since, self._suppressed)
        self._suppressed = {}
        return out


def _pulled(handover: queue.Queue[object]) -> Iterator[bytes]:
    """The store's side of an upload: chunks until the end marker; a
    stall or the stream's failure is a truncated upload."""
    deadline = time.monotonic() + _PUT_DEADLINE_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ArtifactTruncatedError(f"the upload took longer than {_PUT_DEADLINE_S:.0f} s")
        try:
            item = handover.get(timeout=min(_STALL_S, left))
        except queue.Empty:
            raise ArtifactTruncatedError(f"no data for {min(_STALL_S, left):.0f} s") from None
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise ArtifactTruncatedError(f"the upload was cut off: {type(item).__name__}")
        assert isinstance(item, bytes)
        yield item


async def _feed(chunks: AsyncIterable[bytes], handover: queue.Queue[object], stored: asyncio.Future[Any]) -> None:
    async for chunk in chunks:
        await _hand(handover, chunk, stored)
        if stored.done():
            return  # refused early (too large, over quota): stop reading
    await _hand(handover, _END, stored)


async def _hand(handover: queue.Queue[object], item: object, stored: asyncio.Future[Any]) -> None:
    """Queues ``item`` for the store's thread unless the put already ended."""
    while not stored.done():
        try:
            handover.put_nowait(item)
        except queue.Full:
            await asyncio.sleep(0.001)
        else:
            return


def _malformed(doc: Any) -> tuple[Reason, ...]:
    """The artifact decision's reasons, or PolicyError(policy_malformed)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("allow"), bool):
        raise PolicyError("the artifact decision needs a boolean 'allow'", code="policy_malformed")
    reasons = parse_reasons(doc.get("reasons"), "reasons")
    if not reasons:
        raise PolicyError("the artifact decision needs at least one reason", code="policy_malformed")
    return reasons


def _deny(decision: ArtifactDecision, code: str, message: str) -> ArtifactDecision:
    return replace(
        decision, allowed=False, status=STATUS_BY_CODE.get(code, "permission_denied"), reasons=(Reason(code, message),)
    )
