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
from membrane_otel.ledger._checkpoint import Checkpoint, CheckpointError, check
from membrane_otel.ledger._checkpoint import read as read_checkpoints
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
    checkpoints: list[tuple[int, Checkpoint]] = []
    key = b""
    if args.checkpoint:
        try:
            key = _key()
            checkpoints, unreadable = read_checkpoints(args.checkpoint)
        except (CheckpointError, OSError, ValueError) as exc:
            print(f"membrane-otel ledger verify: --checkpoint {args.checkpoint}: {exc}", file=err)
            return 2
        if unreadable:
            print(
                f"membrane-otel ledger verify: {unreadable} unreadable line(s) in {args.checkpoint}", file=err
            )
    want = frozenset(cp.seq for _, cp in checkpoints)
    report = verify(path, progress=progress, progress_every=every, want=want)
    if tty and not args.quiet and not args.json:
        err.write("\r\x1b[K")
    if not report.files:
        print(f"membrane-otel ledger verify: no ledger at {path}", file=err)
        return 2

    def problem_dict(p: Problem) -> dict[str, Any]:
        return {"kind": p.kind, "file": str(p.file), "line": p.line, "seq": p.seq, "message": p.message}

    findings, matched = check(report, checkpoints, key) if args.checkpoint else ([], 0)
    code = 1 if report.problem or findings else 3 if report.torn else 0
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
                    "checkpoints": {
                        "matched": matched,
                        "findings": [{"kind": f.kind, "message": f.message} for f in findings],
                    }
                    if args.checkpoint
                    else None,
                }
            )
        )
        return code
    for torn in report.torn:
        print(out("TORN", "33") + f"  {torn.message}")
    for finding in findings:
        print(out("TAMPERED", "1;31") + f"  checkpoint: {finding.message}")
    if report.problem:
        p = report.problem
        seq = f" (seq {p.seq})" if p.seq is not None else ""
        print(out("TAMPERED", "1;31") + f"  {p.file}:{p.line}{seq}: {p.message}")
        print(f"  the chain is intact up to seq {report.last_seq}; from this line on nothing can be trusted")
        return 1
    if findings:
        return 1
    if not args.quiet:
        files = len(report.files)
        print(
            out("OK", "1;32")
            + f"  chain intact: {report.lines:,} lines in {files} file{'s' * (files != 1)}"
            + f" (seq {report.first_seq or 0}..{report.last_seq}), last hash {report.last_hash[:16]}…"
        )
        if args.checkpoint:
            print(
                out("OK", "1;32") + f"  {matched} checkpoint(s) match"
                + (f", the newest vouching for seq {max(want)}" if matched else "")
                + "; lines after the newest checkpoint are covered by the chain alone"
            )  # fmt: skip
    return code


def _key() -> bytes:
    from membrane_otel.ledger._checkpoint import load_key
    from membrane_otel.settings import load_settings

    key = load_key(load_settings())
    if key is None:
        raise CheckpointError("no key: set MEMBRANE_LEDGER_KEY or MEMBRANE_LEDGER_KEY_FILE")
    return key


def run_checkpoint(args: argparse.Namespace, path: str) -> int:
    """``membrane-otel ledger checkpoint [--out FILE]``: one keyed checkpoint of the ledger, now."""
    from membrane_otel.ledger._checkpoint import append, checkpoint_file, emit_record, make
    from membrane_otel.settings import load_settings

    try:
        key = _key()
        cp = make(path, key)
        if cp is None:
            print(f"membrane-otel ledger checkpoint: no ledger lines at {path}", file=sys.stderr)
            return 2
        out = args.out or str(checkpoint_file(load_settings(), path))
        append(out, cp)
    except (CheckpointError, ValueError, OSError) as exc:  # ConfigError is a ValueError
        print(f"membrane-otel ledger checkpoint: {exc}", file=sys.stderr)
        return 2
    emit_record(cp)
    print(f"checkpoint of {path} at seq {cp.seq} ({cp.hash[:16]}…) appended to {out}")
    return 0
