"""``membrane-otel bridge serve``: the OTLP/HTTP receiver behind the Collector."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

__all__ = ["HELP", "build_parser", "run"]

HELP = "run the OTLP/HTTP bridge behind the Collector"


def build_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = sub.add_parser(
        "serve",
        help="receive OTLP/HTTP (/v1/traces, /v1/logs) and legacy /ingest; write the ledger, publish envelopes",
        description="Run the bridge in the foreground until Ctrl-C / SIGTERM. Endpoints: POST /v1/traces, "
        "POST /v1/logs (application/x-protobuf or application/json, optionally gzip), POST /ingest "
        "(a JSON array of membrane.inject envelopes), GET /health, GET /ready.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8010, help="port (default 8010; 0 picks a free one)")
    serve.add_argument(
        "--ledger",
        default=None,
        metavar="PATH",
        help="ledger file (default: $MEMBRANE_LEDGER_PATH, else memory/resonance_ledger.jsonl)",
    )
    serve.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' (default: $MEMBRANE_BRIDGE_TOKEN)",
    )
    serve.add_argument("--certfile", default=None, help="TLS certificate (PEM): serve https://")
    serve.add_argument("--keyfile", default=None, help="TLS private key (PEM), if not in --certfile")
    serve.add_argument(
        "--max-body",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest accepted body after decompression (default 32 MiB)",
    )
    serve.add_argument(
        "--no-bus",
        action="store_true",
        help="write the ledger only; publish no envelopes to the membrane bus",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from membrane_otel.bridge import DEFAULT_MAX_BODY, Bridge, ServerOptions, make_server
    from membrane_otel.ledger._writer import ledger_for
    from membrane_otel.settings import ConfigError, load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prog = "membrane-otel bridge serve"
    try:
        settings = load_settings(ledger_path=args.ledger)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    max_body = DEFAULT_MAX_BODY if args.max_body is None else args.max_body
    if max_body < 1:
        print(f"{prog}: --max-body must be a positive number of bytes", file=sys.stderr)
        return 2
    if args.keyfile and not args.certfile:
        print(f"{prog}: --keyfile needs --certfile", file=sys.stderr)
        return 2
    if args.certfile:
        from membrane_otel.bridge._server import tls_context

        try:
            tls_context(args.certfile, args.keyfile)
        except OSError as exc:
            print(
                f"{prog}: cannot load the TLS certificate/key ({args.certfile}, {args.keyfile}): {exc}",
                file=sys.stderr,
            )
            return 2
    token = (
        args.token
        if args.token is not None
        else settings.bridge_token or os.environ.get("MEMBRANE_BRIDGE_TOKEN")
    )
    publisher = None
    if not args.no_bus:
        from membrane_otel.membrane._publish import build_publisher

        publisher = build_publisher(settings)
    bridge = Bridge(
        # After a restart the Collector re-sends whole in-flight batches (4 decode slots of up
        # to 4096 records, tracebacks included): remember the ids of the last 64 MiB.
        ledger_for(settings.ledger_path, max_bytes=settings.ledger_max_bytes, recent_scan_bytes=64 << 20),
        publisher,
        legacy_format=settings.envelope_format == "legacy",
        default_scope=settings.scope,
    )
    try:
        server = make_server(
            bridge,
            args.host,
            args.port,
            ServerOptions(token=token or None, max_body=max_body),
            certfile=args.certfile,
            keyfile=args.keyfile,
        )
    except OSError as exc:  # the port is taken, or the address is not ours
        bridge.shutdown()
        print(f"{prog}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must not run on its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    bus = "off" if publisher is None else settings.bus_url
    print(
        f"membrane-otel bridge listening on {server.url} (ledger {settings.ledger_path}, bus {bus})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        bridge.shutdown()
    return 0
