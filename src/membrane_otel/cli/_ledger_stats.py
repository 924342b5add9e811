"""``membrane-otel ledger stats``: counts by event, time span, files and sizes.

Split from :mod:`membrane_otel.cli.ledger` (which imports it only when the action runs);
shares its output helpers. Standard library only, like the rest of the ledger CLI.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from membrane_otel.cli._output import _IDS, _event_colour, _parse, _style, escape, report_skipped, skipped
from membrane_otel.ledger._reader import ledger_files

if TYPE_CHECKING:
    import argparse


def run_stats(args: argparse.Namespace, path: str) -> int:
    """``membrane-otel ledger stats``: counts by event, time span, files and sizes."""
    files = ledger_files(path)
    events: Counter[str] = Counter()
    ids: dict[str, set[str]] = {k: set() for k, _ in _IDS}
    per_file: list[dict[str, Any]] = []
    first = last = None
    for file in files:
        count = 0
        with open(file, "rb") as f:
            for raw in f:
                line = _parse(raw)
                if line is None:
                    continue
                count += 1
                events[str(line.get("event", "?"))] += 1
                for key in ids:
                    if line.get(key) is not None:
                        ids[key].add(str(line[key]))
                if first is None:
                    first = line
                last = line
        per_file.append({"file": str(file), "lines": count, "bytes": file.stat().st_size})
    span = float(last.get("ts_unix") or 0) - float(first.get("ts_unix") or 0) if first and last else 0.0
    report = {
        "ledger": path,
        "lines": sum(events.values()),
        "unreadable_lines": skipped.unreadable,
        "unchained_lines": skipped.unchained,
        "bytes": sum(entry["bytes"] for entry in per_file),
        "first_ts": first.get("ts") if first else None,
        "last_ts": last.get("ts") if last else None,
        "span_seconds": round(span, 3),
        "events": dict(events.most_common()),
        "distinct": {k: len(v) for k, v in ids.items()},
        "files": per_file,
    }
    report_skipped("ledger stats")  # said here too, so a script reading stderr sees it
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    st = _style(args, sys.stdout)
    print(f"{st('ledger', '1')}  {path}")
    print(f"  {report['lines']:,} lines, {_size(report['bytes'])} in {len(files)} file(s)")
    if first and last:
        print(f"  from {report['first_ts']} to {report['last_ts']} ({_duration(span)})")
    distinct = ", ".join(
        f"{n:,} {label}s" for (k, label), n in zip(_IDS, report["distinct"].values(), strict=True)
    )
    print(f"  {distinct}")
    if report["unreadable_lines"]:
        print(
            st(f"  {report['unreadable_lines']} unreadable line(s): run 'membrane-otel ledger verify'", "33")
        )
    if report["unchained_lines"]:
        print(
            st(
                f"  {report['unchained_lines']} unchained line(s) skipped: run 'membrane-otel ledger verify'",
                "1;31",
            )
        )
    if events:
        print(st("\nevents", "1"))
        width = max(len(escape(e)) for e in events)
        for event, n in events.most_common():
            print(f"  {st(escape(event).ljust(width), _event_colour(event))}  {n:>9,}")
    print(st("\nfiles", "1"))
    width = max((len(os.path.basename(entry["file"])) for entry in per_file), default=4)
    for entry in per_file:
        name = os.path.basename(entry["file"]).ljust(width)
        print(f"  {name}  {entry['lines']:>9,} lines  {_size(entry['bytes']):>9}")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return " ".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v) or f"{seconds:.3f}s"
