"""``airlock policy replay``: re-decides every recorded decision of audit logs
under candidate policies and a candidate registry, with the real OPA, and
says what would have changed.

The log is verified first, by ``airlock audit verify``'s own code
(airlock/cli/_audit_cmd.py), and a chain that does not verify is refused
unless ``--no-verify``. Each decision event recorded its policy input after
masking, with the tool's registry entry replaced by its name
(airlock/gateway/_events.py ``without_tool_entry``): replay puts the
candidate registry's entry back, recomputes the arguments' schema errors
against it (not for masked arguments, which keep the recorded ones), and
keeps everything else as recorded (counters, time, session facts, image
pins). An event whose input has masked values is decided twice, with two
substitutes for them; when the answers differ it is *undetermined*, never
unchanged. The recorded policy answer is compared with the candidate's by
airlock/cli/_replay_diff.py.

OPA runs as ``opa exec`` on a bundle built once (with the restricted
capabilities a published bundle gets), over batches of input files, several
batches at a time: every input is OPA's top-level input, as at the gateway
(a ``with input as`` batch query costs almost twice as much per decision).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from airlock.cli import _audit_cmd
from airlock.cli._paths import DEFAULT_REGISTRY, find_opa
from airlock.cli._replay_diff import DEFAULT_EXAMPLES, Corrupt, Outcome, Tally, dumps, input_pointers, judge, outcome
from airlock.cli._replay_diff import substituted as substituted_input

EXIT_ERROR = 2
#: Inputs per ``opa exec``: large enough that its start (loading and
#: compiling the bundle, ~0.2 s of CPU) is noise, small enough to keep every
#: core busy to the end (the last batch may run alone).
DEFAULT_BATCH = 2000
#: What the gateway reads an OPA evaluation error as (OPA answers HTTP 500).
_EVAL_ERROR = "policy_http_error"


class ReplayError(Exception):
    """Replay cannot run or cannot finish; the message says why."""


def add_parser(policy_sub: Any) -> None:
    """Adds ``policy replay`` to the ``airlock policy`` subparsers."""
    rep = policy_sub.add_parser(
        "replay",
        help="re-decide the decisions recorded in audit logs under candidate policies; "
        "exit 0: nothing changed, 1: something did, 2: error",
    )
    rep.add_argument("--audit", nargs="+", type=Path, required=True, metavar="FILE", help="audit log files")
    rep.add_argument("--policies", type=Path, required=True, metavar="DIR", help="the candidate policies")
    rep.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY, metavar="FILE", help="the candidate registry")
    rep.add_argument("--json", action="store_true", help="print the report as JSON")
    rep.add_argument(
        "--examples", type=int, default=DEFAULT_EXAMPLES, metavar="N", help="example decision ids per table cell"
    )
    rep.add_argument(
        "--no-verify",
        action="store_true",
        help="replay without verifying the chain first (corrupt lines are then reported and counted)",
    )
    rep.add_argument("--jobs", type=int, default=0, help="opa processes at a time (default: one per core)")
    rep.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    _audit_cmd.add_verify_arguments(rep)
    rep.set_defaults(handler=lambda args, _home: run(args))


def run(args: argparse.Namespace) -> int:
    if args.examples < 0 or args.batch < 1 or args.jobs < 0:
        print("airlock: --examples, --jobs and --batch must not be negative", file=sys.stderr)
        return EXIT_ERROR
    files = [p for p in args.audit if not p.name.endswith(_audit_cmd.NOT_LOG_SUFFIXES)]
    if not args.no_verify and not _verified(args):
        return EXIT_ERROR
    opa = find_opa()
    if opa is None:
        print("airlock: opa not found; run scripts/bootstrap", file=sys.stderr)
        return EXIT_ERROR
    try:
        tally, revision = replay(
            opa,
            files,
            policies=args.policies,
            registry=args.registry,
            examples=args.examples,
            jobs=args.jobs or os.cpu_count() or 1,
            batch=args.batch,
        )
    except (ReplayError, OSError, ValueError, RuntimeError) as exc:
        print(f"airlock: policy replay: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if tally.corrupt and not args.no_verify:
        # Only a line verify does not read can get here (none should).
        for c in tally.corrupt:
            print(f"airlock: corrupt audit line {c}", file=sys.stderr)
        return EXIT_ERROR
    about = {
        "policies": str(args.policies),
        "registry": str(args.registry),
        "policy_revision": revision,
        "files": [str(p) for p in files],
        "verified": not args.no_verify,
    }
    if args.json:
        print(dumps(tally.as_json(**about)))
    else:
        print(f"replayed {tally.decisions} decision event(s) under policy revision {revision}")
        print(tally.text())
    return tally.exit_code


def _verified(args: argparse.Namespace) -> bool:
    """``airlock audit verify`` on the files, its problems on stderr."""
    try:
        checked = _audit_cmd.check(args, args.audit)
    except _audit_cmd.UsageError as exc:
        print(f"airlock: {exc}", file=sys.stderr)
        return False
    for warning in checked.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if checked.ok:
        return True
    for problem in checked.problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(
        f"airlock: refusing to replay: the audit log does not verify ({len(checked.problems)} problem(s), as "
        "`airlock audit verify` reports them); pass --no-verify to replay it anyway",
        file=sys.stderr,
    )
    return False


# -- reading the log ------------------------------------------------------------------


def _integers(node: Any) -> None:
    """The audit log stores every number as a double (a protobuf Struct):
    whole ones become integers again, in place, as the gateway's input had
    them (an array index or a set member can tell 1.0 from 1)."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in list(items):
        if isinstance(v, float):
            if v.is_integer() and abs(v) < 2**63:
                node[k] = int(v)
        elif isinstance(v, dict | list):
            _integers(v)


