"""``membrane-otel traces view`` and ``membrane-otel traces stats``: the seed's viewer and stats.

Both read span lines from the ledger (rotated files included): the ``hrm_trace`` lines with
the seed's ``TraceEvent`` fields, the ``span`` lines of other instrumentation, and the seed's
own ``trace.jsonl`` lines. ``view`` rebuilds spans from those lines and draws them with the
console exporter's renderer, so a tree looks the same live and from the ledger.

    membrane-otel traces view --last 100
    membrane-otel traces view --hrm altitude          # or --hrm alt
    membrane-otel traces view --status error
    membrane-otel traces view --trace-id alt_1705180800_a3f2   # the whole request's tree
    membrane-otel traces stats                        # per layer: ops, mean, p95, errors, blocked
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from membrane_otel.translate._records import SpanData

__all__ = ["HELP", "build_parser", "run"]

HELP = "view HRM trace trees and stats from the ledger"

_STATUSES = ("success", "error", "blocked")


def build_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--ledger", default=None, help="ledger file (default: $MEMBRANE_LEDGER_PATH or the settings)"
    )
    common.add_argument("--hrm", metavar="LAYER", default=None, help="only this layer (code or name)")
    common.add_argument("--json", action="store_true", help="print one JSON document for machines")
    common.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour (auto: on a terminal)"
    )

    view = sub.add_parser("view", parents=[common], help="span trees from the ledger")
    view.add_argument("--last", type=int, metavar="N", default=100, help="the last N matching spans (100)")
    view.add_argument("--status", choices=_STATUSES, default=None, help="only spans with this status")
    view.add_argument(
        "--trace-id", metavar="ID", default=None,
        help="the whole tree of the request this id belongs to (an hrm id like alt_…_a3f2, "
        "or an OTel trace or span id)",
    )  # fmt: skip

    stats = sub.add_parser("stats", parents=[common], help="per-layer ops, mean/p95 ms, errors; slowest")
    stats.add_argument(
        "--last", type=int, metavar="N", default=1000, help="the last N HRM events (1000; 0 all)"
    )
    stats.add_argument("--top", type=int, metavar="N", default=5, help="how many slowest operations (5)")


# --------------------------------------------------------------------------- reading


def _ledger_path(args: argparse.Namespace) -> str:
    """``--ledger``, else the settings' path; a bad setting raises ValueError (ConfigError)."""
    if args.ledger:
        return str(args.ledger)
    # Only here: reading the settings is not needed when --ledger names the file.
    from membrane_otel.settings import load_settings

    return str(load_settings().ledger_path)


def read_span_lines(path: str) -> list[dict[str, Any]]:
    """Every span line of the ledger at ``path``, in ledger order (the order spans ended).

    In a ledger (a file with chained lines) a span line without chain fields was inserted by
    someone: it is skipped and counted. A file with no chain at all is not a ledger but the
    seed's plain ``trace.jsonl``, read as it is.
    """
    from membrane_otel.cli._output import skipped
    from membrane_otel.ledger._reader import is_chained, iter_raw, parse_line

    rows: list[dict[str, Any]] = []
    unchained: list[dict[str, Any]] = []
    chained = False
    for _, _, raw in iter_raw(path):
        # Cheap test first: most lines are log records, and parsing them all would dominate.
        if b'"hrm_layer"' not in raw and not raw.startswith(b'{"event":"span"'):
            chained = chained or raw.endswith(b'"}') and b',"prev_hash":"' in raw
            continue
        row = parse_line(raw)
        if row is None or not (row.get("hrm_layer") or row.get("event") == "span"):
            continue
        if is_chained(row):
            chained = True
            rows.append(row)
        else:
            unchained.append(row)
    if not chained:
        return unchained
    skipped.unchained += len(unchained)
    return rows


def _start_ns(row: dict[str, Any]) -> int:
    ts = row.get("ts_unix")
    if isinstance(ts, int | float):
        return int(ts * 1e9)
    stamp = row.get("timestamp") or row.get("ts")
    if isinstance(stamp, str):
        from datetime import datetime

        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9)
        except ValueError:
            pass
    return 0


def _ms(row: dict[str, Any]) -> float:
    value = row.get("duration_ms")
    return float(value) if isinstance(value, int | float) else 0.0


def _span_id(row: dict[str, Any]) -> str:
    return str(row.get("otel_span_id") or row.get("trace_id") or row.get("record_id") or id(row))


def _parent_id(row: dict[str, Any]) -> str | None:
    # OTel links when the line has them (they also pass through non-HRM spans), else the seed's.
    parent = row.get("otel_parent_span_id") if row.get("otel_span_id") else row.get("parent_id")
    return str(parent) if parent else None


