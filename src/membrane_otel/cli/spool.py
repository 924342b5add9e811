"""``membrane-otel spool status`` and ``membrane-otel spool flush``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from membrane_otel._internal.tables import DEFAULT_BUS_URL

__all__ = ["HELP", "build_parser", "run"]

HELP = "show or flush the envelope spool"

_DEFAULT_DIR = "$XDG_STATE_HOME/membrane-otel/spool, else ~/.local/state/membrane-otel/spool"


def build_parser(parser: argparse.ArgumentParser) -> None:
    from membrane_otel.cli.bus import add_token_file

    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    dir_help = f"spool directory (default: $MEMBRANE_SPOOL_DIR, else {_DEFAULT_DIR})"

    status = sub.add_parser("status", help="what is waiting in the spool")
    status.add_argument("--dir", default=None, help=dir_help)
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")

    flush = sub.add_parser("flush", help="send every spooled envelope to the bus now")
    flush.add_argument("--dir", default=None, help=dir_help)
    flush.add_argument(
        "--url", default=None, help=f"bus URL (default: $MEMBRANE_BUS_URL, else {DEFAULT_BUS_URL})"
    )
    add_token_file(flush, "spool flush")
    flush.add_argument("--ca-file", default=None, help="CA certificate to verify a wss:// bus with")


def _spool_dir(args: argparse.Namespace) -> str | None:
    return args.dir or os.environ.get("MEMBRANE_SPOOL_DIR") or None


def run(args: argparse.Namespace) -> int:
    from membrane_otel.cli.bus import bus_token
    from membrane_otel.membrane._spool import Spool, UnsafePathError

    spool = Spool(_spool_dir(args))
    try:
        spool.check()
        token = bus_token(args) if args.action == "flush" else None
    except UnsafePathError as exc:
        print(f"membrane-otel spool {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.action == "status":
        st = spool.status()
        print(json.dumps(st) if args.json else _describe(st))
        return 0
    from membrane_otel.membrane._bus import BusError, flush_spool

    url = args.url or os.environ.get("MEMBRANE_BUS_URL") or DEFAULT_BUS_URL
    before = spool.status()["envelopes"]
    try:
        sent = flush_spool(url, spool, token, ssl_ca=args.ca_file)
    except BusError as exc:
        left = spool.status()["envelopes"]
        print(
            f"membrane-otel spool flush: bus at {url}: {exc}; "
            f"{before - left} of {before} envelopes delivered, {left} still spooled",
            file=sys.stderr,
        )
        return 1
    except ValueError as exc:
        print(f"membrane-otel spool flush: {exc}", file=sys.stderr)
        return 2
    after = spool.status()
    print(f"flushed {sent} envelopes to {url}; {after['envelopes']} left in {after['dir']}")
    return 0


def _describe(st: dict[str, Any]) -> str:
    size = _human_bytes(int(st["bytes"]))
    line = f"spool {st['dir']}: {st['files']} files, {st['envelopes']} envelopes, {size}"
    if st["oldest_age_s"] is not None:
        line += f", oldest {st['oldest_age_s']:.0f}s old"
    extras = [f"{st[k]} {k}" for k in ("claimed", "corrupt") if st[k]]
    if extras:
        line += f" ({', '.join(extras)})"
    return line


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