def read_events(files: list[Path], tally: Tally) -> Iterator[dict[str, Any]]:
    """The decision events of the files in chain order; a line that is not a
    JSON object is recorded in ``tally.corrupt`` with its file and line."""
    from airlock.common import auditlog  # noqa: PLC0415 - cryptography, only when replaying

    for path in auditlog.order_files(files):
        with path.open("rb") as f:
            for n, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    tally.corrupt.append(Corrupt(str(path), n, f"not JSON ({exc.__class__.__name__})"))
                    continue
                if not isinstance(event, dict):
                    tally.corrupt.append(Corrupt(str(path), n, "not a JSON object"))
                    continue
                if event.get("kind") == "decision":
                    yield event


def not_replayable(event: dict[str, Any]) -> str | None:
    """Why a decision event cannot be replayed (its first reason code), or
    None when it recorded a policy input and the policy's answer."""
    reasons = event.get("reasons")
    first = reasons[0].get("code", "") if isinstance(reasons, list) and reasons and isinstance(reasons[0], dict) else ""
    doc = event.get("input")
    call = doc.get("call") if isinstance(doc, dict) else None
    if not event.get("path") or not isinstance(doc, dict) or not doc:
        return first or "no_policy_input"
    if isinstance(call, dict) and "arguments_raw" in call:
        return first or "no_policy_input"
    if "result" not in event:
        # The policy was asked but did not answer (unreachable, timeout,
        # undefined): there is no recorded verdict to compare with.
        return first or "no_policy_answer"
    return None


def restore(doc: dict[str, Any], registry: Any, *, keep_errors: bool) -> dict[str, Any]:
    """The policy input as the gateway would build it with the candidate
    registry: the tool's entry (None when the registry has no such tool)
    and, unless ``keep_errors``, the arguments' schema errors against it."""
    from airlock.gateway._input import schema_errors  # noqa: PLC0415 - jsonschema, only when replaying

    _integers(doc)
    call = doc.get("call")
    if "tool" not in doc or not isinstance(call, dict):
        return doc  # not a tool call's input (a tool definition's admission)
    definition = doc.get("tool_definition")
    name = definition.get("base") if isinstance(definition, dict) else call.get("tool")
    entry = registry.tool_data(name) if isinstance(name, str) and registry.get(name) is not None else None
    doc["tool"] = entry
    # A dynamic tool's arguments are checked against its own schema, which
    # the registry does not change: those errors stay as recorded.
    if entry is not None and definition is None and not keep_errors and "arguments" in call:
        call["arguments_errors"] = schema_errors(entry.get("parameters", {}), call["arguments"])
    return doc


# -- asking OPA ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    decision_id: str
    tool: str
    old: Outcome
    variants: int