def span_from_line(row: dict[str, Any]) -> SpanData:
    """A ledger span line back into the renderer's :class:`SpanData` (what ``span_line`` wrote)."""
    from membrane_otel.translate._records import EventData, SpanData

    start = _start_ns(row)
    end = start + int(round(_ms(row) * 1e6))
    raw_meta = row.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    status = str(row.get("status") or "success")
    attrs: dict[str, Any] = {}
    if row.get("hrm_layer"):
        attrs.update(
            {
                "hrm.layer": row.get("hrm_layer"),
                "hrm.operation": row.get("operation"),
                "hrm.component": row.get("component") or "",
                "hrm.input_summary": row.get("input_summary") or "",
                "hrm.output_summary": row.get("output_summary") or "",
                "hrm.status": status,
                "hrm.event_id": row.get("trace_id"),
            }
        )
        attrs.update({f"hrm.meta.{k}": v for k, v in meta.items() if k not in ("error", "error_type")})
    else:
        attrs.update({k: v for k, v in meta.items() if k not in ("error", "error_type")})
    events = []
    if status == "error" and (meta.get("error") or meta.get("error_type")):
        kind = str(meta.get("error_type") or "")
        message = str(meta.get("error") or "").removeprefix(f"{kind}: ")
        events.append(EventData("exception", start, {"exception.type": kind, "exception.message": message}))
    return SpanData(
        name=str(row.get("name") or f"{row.get('hrm_layer')}.{row.get('operation')}"),
        trace_id=str(row.get("otel_trace_id") or ""),
        span_id=_span_id(row),
        parent_span_id=_parent_id(row),
        start_ns=start,
        end_ns=end,
        status="error" if status == "error" else "unset",
        status_message=None,
        attributes=attrs,
        events=events,
        resource={"service.name": row.get("service")},
        scope="",
    )


def whole_request(rows: list[dict[str, Any]], wanted: str) -> list[dict[str, Any]]:
    """Every line of the request(s) that ``wanted`` belongs to; empty if no line has that id.

    A line is found by its readable id, OTel span id or OTel trace id. Its request is its
    OTel trace; a line without OTel ids (the seed's own format) is walked up ``parent_id``
    to its root, and the root's descendants are collected.
    """
    hits = [r for r in rows if wanted in (r.get("trace_id"), r.get("otel_span_id"), r.get("otel_trace_id"))]
    if not hits:
        return []
    traces = {r["otel_trace_id"] for r in hits if r.get("otel_trace_id")}
    keep = {id(r) for r in rows if r.get("otel_trace_id") in traces}
    by_id = {_span_id(r): r for r in rows}
    children: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        parent = _parent_id(r)
        if parent:
            children.setdefault(parent, []).append(r)
    for hit in hits:
        if hit.get("otel_trace_id"):
            continue
        root, seen = hit, {id(hit)}
        while (up := by_id.get(_parent_id(root) or "")) is not None and id(up) not in seen:
            root = up
            seen.add(id(root))
        todo = [root]
        while todo:
            node = todo.pop()
            if id(node) in keep:
                continue
            keep.add(id(node))
            todo.extend(children.get(_span_id(node), []))
    return [r for r in rows if id(r) in keep]


def _layer_filter(value: str | None) -> str | None:
    if value is None:
        return None
    from membrane_otel.spans._layers import layer_of

    return layer_of(value)[1]


# --------------------------------------------------------------------------- stats


