"""``membrane-otel bus serve`` (the reference bus) and ``membrane-otel bus tail`` (watch one)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

from membrane_otel._internal.tables import DEFAULT_BUS_URL

__all__ = ["HELP", "build_parser", "run"]

HELP = "run the reference membrane bus, or tail one"


def build_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    serve = sub.add_parser(
        "serve",
        help="run the reference bus (WebSocket at /api/ws, GET /health)",
        description="Run the reference membrane bus in the foreground until Ctrl-C / SIGTERM.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_token_file(
        serve, "bus serve", "require 'Authorization: Bearer TOKEN' from clients, TOKEN read from FILE"
    )
    serve.add_argument("--certfile", default=None, help="TLS certificate (PEM): serve wss://")
    serve.add_argument("--keyfile", default=None, help="TLS private key (PEM), if not in --certfile")
    serve.add_argument(
        "--record", default=None, metavar="FILE", help="append every accepted envelope to FILE (JSONL)"
    )
    serve.add_argument(
        "--subscriber-buffer",
        type=int,
        default=8 * 1024 * 1024,
        metavar="BYTES",
        help="a subscriber further behind than this is disconnected (close code 1008; default 8 MiB)",
    )

    tail = sub.add_parser(
        "tail",
        help="print envelopes as the bus broadcasts them",
        description="Subscribe to a bus and print what arrives: one readable line per envelope on a "
        "terminal, one JSON envelope per line when piped.",
    )
    tail.add_argument(
        "--url", default=None, help=f"bus URL (default: $MEMBRANE_BUS_URL, else {DEFAULT_BUS_URL})"
    )
    add_token_file(tail, "bus tail")
    tail.add_argument("--ca-file", default=None, help="CA certificate to verify a wss:// bus with")
    fmt = tail.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json", help="JSON lines, always")
    fmt.add_argument(
        "--pretty", dest="fmt", action="store_const", const="pretty", help="readable lines, always"
    )
    tail.add_argument(
        "--count", type=int, default=0, help="exit after N envelopes (default: run until Ctrl-C)"
    )
    tail.add_argument(
        "--no-reconnect", action="store_true", help="exit when the bus is unreachable instead of waiting"
    )


class _TokenOnCommandLine(argparse.Action):
    """``--token`` is refused: any local user reads another's command line (``ps``)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        parser.error(
            "--token puts the token on the command line, where every local user can read it; "
            "use --token-file FILE or $MEMBRANE_BUS_TOKEN"
        )


def add_token_file(parser: argparse.ArgumentParser, command: str, what: str = "") -> None:
    """``--token-file FILE`` (and a refused ``--token``) on a command that talks to the bus."""
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="FILE",
        help=(what or "bearer token read from FILE (its first line)") + " (default: $MEMBRANE_BUS_TOKEN)",
    )
    parser.add_argument("--token", action=_TokenOnCommandLine, help=argparse.SUPPRESS)


def bus_token(args: argparse.Namespace) -> str | None:
    """The bus token: ``--token-file``, else ``$MEMBRANE_BUS_TOKEN``, else none.

    Raises :class:`UnsafePathError` (one line) when the file cannot be used.
    """
    if args.token_file:
        from membrane_otel._internal.state import read_secret_file

        return read_secret_file(args.token_file)
    return os.environ.get("MEMBRANE_BUS_TOKEN") or None


def run(args: argparse.Namespace) -> int:
    from membrane_otel._internal.state import UnsafePathError

    try:
        args.token = bus_token(args)
    except UnsafePathError as exc:
        print(f"membrane-otel bus {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.action == "serve":
        return _serve(args)
    return _tail(args)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from membrane_otel.membrane._bus_server import serve

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = args.token
    try:
        serve(
            args.host,
            args.port,
            token,
            args.certfile,
            args.keyfile,
            record=args.record,
            subscriber_buffer=args.subscriber_buffer,
        )
    except OSError as exc:
        print(f"membrane-otel bus serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"membrane-otel bus serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _subscribe_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "subscribe=1"


def _tail(args: argparse.Namespace) -> int:
    import ssl

    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
    from websockets.sync.client import connect

    from membrane_otel.cli._output import json_safe

    url = args.url or os.environ.get("MEMBRANE_BUS_URL") or DEFAULT_BUS_URL
    token = args.token
    pretty = (args.fmt or ("pretty" if sys.stdout.isatty() else "json")) == "pretty"
    color = pretty and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    tls = ssl.create_default_context(cafile=args.ca_file) if url.startswith("wss://") else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    seen = 0
    waiting_said = False
    while True:
        try:
            with connect(_subscribe_url(url), additional_headers=headers, ssl=tls, open_timeout=5) as ws:
                print(f"membrane-otel bus tail: subscribed to {url}", file=sys.stderr, flush=True)
                waiting_said = False
                for message in ws:
                    try:
                        env = json.loads(message)
                    except ValueError:
                        continue
                    if not isinstance(env, dict) or env.get("type") in ("subscribed", "ack", "error"):
                        continue  # control frames, not envelopes
                    line = _pretty(env, color) if pretty else json_safe(json.dumps(env, ensure_ascii=False))
                    print(line, flush=True)
                    seen += 1
                    if args.count and seen >= args.count:
                        return 0
        except InvalidStatus as exc:
            code = exc.response.status_code
            hint = " (set --token-file or MEMBRANE_BUS_TOKEN)" if code == 401 else ""
            print(f"membrane-otel bus tail: {url} refused: HTTP {code}{hint}", file=sys.stderr)
            return 1
        except (InvalidURI, InvalidHandshake, ssl.SSLError) as exc:
            print(f"membrane-otel bus tail: {url}: {exc}", file=sys.stderr)
            return 1
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            if args.no_reconnect:
                print(f"membrane-otel bus tail: {url} unreachable: {exc}", file=sys.stderr)
                return 1
            if not waiting_said:
                print(
                    f"membrane-otel bus tail: waiting for the bus at {url} ...", file=sys.stderr, flush=True
                )
                waiting_said = True
            time.sleep(1.0)


_SEVERITY_COLOR = {"critical": "\x1b[1;31m", "error": "\x1b[31m", "warn": "\x1b[33m", "warning": "\x1b[33m"}


def _pretty(env: dict[str, Any], color: bool) -> str:
    """``HH:MM:SS.mmm SEVERITY channel  content  [source]`` on one line, control characters escaped."""
    from membrane_otel.cli._output import escape

    md = env.get("metadata") if isinstance(env.get("metadata"), dict) else {}
    ts_ms = md.get("timestamp_ms") if isinstance(md, dict) else None
    when = datetime.fromtimestamp(ts_ms / 1000 if isinstance(ts_ms, int | float) else time.time())
    severity = escape(str(env.get("severity") or "info"))
    channel = escape(str(env.get("channel") or "-"))
    content = escape(" ".join(str(env.get("content") or "").split()))
    if len(content) > 200:
        content = content[:199] + "…"
    source = escape(str(env.get("source") or env.get("citizen_id") or ""))
    sev = f"{severity.upper():<8}"
    if color and severity.lower() in _SEVERITY_COLOR:
        sev = f"{_SEVERITY_COLOR[severity.lower()]}{sev}\x1b[0m"
    tail = f"  [{source}]" if source else ""
    return f"{when:%H:%M:%S}.{when.microsecond // 1000:03d} {sev} {channel}  {content}{tail}"