class _Opa:
    """Batches of inputs evaluated by ``opa exec`` processes, ``jobs`` at a time."""

    def __init__(self, opa: str, bundle: Path, work: Path, *, jobs: int, batch: int) -> None:
        self._opa, self._bundle, self._work = opa, bundle, work
        self._batch = batch
        self._pool = ThreadPoolExecutor(max_workers=jobs)
        self._jobs = jobs
        self._open: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._running: list[Future[dict[str, Outcome]]] = []
        self._n = 0
        self.outcomes: dict[str, Outcome] = {}
        self._interned: dict[Outcome, Outcome] = {}
        # Fewer garbage collections: a third less CPU per decision, for a
        # few hundred MB per process. The caller's GOGC wins.
        self._env = {"GOGC": "1000", **os.environ}

    def add(self, path: str, key: str, doc: dict[str, Any]) -> None:
        items = self._open.setdefault(path, [])
        items.append((key, doc))
        if len(items) >= self._batch:
            self._submit(path)

    def finish(self) -> dict[str, Outcome]:
        for path in list(self._open):
            self._submit(path)
        while self._running:
            self._collect(self._running.pop(0))
        return self.outcomes

    def close(self) -> None:
        """Waits for the processes still running (after an error), so none
        outlives the folder its inputs are in."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, path: str) -> None:
        items = self._open.pop(path, [])
        if not items:
            return
        # Bounded: at most two batches per process wait, whatever the log's size.
        while len(self._running) >= 2 * self._jobs:
            self._collect(self._running.pop(0))
        self._n += 1
        folder = self._work / f"batch{self._n:06d}"
        folder.mkdir()
        for key, doc in items:
            (folder / f"{key}.json").write_bytes(orjson.dumps(doc))
        self._running.append(self._pool.submit(self._exec, path, folder))

    def _collect(self, fut: Future[dict[str, Outcome]]) -> None:
        for key, got in fut.result().items():
            self.outcomes[key] = self._interned.setdefault(got, got)

    def _exec(self, path: str, folder: Path) -> dict[str, Outcome]:
        argv = [self._opa, "exec", "--decision", path, "--bundle", str(self._bundle), "--format", "json", str(folder)]
        proc = subprocess.run(argv, capture_output=True, env=self._env, check=False)  # noqa: S603 - pinned opa, our argv
        shutil.rmtree(folder, ignore_errors=True)
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).decode(errors="replace").strip()[:2000]
            raise ReplayError(f"opa exec failed ({proc.returncode}): {why}")
        try:
            results = orjson.loads(proc.stdout)["result"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplayError(f"opa exec answered something that is not its JSON report: {exc}") from exc
        out = {}
        for r in results:
            key = Path(str(r.get("path", ""))).stem
            error = r.get("error")
            if isinstance(error, dict):
                undefined = error.get("code") == "opa_undefined_error"
                out[key] = outcome(None, defined=False) if undefined else Outcome("deny", (_EVAL_ERROR,))
            else:
                out[key] = outcome(r.get("result"))
        return out


def _scratch() -> str | None:
    """Where the batches' input files go: a file costs ~0.6 ms to create on
    a disk file system and ~0.05 ms on tmpfs, which is most of replay's own
    time per decision. The folder is made 0700 either way."""
    shm = Path("/dev/shm")  # noqa: S108 - a private folder is made inside it
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _query_path(path: str) -> str:
    """The recorded decision path (``airlock/decision``) as opa exec takes it."""
    clean = path.strip("/")
    if not clean or any(not part for part in clean.split("/")):
        raise ReplayError(f"a recorded decision path is not a path: {path!r}")
    return clean


def replay(
    opa: str,
    files: list[Path],
    *,
    policies: Path,
    registry: Path,
    examples: int = DEFAULT_EXAMPLES,
    jobs: int = 1,
    batch: int = DEFAULT_BATCH,
) -> tuple[Tally, str]:
    """Replays the decision events of ``files``; the tally and the
    candidate bundle's revision."""
    from airlock.cli._bundle import build_bundle  # noqa: PLC0415 - the gateway's registry code
    from airlock.cli._opa import write_capabilities  # noqa: PLC0415
    from airlock.gateway import load_registry  # noqa: PLC0415

    candidate = load_registry(registry)
    tally = Tally(examples=examples)
    pending: list[_Pending] = []
    with tempfile.TemporaryDirectory(prefix="airlock-replay-", dir=_scratch()) as tmp:
        work = Path(tmp)
        caps = write_capabilities(opa, work / "capabilities.json")
        bundle = build_bundle(opa, policies, registry, work / "bundle.tar.gz", capabilities=caps)
        engine = _Opa(opa, bundle.path, work, jobs=max(1, jobs), batch=batch)
        try:
            got = _feed(engine, read_events(files, tally), candidate, tally, pending)
        finally:
            engine.close()
    for index, p in enumerate(pending):
        candidates = [got[f"{index:09d}-{v}"] for v in range(p.variants)]
        tally.record(p.tool, p.decision_id, judge(p.old, candidates))
    return tally, bundle.revision


def _feed(
    engine: _Opa, events: Iterator[dict[str, Any]], candidate: Any, tally: Tally, pending: list[_Pending]
) -> dict[str, Outcome]:
    """Every replayable event's inputs to OPA; the candidate's outcomes by key."""
    for event in events:
        tally.decisions += 1
        why = not_replayable(event)
        if why is not None:
            tally.skip(why)
            continue
        pointers = input_pointers(event.get("masked") or [])
        masked_arguments = any(p[:2] == ["call", "arguments"] for p in pointers)
        doc = restore(event["input"], candidate, keep_errors=masked_arguments)
        variants = [doc]
        if pointers:
            other = substituted_input(doc, pointers)
            if other is not None:
                variants.append(other)
        index = len(pending)
        path = _query_path(str(event["path"]))
        for v, variant in enumerate(variants):
            engine.add(path, f"{index:09d}-{v}", variant)
        pending.append(
            _Pending(
                str(event.get("decision_id", "")),
                str(event.get("tool", "")),
                outcome(event["result"]),
                len(variants),
            )
        )
    return engine.finish()
