"""``membrane-otel bridge serve``: the OTLP receiver (gRPC and HTTP) behind the Collector."""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["HELP", "build_parser", "run"]

HELP = "run the OTLP/gRPC + OTLP/HTTP bridge behind the Collector"

# flag → (Limits field, type, help)
_LIMIT_FLAGS: dict[str, tuple[str, type, str]] = {
    "--max-body": ("max_body", int, "largest body, raw and decompressed, in bytes (default 16 MiB)"),
    "--max-records": ("max_records", int, "records per request (default 10000)"),
    "--max-depth": ("max_depth", int, "nesting of attribute values (default 16)"),
    "--max-values": (
        "max_values",
        int,
        "attribute values (attributes, array elements, events) per request (default 200000)",
    ),
    "--max-inflight": ("max_inflight", int, "requests decoded at once (default 2)"),
    "--max-connections": ("max_connections", int, "open connections, HTTP and gRPC each (default 512)"),
    "--read-budget": ("read_budget", int, "bytes of request bodies held at once (default 64 MiB)"),
    "--read-deadline": ("read_deadline_s", float, "seconds for a request body to arrive (default 30)"),
    "--first-request-deadline": (
        "first_request_s",
        float,
        "seconds a new connection has to send its first request, and a gRPC one may idle (default 10)",
    ),
}


def build_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = sub.add_parser(
        "serve",
        help="receive OTLP (gRPC and HTTP) and legacy /ingest; write the ledger, publish envelopes",
        description="Run the bridge in the foreground until Ctrl-C / SIGTERM. OTLP/gRPC on --grpc-port; "
        "OTLP/HTTP on --port: POST /v1/traces, POST /v1/logs (application/x-protobuf or application/json, "
        "optionally gzip), POST /ingest (a JSON array of membrane.inject envelopes), GET /health, "
        "GET /ready, GET /metrics (Prometheus text).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8010, help="OTLP/HTTP port (default 8010; 0 picks one)")
    serve.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="OTLP/gRPC port (default: --port + 1, so 8011; a free one when --port is 0; -1 off)",
    )
    serve.add_argument(
        "--ledger",
        default=None,
        metavar="PATH",
        help="ledger file (default: $MEMBRANE_LEDGER_PATH, else memory/resonance_ledger.jsonl)",
    )
    serve.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="require 'Authorization: Bearer <the file's first line>' (default: $MEMBRANE_BRIDGE_TOKEN). "
        "Not on the command line: every local user can read a process's arguments.",
    )
    serve.add_argument("--certfile", default=None, help="TLS certificate (PEM): serve https://")
    serve.add_argument("--keyfile", default=None, help="TLS private key (PEM), if not in --certfile")
    for flag, (_, kind, text) in _LIMIT_FLAGS.items():
        serve.add_argument(flag, type=kind, default=None, help=text)
    serve.add_argument(
        "--no-bus",
        action="store_true",
        help="write the ledger only; publish no envelopes to the membrane bus",
    )


def _token(args: argparse.Namespace, env_token: str | None) -> str | None:
    from membrane_otel._internal.state import read_secret_file

    if args.token_file:
        return read_secret_file(args.token_file, "--token-file")
    return env_token or os.environ.get("MEMBRANE_BRIDGE_TOKEN") or None


def _bus_path(settings: Any, ledger_path: Path) -> tuple[Any, Any]:
    """The outbox (spool + direct sends) and a publisher that builds envelopes into it."""
    from membrane_otel.bridge._outbox import Outbox
    from membrane_otel.membrane._bus_wire import WsTransport
    from membrane_otel.membrane._publish import MembranePublisher
    from membrane_otel.membrane._spool import Spool
    from membrane_otel.membrane._throttle import Throttle

    # A spool of its own per ledger: two bridges on one host must not replay each other's.
    key = hashlib.sha1(str(ledger_path.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    spool = Spool(Path(settings.spool_dir) / f"bridge-{key}", max_bytes=settings.spool_max_bytes)
    transport = WsTransport(
        settings.bus_url,
        token=settings.bus_token,
        ssl_ca=str(settings.bus_ca_file) if settings.bus_ca_file else None,
    )
    outbox = Outbox(transport, spool)
    throttle = (
        Throttle(
            type_interval=settings.throttle_type_interval_s,
            fingerprint_interval=settings.throttle_fingerprint_interval_s,
        )
        if settings.throttle
        else None
    )
    return outbox, MembranePublisher(settings, outbox, throttle)


def run(args: argparse.Namespace) -> int:
    import logging

    from membrane_otel.bridge import Bridge, ServerOptions, make_server
    from membrane_otel.bridge._grpc import make_grpc_server
    from membrane_otel.bridge._metrics import register_otel_metrics
    from membrane_otel.bridge._seen import SeenIds
    from membrane_otel.ledger._writer import ledger_for
    from membrane_otel.settings import ConfigError, load_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prog = "membrane-otel bridge serve"
    try:
        settings = load_settings(ledger_path=args.ledger)
        token = _token(args, settings.bridge_token)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    limits: dict[str, Any] = {}
    for flag, (name, _, _) in _LIMIT_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            if value <= 0:
                print(f"{prog}: {flag} must be positive, got {value}", file=sys.stderr)
                return 2
            limits[name] = value
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
    grpc_port = args.grpc_port if args.grpc_port is not None else (0 if args.port == 0 else args.port + 1)
    ledger_path = Path(settings.ledger_path)
    outbox = publisher = None
    if not args.no_bus:
        outbox, publisher = _bus_path(settings, ledger_path)
    from membrane_otel._internal.state import private_dir

    key = hashlib.sha1(str(ledger_path.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    try:
        seen_dir = private_dir(Path(settings.state_dir) / "bridge-seen" / key, "the bridge's state directory")
    except (OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    bridge = Bridge(
        ledger_for(settings.ledger_path, max_bytes=settings.ledger_max_bytes, recent_scan_bytes=64 << 20),
        publisher,
        outbox=outbox,
        seen=SeenIds(seen_dir),
        legacy_format=settings.envelope_format == "legacy",
        default_scope=settings.scope,
    )
    register_otel_metrics()
    try:
        server = make_server(
            bridge,
            args.host,
            args.port,
            ServerOptions(token=token, **limits),
            certfile=args.certfile,
            keyfile=args.keyfile,
        )
    except OSError as exc:  # the port is taken, or the address is not ours
        bridge.shutdown()
        print(f"{prog}: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    grpc_server = None
    if grpc_port >= 0:
        try:
            grpc_server = make_grpc_server(server.ingest, args.host, grpc_port)
        except (OSError, RuntimeError) as exc:
            if args.grpc_port is not None:  # asked for: not serving it is an error
                server.server_close()
                bridge.shutdown()
                print(f"{prog}: cannot listen on {args.host}:{grpc_port}: {exc}", file=sys.stderr)
                return 1
            # The default (--port + 1) is taken: serve OTLP/HTTP, and say so in one line.
            print(
                f"{prog}: OTLP/gRPC off: {args.host}:{grpc_port} is taken (use --grpc-port)", file=sys.stderr
            )

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must not run on its thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    bus = "off" if publisher is None else settings.bus_url
    grpc_text = f"OTLP/gRPC on {args.host}:{grpc_server.port}, " if grpc_server else ""
    print(
        f"membrane-otel bridge listening on {server.url} ({grpc_text}ledger {settings.ledger_path}, bus {bus})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if grpc_server is not None:
            grpc_server.stop()
        server.server_close()
        bridge.shutdown()
    return 0
