"""``membrane-otel ledger verify``: the chain check's progress display, report and exit code.

Split from :mod:`membrane_otel.cli.ledger` (which imports it only when the action runs);
the walk itself is :func:`membrane_otel.ledger._verify.verify`. Exit codes: 0 chain intact;
1 tampering found; 3 chain intact but torn lines; 2 no ledger.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from membrane_otel.cli._output import _style
from membrane_otel.ledger._verify import Problem, verify

if TYPE_CHECKING:
    import argparse


def run_verify(args: argparse.Namespace, path: str) -> int:
    """``membrane-otel ledger verify``: walk the chain with progress, report, exit code."""
    err = sys.stderr
    tty = err.isatty()
    out = _style(args, sys.stdout)
    last_draw = [0.0]

    def progress(lines: int, done: int, total: int) -> None:
        if args.quiet or args.json:
            return
        if tty:
            now = time.monotonic()
            if now - last_draw[0] >= 0.1:
                last_draw[0] = now
                pct = 100 * done / total if total else 100
                err.write(f"\rverifying {pct:5.1f}%  {lines:,} lines ")
                err.flush()
        elif args.progress_every and lines % args.progress_every == 0 and done < total:
            err.write(f"verify: {lines:,} lines checked ({done:,} of {total:,} bytes)\n")

    every = args.progress_every if args.progress_every > 0 and not tty else 10_000
    report = verify(path, progress=progress, progress_every=every)
    if tty and not args.quiet and not args.json:
        err.write("\r\x1b[K")
    if not report.files:
        print(f"membrane-otel ledger verify: no ledger at {path}", file=err)
        return 2

    def problem_dict(p: Problem) -> dict[str, Any]:
        return {"kind": p.kind, "file": str(p.file), "line": p.line, "seq": p.seq, "message": p.message}

    code = 1 if report.problem else 3 if report.torn else 0
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "exit_code": code,
                    "files": [str(f) for f in report.files],
                    "lines": report.lines,
                    "first_seq": report.first_seq,
                    "last_seq": report.last_seq,
                    "last_hash": report.last_hash,
                    "problem": problem_dict(report.problem) if report.problem else None,
                    "torn": [problem_dict(t) for t in report.torn],
                }
            )
        )
        return code
    for torn in report.torn:
        print(out("TORN", "33") + f"  {torn.message}")
    if report.problem:
        p = report.problem
        seq = f" (seq {p.seq})" if p.seq is not None else ""
        print(out("TAMPERED", "1;31") + f"  {p.file}:{p.line}{seq}: {p.message}")
        print(f"  the chain is intact up to seq {report.last_seq}; from this line on nothing can be trusted")
        return 1
    if not args.quiet:
        files = len(report.files)
        print(
            out("OK", "1;32")
            + f"  chain intact: {report.lines:,} lines in {files} file{'s' * (files != 1)}"
            + f" (seq {report.first_seq or 0}..{report.last_seq}), last hash {report.last_hash[:16]}…"
        )
    return code
