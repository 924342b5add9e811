"""The bridge: an OTLP/HTTP receiver behind the Collector (``membrane-otel bridge serve``).

``/v1/traces`` and ``/v1/logs`` take what the Collector's ``otlphttp`` exporter sends, run
the one translation (:mod:`membrane_otel.translate._core`, the same code as the in-process
exporters) and write ledger lines, then publish the envelopes of errors and stimuli through
the bus client and its spool. ``/ingest`` takes the old clients' envelope arrays.

Modules: :mod:`.otlp` (OTLP → neutral records), :mod:`.body` (capped reading and
decompression), :mod:`.core` (records → ledger + membrane), :mod:`.legacy` (``/ingest``),
:mod:`.server` (HTTP).
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
