"""THE translation: a neutral span / log record → ledger line + ``membrane.inject`` envelope.

``_records`` holds the neutral records and the adapter from the SDK's readable span and
log record; the bridge holds the other adapter, from OTLP protobuf. ``_core`` is the one
place a record becomes a line or an envelope.
"""

from __future__ import annotations

from membrane_otel._internal.lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from membrane_otel.translate._core import log_envelope, log_line, span_line
    from membrane_otel.translate._records import EventData, LogData, SpanData, log_from_sdk, span_from_sdk

__all__ = [
    "EventData",
    "LogData",
    "SpanData",
    "log_envelope",
    "log_from_sdk",
    "log_line",
    "span_from_sdk",
    "span_line",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "EventData": "._records",
        "LogData": "._records",
        "SpanData": "._records",
        "log_from_sdk": "._records",
        "span_from_sdk": "._records",
        "log_envelope": "._core",
        "log_line": "._core",
        "span_line": "._core",
    },
)
