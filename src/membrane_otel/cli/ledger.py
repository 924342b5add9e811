"""``membrane-otel ledger tail | query | stats | verify``: read and check the resonance ledger.

Every action reads all the ledger's files (rotated ones first). On a terminal the output is
aligned and coloured; piped, it is plain (``--json`` gives the raw lines). Standard
library only, like the shell emitter: reading a ledger must not wait for the OTel SDK.

``verify`` exit codes: 0 chain intact; 1 tampering found (the first edited, removed,
inserted or reordered line is named; with ``--checkpoint``, a cut tail or a recomputed chain);
3 chain intact but torn lines (a writer died mid-write); 2 no ledger, no key, or bad arguments
(tail, query and stats also exit 2 when there is no ledger).
``checkpoint`` writes a keyed checkpoint now.

``stats`` and ``verify`` live in ``_ledger_stats.py`` and ``_ledger_verify.py``, imported
when the action runs; tail and query, which share the reading and following code, stay here.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from membrane_otel.cli._output import (
    _IDS,
    Line,
    _event_colour,
    _parse,
    _Style,
    _style,
    escape,
    json_safe,
    report_skipped,
)
from membrane_otel.cli.emit import resolve_ledger_path

__all__ = ["HELP", "build_parser", "run"]

HELP = "tail, query, stats and verify the ledger"

# Fields every line has, shown in their own columns (or not at all) in human output.
_HIDDEN = frozenset(
    (
        "event",
        "ts",
        "ts_unix",
        "seq",
        "prev_hash",
        "hash",
        "record_id",
        "otel_trace_id",
        "otel_span_id",
        "service",
    )
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def build_parser(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--ledger",
        metavar="PATH",
        help="ledger file (default: $MEMBRANE_LEDGER_PATH, $AGI_LEDGER_PATH, else memory/resonance_ledger.jsonl)",
    )
    common.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour output (default: auto)"
    )
    filters = argparse.ArgumentParser(add_help=False)
    f = filters.add_argument_group("filters")
    f.add_argument(
        "--event", action="append", metavar="NAME", help="event type; globs allowed (task_*); repeatable"
    )
    f.add_argument("--task-id")
    f.add_argument("--persona", metavar="PERSONA_ID")
    f.add_argument("--session", metavar="SESSION_ID")
    f.add_argument("--actor", help="narratives whose narrative.who is ACTOR")
    f.add_argument("--action", help="narratives whose narrative.what (or event narrative.ACTION) is ACTION")
    f.add_argument("--match", action="append", metavar="KEY=VALUE", help="a field equals a value; repeatable")
    f.add_argument("--since", metavar="WHEN", help="1h, 30m, 2d, 45s, 1w ago, or an ISO 8601 time")
    f.add_argument("--until", metavar="WHEN", help="same forms as --since")

    sub = parser.add_subparsers(dest="action_name", required=True, metavar="ACTION")
    tail = sub.add_parser("tail", parents=[common, filters], help="the last lines; -f follows new ones")
    tail.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing lines as they are appended")
    tail.add_argument("--json", action="store_true", help="raw JSON lines")

    query = sub.add_parser("query", parents=[common, filters], help="lines matching filters")
    query.add_argument("--limit", type=int, default=0, metavar="N", help="only the N most recent matches")
    query.add_argument("--json", action="store_true", help="raw JSON lines")

    stats = sub.add_parser("stats", parents=[common], help="counts by event, time span, files and sizes")
    stats.add_argument("--json", action="store_true", help="one JSON object")

    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="walk the hash chain over every file; name the first edited, removed or reordered line",
        description="Exit 0: intact. 1: tampering found. 3: intact, but torn lines (a writer died mid-write). "
        "2: no ledger.",
    )
    verify.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no OK line; problems only"
    )
    verify.add_argument("--json", action="store_true", help="the report as one JSON object")
    verify.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="also check the keyed checkpoints in FILE (key: $MEMBRANE_LEDGER_KEY or $MEMBRANE_LEDGER_KEY_FILE): "
        "catches a cut tail and a recomputed chain",
    )
    verify.add_argument(
        "--progress-every", type=int, default=100_000, metavar="N", help="when stderr is not a terminal: "
        "a progress line every N lines (default 100000; 0: none)"
    )  # fmt: skip

    checkpoint = sub.add_parser(
        "checkpoint",
        parents=[common],
        help="write a keyed checkpoint of the ledger now (key: $MEMBRANE_LEDGER_KEY or $MEMBRANE_LEDGER_KEY_FILE)",
    )
    checkpoint.add_argument(
        "--out",
        metavar="FILE",
        help="append it to FILE (default: $MEMBRANE_CHECKPOINT_FILE, else <ledger>.checkpoints)",
    )


# --------------------------------------------------------------------------- output


def _value(value: Any) -> str:
    if isinstance(value, str):
        text = (
            value
            if value and not any(c in value for c in ' ="\n\t')
            else json.dumps(value, ensure_ascii=False)
        )
    else:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return escape(text)


def render(line: Line, style: _Style, event_width: int = 22) -> str:
    """One ledger line as ``ts  event  ids  key=value …`` (control characters escaped)."""
    ts = escape(str(line.get("ts", "?")))
    event = escape(str(line.get("event", "?")))
    parts = [style(ts.ljust(24), "2"), style(event.ljust(event_width), _event_colour(event))]
    ids = [f"{label}={_value(line[key])}" for key, label in _IDS if line.get(key) is not None]
    if ids:
        parts.append(style(" ".join(ids), "1"))
    fields = [
        f"{style(escape(k), '2')}={_value(v)}"
        for k, v in line.items()
        if k not in _HIDDEN and not any(k == i for i, _ in _IDS)
    ]
    parts.extend(fields)
    return "  ".join(parts).rstrip()


def _emit(line: Line, raw: bytes, args: argparse.Namespace, style: _Style, width: int) -> None:
    if args.json:
        sys.stdout.write(json_safe(raw.decode("utf-8", "replace")) + "\n")
    else:
        sys.stdout.write(render(line, style, width) + "\n")


# --------------------------------------------------------------------------- filters


def parse_when(text: str, now: float | None = None) -> float:
    """``1h`` / ``30m`` / ``2d`` / ``45s`` / ``1w`` ago, or ISO 8601 (naive = local time) → unix seconds."""
    now = time.time() if now is None else now
    t = text.strip()
    if len(t) >= 2 and t[-1].lower() in _UNITS:
        try:
            return now - float(t[:-1]) * _UNITS[t[-1].lower()]
        except ValueError:
            pass
    from datetime import datetime

    try:
        return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SystemExit(
            f"membrane-otel ledger: cannot read time {text!r}: use 1h, 30m, 2d or ISO 8601"
        ) from None


def _equals(key: str, want: str) -> Callable[[Line], bool]:
    """The field ``key`` is ``want``, compared as the text one would type (1, true, null, abc)."""

    def check(line: Line) -> bool:
        return key in line and (line[key] == want or _value(line[key]) == want)

    return check


def build_filter(args: argparse.Namespace, now: float | None = None) -> Callable[[Line], bool]:
    """One predicate from the filter options (all must hold)."""
    checks: list[Callable[[Line], bool]] = []
    if args.event:
        pats = list(args.event)
        checks.append(lambda ln: any(fnmatch.fnmatchcase(str(ln.get("event", "")), p) for p in pats))
    for key, want in (("task_id", args.task_id), ("persona_id", args.persona), ("session_id", args.session)):
        if want is not None:
            checks.append(_equals(key, want))
    if args.actor is not None:
        actor = args.actor
        checks.append(
            lambda ln: str(ln.get("event", "")).startswith("narrative.") and ln.get("narrative.who") == actor
        )
    if args.action is not None:
        action = args.action
        checks.append(
            lambda ln: (
                str(ln.get("event", "")).startswith("narrative.")
                and (ln.get("narrative.what") == action or ln.get("event") == f"narrative.{action}")
            )
        )
    for item in args.match or ():
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"membrane-otel ledger: --match {item!r}: expected KEY=VALUE")
        checks.append(_equals(key, raw))
    if args.since:
        since = parse_when(args.since, now)
        checks.append(lambda ln: float(ln.get("ts_unix") or 0) >= since)
    if args.until:
        until = parse_when(args.until, now)
        checks.append(lambda ln: float(ln.get("ts_unix") or 0) <= until)
    return lambda ln: all(c(ln) for c in checks)


# --------------------------------------------------------------------------- reading


def _reverse_lines(fd: int, size: int) -> Iterator[bytes]:
    """Raw lines of ``fd[0:size]``, newest first (reads blocks from the end)."""
    pos, rest = size, b""
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        lines = (os.pread(fd, step, pos) + rest).split(b"\n")
        rest = lines.pop(0)
        for raw in reversed(lines):
            if raw.strip():
                yield raw
    if rest.strip():
        yield rest


def _reverse_files(names: list[str]) -> Iterator[bytes]:
    for name in reversed(names):
        with open(name, "rb") as f:
            yield from _reverse_lines(f.fileno(), os.fstat(f.fileno()).st_size)


def _forward(path: str) -> Iterator[tuple[Line, bytes]]:
    from membrane_otel.ledger._reader import iter_raw

    for _, _, raw in iter_raw(path):
        line = _parse(raw)
        if line is not None:
            yield line, raw


def _last(raws: Iterator[bytes], n: int, keep: Callable[[Line], bool]) -> list[tuple[Line, bytes]]:
    """The newest ``n`` kept lines of ``raws`` (newest first), returned oldest first."""
    found: list[tuple[Line, bytes]] = []
    if n <= 0:
        return found
    for raw in raws:
        line = _parse(raw)
        if line is not None and keep(line):
            found.append((line, raw))
            if len(found) >= n:
                break
    found.reverse()
    return found


def _inode(name: str) -> int:
    try:
        return os.stat(name).st_ino
    except FileNotFoundError:
        return -1


def _next_file(path: str, inode: int) -> str | None:
    """The file that comes after the one with ``inode``, once that one was rotated; else None."""
    from membrane_otel.ledger._reader import rotated_files

    current = _inode(path)
    if current == inode or current == -1:
        return None
    rotated = [name for _, name in rotated_files(path)]
    for k, name in enumerate(rotated):
        if _inode(name) == inode:
            # Several rotations may have happened while we slept: go through each file.
            return rotated[k + 1] if k + 1 < len(rotated) else path
    return path


def _follow(
    path: str, f: BinaryIO | None, keep: Callable[[Line], bool], out: Callable[[Line, bytes], None]
) -> int:
    """Print lines as they are appended to ``f`` and the files after it, until interrupted."""
    inode = os.fstat(f.fileno()).st_ino if f is not None else -2
    buf = b""

    def drain(handle: BinaryIO) -> bool:
        nonlocal buf
        chunk = handle.read()
        if not chunk:
            return False
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            line = _parse(raw)
            if line is not None and keep(line):
                out(line, raw)
        sys.stdout.flush()
        return True

    try:
        while True:
            if f is not None and drain(f):
                continue
            nxt = _next_file(path, inode) if f is not None else (path if _inode(path) != -1 else None)
            if nxt is None:
                time.sleep(0.1)  # a CLI polling a file: the stdlib has no portable file-change wait
                continue
            if f is not None:
                drain(f)  # the last writes before the rotation
                f.close()
            f, buf = open(nxt, "rb"), b""  # kept open across iterations
            inode = os.fstat(f.fileno()).st_ino
    finally:
        if f is not None:
            f.close()


# --------------------------------------------------------------------------- actions


def _tail(args: argparse.Namespace, path: str) -> int:
    keep = build_filter(args)
    style = _style(args, sys.stdout)
    from membrane_otel.ledger._reader import ledger_files, rotated_files

    if not args.follow:
        rows = _last(_reverse_files([str(f) for f in ledger_files(path)]), args.lines, keep)
        _print_rows(rows, args, style)
        return 0
    # Open the active file first and follow from exactly where the shown lines end, so that
    # nothing appended (or rotated) meanwhile is missed or shown twice.
    try:
        f: BinaryIO | None = open(path, "rb")  # handed to _follow, which closes it
    except FileNotFoundError:
        f = None
    end = os.fstat(f.fileno()).st_size if f is not None else 0
    inode = os.fstat(f.fileno()).st_ino if f is not None else -2
    older = [name for _, name in rotated_files(path) if _inode(name) != inode]
    newest = _reverse_lines(f.fileno(), end) if f is not None else iter(())
    rows = _last(itertools.chain(newest, _reverse_files(older)), args.lines, keep)
    width = _print_rows(rows, args, style)
    if f is not None:
        f.seek(end)
    return _follow(path, f, keep, lambda ln, raw: _emit(ln, raw, args, style, width))


def _print_rows(rows: list[tuple[Line, bytes]], args: argparse.Namespace, style: _Style) -> int:
    width = max([22, *(len(str(ln.get("event", ""))) for ln, _ in rows)])
    for line, raw in rows:
        _emit(line, raw, args, style, width)
    sys.stdout.flush()
    return width


def _query(args: argparse.Namespace, path: str) -> int:
    keep = build_filter(args)
    style = _style(args, sys.stdout)
    rows: list[tuple[Line, bytes]]
    if args.limit > 0:
        from membrane_otel.ledger._reader import ledger_files

        rows = _last(_reverse_files([str(f) for f in ledger_files(path)]), args.limit, keep)
    elif args.json:
        for line, raw in _forward(path):
            if keep(line):
                _emit(line, raw, args, style, 0)
        return 0
    else:
        rows = [(ln, raw) for ln, raw in _forward(path) if keep(ln)]
    width = max([10, *(len(str(ln.get("event", ""))) for ln, _ in rows)])
    for line, raw in rows:
        _emit(line, raw, args, style, width)
    if not rows and sys.stdout.isatty():
        print("no matching lines", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace, path: str) -> int:
    from membrane_otel.cli._ledger_stats import run_stats

    return run_stats(args, path)


def _verify(args: argparse.Namespace, path: str) -> int:
    from membrane_otel.cli._ledger_verify import run_verify

    return run_verify(args, path)


def run(args: argparse.Namespace) -> int:
    path = resolve_ledger_path(args.ledger)
    action = args.action_name
    if action in ("tail", "query", "stats") and not getattr(args, "follow", False):
        from membrane_otel.ledger._reader import ledger_files

        if not ledger_files(path):
            # Not "nothing matched" (rc 0, no output, or zeros): there is nothing to read.
            print(f"membrane-otel: no ledger at {path} (MEMBRANE_LEDGER_PATH, or --ledger)", file=sys.stderr)
            return 2
    if action in ("tail", "query"):
        try:
            return _tail(args, path) if action == "tail" else _query(args, path)
        finally:
            report_skipped(f"ledger {action}")
    if action == "stats":
        return _stats(args, path)
    if action == "checkpoint":
        from membrane_otel.cli._ledger_verify import run_checkpoint

        return run_checkpoint(args, path)
    return _verify(args, path)
