"""``airlock audit verify``: checks an audit log with the public key alone
(airlock/common/auditlog.py does the work) and prints every problem it finds."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlock.common import auditlog

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
#: What a shell glob (audit.jsonl*) also matches next to the log: the head
#: record (found and read by itself) and the temporary file the gateway
#: writes it through. Neither is a log file.
NOT_LOG_SUFFIXES = (auditlog.HEAD_SUFFIX, ".tmp")


def add_parser(sub: Any) -> None:
    """Adds ``audit verify`` to the ``airlock`` command's subparsers."""
    audit = sub.add_parser("audit", help="work with the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check the audit log's chain and signed checkpoints; report every problem"
    )
    verify.add_argument("paths", nargs="+", type=Path, help="audit files, rotated ones included, in any order")
    add_verify_arguments(verify)


def add_verify_arguments(parser: Any) -> None:
    """The options that say how to verify a log (shared with ``airlock policy
    replay``, which verifies the log it replays the same way)."""
    parser.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="the gateway's audit public key (PEM); without it only the links are checked",
    )
    parser.add_argument(
        "--partial", action="store_true", help="the oldest files were archived: accept a chain that starts mid-way"
    )
    parser.add_argument(
        "--no-head",
        action="store_true",
        help="the files were archived without their head record: check the chain for what it holds (lines cut "
        "off its end cannot be detected); without it a missing head record is a failure",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail on any event after the last signed checkpoint (for archived logs, or after a clean "
        "shutdown, whose close checkpoint signs everything); needs --public-key",
    )


class UsageError(Exception):
    """A command line that cannot be run; the message says why."""


def _inputs(args: argparse.Namespace, given: list[Path]) -> tuple[Any, list[Path], list[Path]]:
    """The public key (or None), the log files, and what a glob brought along that is not one."""
    if args.strict and args.public_key is None:
        raise UsageError("--strict needs --public-key (without it nothing is signed)")
    public_key = None
    if args.public_key is not None:
        try:
            public_key = auditlog.load_public_key(args.public_key)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read the public key {args.public_key}: {exc}") from exc
    skipped = [p for p in given if p.name.endswith(NOT_LOG_SUFFIXES)]
    paths = [p for p in given if p not in skipped]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"not a file: {', '.join(missing)}")
    if not paths:
        raise UsageError("no audit log files given (only head or temporary files)")
    return public_key, paths, skipped


@dataclass(frozen=True)
class Checked:
    """What verifying a log found: ``ok`` when nothing is wrong with it."""

    report: auditlog.Report
    problems: tuple[auditlog.Problem, ...]
    warnings: tuple[str, ...]
    skipped: tuple[Path, ...]
    public_key: Any

    @property
    def ok(self) -> bool:
        return not self.problems


def check(args: argparse.Namespace, paths: list[Path]) -> Checked:
    """Verifies ``paths`` as ``airlock audit verify`` does, with the options
    :func:`add_verify_arguments` added; UsageError when it cannot start."""
    public_key, files, skipped = _inputs(args, paths)
    # Only the live file's head record counts: the chain must reach the seq
    # it records. A missing one, or one anywhere else, is a problem: given a
    # choice, a forger would pick the head record that hides the cut.
    ordered = auditlog.order_files(files)
    lookup = auditlog.find_head(
        ordered, given=[p for p in skipped if p.name.endswith(auditlog.HEAD_SUFFIX)], expected=not args.no_head
    )
    report = auditlog.verify(
        ordered,
        public_key=public_key,
        start=None if args.partial else auditlog.ChainState(),
        head=lookup.head,
        head_file=lookup.head_file,
        strict=args.strict,
    )
    warnings = list(report.warnings)
    if args.no_head:
        warnings.append(
            f"--no-head: no head record was checked, so lines cut off the end of the chain CANNOT be detected: "
            f"nothing here shows that seq {report.last.seq} was the last line the gateway wrote; compare it "
            "with the highest airlock_gateway_audit_last_signed_seq your Prometheus recorded"
        )
    return Checked(report, (*lookup.problems, *report.problems), tuple(warnings), tuple(skipped), public_key)


def run(args: argparse.Namespace) -> int:
    try:
        checked = check(args, args.paths)
    except UsageError as exc:
        print(f"airlock: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for p in checked.skipped:
        print(f"notice: skipped {p}: a head record or temporary file, not a log file")
    report, problems = checked.report, checked.problems
    for problem in problems:
        print(f"FAIL {problem}")
    for notice in report.notices:
        print(f"notice: {notice}")
    for warning in checked.warnings:
        print(f"WARNING: {warning}")
    span = f"seq {report.first_seq or 0}..{report.last.seq}"
    if problems:
        print(f"FAIL: {len(problems)} problem(s) in {report.lines} line(s) of {report.files} file(s), {span}")
        return EXIT_PROBLEMS
    summary = (
        f"ok: {report.lines} line(s) in {report.files} file(s), {span}, chain intact; "
        f"{_signed(report, checked.public_key)}"
    )
    if args.no_head:
        summary += "; NO head record checked (--no-head): a cut tail cannot be detected"
    print(summary)
    return EXIT_OK


def _signed(report: auditlog.Report, public_key: Any) -> str:
    chain = f"chain {report.chain_id}, " if report.chain_id else ""
    if public_key is None:
        return f"{chain}{report.checkpoints} checkpoint(s), signatures NOT checked"
    out = (
        f"{chain}{report.checkpoints} checkpoint(s), signatures checked with key {auditlog.key_id(public_key)}; "
        f"signed through seq {report.last_checkpoint} (checkpoint of {report.last_checkpoint_time})"
    )
    if report.unsigned_tail:
        out += f"; {report.unsigned_tail} event(s) after the last signed checkpoint are NOT verified"
    return out