def p95(values: list[float]) -> float:
    """The 95th percentile by nearest rank: the smallest value ≥ 95 % of the values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def compute_stats(rows: Iterable[dict[str, Any]], top: int) -> dict[str, Any]:
    """Per layer: ops, mean and p95 ms, errors, blocked; and the ``top`` slowest operations."""
    hrm_rows = [r for r in rows if r.get("hrm_layer")]
    durations: dict[str, list[float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for r in hrm_rows:
        layer = str(r["hrm_layer"])
        durations.setdefault(layer, []).append(_ms(r))
        c = counts.setdefault(layer, {"errors": 0, "blocked": 0})
        if r.get("status") == "error":
            c["errors"] += 1
        elif r.get("status") == "blocked":
            c["blocked"] += 1
    from membrane_otel.spans._layers import LAYERS

    layer_order = tuple(LAYERS.values())
    order = [n for n in layer_order if n in durations] + sorted(set(durations) - set(layer_order))
    layers = {
        name: {
            "ops": len(durations[name]),
            "mean_ms": round(sum(durations[name]) / len(durations[name]), 3),
            "p95_ms": round(p95(durations[name]), 3),
            "errors": counts[name]["errors"],
            "blocked": counts[name]["blocked"],
        }
        for name in order
    }
    slowest = sorted(hrm_rows, key=_ms, reverse=True)[: max(0, top)]
    return {
        "events": len(hrm_rows),
        "layers": layers,
        "slowest": [
            {
                "trace_id": r.get("trace_id"),
                "name": f"{r.get('hrm_layer')}.{r.get('operation')}",
                "duration_ms": _ms(r),
                "status": r.get("status"),
                "input_summary": r.get("input_summary") or "",
            }
            for r in slowest
        ],
    }


def format_stats(stats: dict[str, Any], *, colour: bool) -> list[str]:
    """The stats as aligned text; error and blocked counts coloured when not zero."""
    from membrane_otel.spans._console_tree import BOLD, CYAN, DIM, RED, YELLOW, paint

    lines = [paint(f"HRM layer stats (last {stats['events']} events)", BOLD, colour)]
    header = ("layer", "ops", "mean ms", "p95 ms", "errors", "blocked")
    table = [
        (
            name,
            str(s["ops"]),
            f"{s['mean_ms']:.2f}",
            f"{s['p95_ms']:.2f}",
            str(s["errors"]),
            str(s["blocked"]),
        )
        for name, s in stats["layers"].items()
    ]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]

    def cells(row: tuple[str, ...], head: bool = False) -> str:
        out = []
        for i, cell in enumerate(row):
            text = cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            if head:
                text = paint(text, DIM, colour)
            elif i == 0:
                text = paint(text, CYAN, colour)
            elif i == 4 and cell != "0":
                text = paint(text, RED, colour)
            elif i == 5 and cell != "0":
                text = paint(text, YELLOW, colour)
            out.append(text)
        return "  " + "  ".join(out).rstrip()

    lines.append(cells(header, head=True))
    lines.extend(cells(row) for row in table)
    if stats["slowest"]:
        lines += ["", paint("Slowest operations:", BOLD, colour)]
        slow = stats["slowest"]
        name_w = max(len(s["name"]) for s in slow)
        ms_w = max(len(f"{s['duration_ms']:.2f}") for s in slow)
        for n, s in enumerate(slow, 1):
            detail = f" ({s['input_summary']})" if s["input_summary"] else ""
            lines.append(
                f"  {n}. {paint(s['name'].ljust(name_w), CYAN, colour)}  "
                f"{s['duration_ms']:>{ms_w}.2f} ms  {paint(str(s['trace_id']), DIM, colour)}{detail}"
            )
    return lines


# --------------------------------------------------------------------------- run


def _colour(args: argparse.Namespace) -> bool:
    if args.color != "auto":
        return bool(args.color == "always")
    from membrane_otel.spans._console_tree import use_colour

    return use_colour(sys.stdout)


def _fail(message: str, code: int = 1) -> int:
    print(f"membrane-otel traces: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    try:
        path = _ledger_path(args)
        layer = _layer_filter(args.hrm)
    except ValueError as exc:  # ConfigError is a ValueError
        return _fail(str(exc), 2)
    if args.last < 0:
        return _fail("--last must be 0 or more", 2)
    from membrane_otel.ledger._reader import ledger_files

    if not ledger_files(path):
        return _fail(f"no ledger at {path}")
    from membrane_otel.cli._output import report_skipped

    try:
        return _act(args, read_span_lines(path), layer, path)
    finally:
        report_skipped("traces")


def _safe(value: Any) -> Any:
    """``value`` with control characters in every string escaped, for the terminal."""
    from membrane_otel.cli._output import escape

    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_safe(v) for v in value]
    return value


def _act(args: argparse.Namespace, rows: list[dict[str, Any]], layer: str | None, path: str) -> int:
    from membrane_otel.cli._output import json_safe

    if not args.json:
        rows = [_safe(r) for r in rows]
    if args.action == "stats":
        hrm_rows = [r for r in rows if r.get("hrm_layer") and (layer is None or r["hrm_layer"] == layer)]
        if args.last:
            hrm_rows = hrm_rows[-args.last :]
        stats = compute_stats(hrm_rows, args.top)
        out = (
            [json_safe(json.dumps(stats, ensure_ascii=False))]
            if args.json
            else format_stats(stats, colour=_colour(args))
        )
        print("\n".join(out))
        return 0
    return _view(args, rows, layer, path)


def _view(args: argparse.Namespace, rows: list[dict[str, Any]], layer: str | None, path: str) -> int:
    if args.trace_id:
        rows = whole_request(rows, args.trace_id)
        if not rows:
            return _fail(f"no span with id {args.trace_id} in {path}")
    if layer is not None:
        rows = [r for r in rows if r.get("hrm_layer") == layer]
    if args.status is not None:
        rows = [r for r in rows if (r.get("status") or "success") == args.status]
    if args.last and not args.trace_id:
        rows = rows[-args.last :]
    rows = sorted(rows, key=_start_ns)
    if args.json:
        from membrane_otel.cli._output import json_safe

        print(json_safe(json.dumps(rows, ensure_ascii=False)))
        return 0
    if not rows:
        print("no spans match", file=sys.stderr)
        return 0
    from membrane_otel.spans._console_tree import render_tree

    print("\n".join(render_tree([span_from_line(r) for r in rows], colour=_colour(args))))
    return 0
