"""``airlock audit verify``: checks an audit log with the public key alone
(airlock/common/auditlog.py does the work) and prints every problem it finds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from airlock.common import auditlog

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def add_parser(sub: Any) -> None:
    """Adds ``audit verify`` to the ``airlock`` command's subparsers."""
    audit = sub.add_parser("audit", help="work with the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser(
        "verify", help="check the audit log's chain and signed checkpoints; report every problem"
    )
    verify.add_argument("paths", nargs="+", type=Path, help="audit files, rotated ones included, in any order")
    verify.add_argument(
        "--public-key",
        type=Path,
        default=None,
        help="the gateway's audit public key (PEM); without it only the links are checked",
    )
    verify.add_argument(
        "--partial", action="store_true", help="the oldest files were archived: accept a chain that starts mid-way"
    )


def run(args: argparse.Namespace) -> int:
    public_key = None
    if args.public_key is not None:
        try:
            public_key = auditlog.load_public_key(args.public_key)
        except (OSError, ValueError, TypeError) as exc:
            print(f"airlock: cannot read the public key {args.public_key}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    # A shell glob (audit.jsonl*) also matches the head record: it is not a
    # log file, and is read below as the head.
    args.paths = [p for p in args.paths if not p.name.endswith(".head")]
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        print(f"airlock: not a file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    # The live file's head record (<path>.head), when it sits next to one of
    # the files given: the chain must reach the seq it records.
    heads = [h for h in {auditlog.head_path(p) for p in args.paths} if h.is_file()]
    head = None
    head_file = ""
    if len(heads) == 1:
        head_file = str(heads[0])
        try:
            head = auditlog.read_head(heads[0])
        except ValueError as exc:
            print(f"FAIL {exc}")
            return EXIT_PROBLEMS
    files = auditlog.order_files(args.paths)
    report = auditlog.verify(
        files,
        public_key=public_key,
        start=None if args.partial else auditlog.ChainState(),
        head=head,
        head_file=head_file,
    )
    for problem in report.problems:
        print(f"FAIL {problem}")
    for notice in report.notices:
        print(f"notice: {notice}")
    span = f"seq {report.first_seq or 0}..{report.last.seq}"
    signed = (
        f"{report.checkpoints} checkpoint(s), signatures checked with key {auditlog.key_id(public_key)}"
        if public_key is not None
        else f"{report.checkpoints} checkpoint(s), signatures NOT checked"
    )
    if report.problems:
        print(f"FAIL: {len(report.problems)} problem(s) in {report.lines} line(s) of {report.files} file(s), {span}")
        return EXIT_PROBLEMS
    print(f"ok: {report.lines} line(s) in {report.files} file(s), {span}, chain intact; {signed}")
    return EXIT_OK
