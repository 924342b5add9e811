"""``membrane-otel chaos list`` and ``membrane-otel chaos run NAME|all [--scale N] [--json]``.

The chaos scenarios (``seeds/002``) against this pipeline, runnable by users: each runs a
real application process in a scratch directory and reports PASS/FAIL with its figures.
Exit code 0 when every scenario run passed, 1 when one failed, 2 for an unknown name.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

__all__ = ["HELP", "build_parser", "run"]

HELP = "list or run the chaos scenarios against this pipeline, with a report"


def build_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="the scenarios and what each proves")
    run_ = sub.add_parser("run", help="run one scenario (or all) and print its report")
    run_.add_argument("name", help="a scenario from `chaos list`, or 'all'")
    run_.add_argument("--scale", type=int, default=1, help="multiply the scenario's load (default 1)")
    run_.add_argument("--json", action="store_true", help="print the reports as one JSON document")


def run(args: argparse.Namespace) -> int:
    from membrane_otel.ops._chaos import SCENARIOS, run_scenario

    if args.action == "list":
        width = max(len(n) for n in SCENARIOS)
        for name, (_, what) in SCENARIOS.items():
            print(f"{name.ljust(width)}  {what}")
        return 0
    names = list(SCENARIOS) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(
            f"membrane-otel: no chaos scenario {unknown[0]!r} (see `membrane-otel chaos list`)",
            file=sys.stderr,
        )
        return 2
    if args.scale < 1:
        print("membrane-otel: --scale must be at least 1", file=sys.stderr)
        return 2
    reports = []
    for name in names:
        report = run_scenario(name, args.scale)
        reports.append(report)
        if not args.json:
            figures = ", ".join(f"{k}={v}" for k, v in report.figures.items())
            print(f"{'PASS' if report.ok else 'FAIL'}  {name}  ({report.seconds}s)  {figures}")
            for problem in report.problems:
                print(f"      ✗ {problem}")
            sys.stdout.flush()
    if args.json:
        print(
            json.dumps(
                {"ok": all(r.ok for r in reports), "scenarios": [asdict(r) for r in reports]}, indent=2
            )
        )
    return 0 if all(r.ok for r in reports) else 1
