"""The bridge: an OTLP/gRPC + OTLP/HTTP receiver behind the Collector (``membrane-otel bridge serve``).

It takes what the Collector's ``otlp`` / ``otlphttp`` exporters send, redacts it, runs the
one translation (:mod:`membrane_otel.translate._core`, the same code as the in-process
exporters), delivers the envelopes of errors and stimuli to the bus or its spool, and
writes ledger lines; only then does it answer success. ``/ingest`` takes the old clients'
envelope arrays.

Modules: :mod:`._limits` (hard limits, cheap pre-checks), :mod:`._body` (capped
decompression), :mod:`._otlp` + :mod:`._salvage` (OTLP → neutral records, record by
record), :mod:`._core` (records → membrane + ledger), :mod:`._seen` (what was written,
across restarts), :mod:`._outbox` (the lossless bus path), :mod:`._legacy` (``/ingest``),
:mod:`._ingest` (the one core behind both servers), :mod:`._server` (HTTP on aiohttp),
:mod:`._grpc` (gRPC), :mod:`._metrics` (``/metrics`` and OTel self-metrics).
"""

from __future__ import annotations

from membrane_otel.bridge._core import Bridge, LedgerUnavailable, Outcome
from membrane_otel.bridge._server import DEFAULT_MAX_BODY, BridgeHTTPServer, ServerOptions, make_server

__all__ = [
    "DEFAULT_MAX_BODY",
    "Bridge",
    "BridgeHTTPServer",
    "LedgerUnavailable",
    "Outcome",
    "ServerOptions",
    "make_server",
]
