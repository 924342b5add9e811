"""The ``otlp`` exporters, wrapped so that what they send is a redacted copy.

Under this distro ``OTEL_TRACES_EXPORTER=otlp`` (and ``OTEL_LOGS_EXPORTER=otlp``) means the
SDK's own OTLP exporter behind :class:`RedactingSpanExporter` / :class:`RedactingLogExporter`:
:func:`route_otlp_through_redaction` renames the choice, after resolving the protocol exactly
as the SDK does (``OTEL_EXPORTER_OTLP_{TRACES,LOGS}_PROTOCOL``, then ``OTEL_EXPORTER_OTLP_PROTOCOL``,
gRPC by default), to our entry points, which build the stock exporter and wrap it. The
Collector's redaction processor is then a second line, not the first.

Log records are already redacted when emitted (the first logs processor); the log wrapper
catches what a processor added after it.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from membrane_otel.logs._redact import REDACTED_COUNT_ATTRIBUTE, Redactor, configured_redactor
from membrane_otel.logs._redact_spans import redacted_readable_span

# The SDK's exporter names → ours (the entry points in pyproject.toml).
_OURS = {
    "otlp_proto_grpc": "membrane_otlp_grpc",
    "otlp_proto_http": "membrane_otlp_http",
}
# The protocols the SDK itself accepts for ``otlp`` (anything else it refuses, in its own words).
_PROTOCOLS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


def route_otlp_through_redaction() -> None:
    """Rename ``otlp`` in ``OTEL_TRACES_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` to the wrapped exporters."""
    for signal in ("TRACES", "LOGS"):
        var = f"OTEL_{signal}_EXPORTER"
        names = os.environ.get(var)
        if not names or "otlp" not in names:
            continue
        protocol = (
            os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        ).strip()
        out = []
        for raw in names.split(","):
            name = raw.strip()
            if name == "otlp":
                # An unknown protocol stays as written: the SDK reports it in its own words.
                name = _PROTOCOLS.get(protocol, name)
            out.append(_OURS.get(name, name))
        os.environ[var] = ",".join(out)


class RedactingSpanExporter(SpanExporter):
    """Hands ``inner`` a redacted copy of every span (``http.url``, ``db.statement``, events…)."""

    def __init__(self, inner: SpanExporter, redactor: Redactor | None = None) -> None:
        self._inner = inner
        self._redactor = redactor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        r = self._redactor or configured_redactor()
        return self._inner.export([redacted_readable_span(s, r) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def redacted_log_record(record: ReadableLogRecord, redactor: Redactor) -> ReadableLogRecord:
    """A copy of ``record`` with its body and attributes redacted; the record when clean."""
    lr = record.log_record
    body, n = redactor.redact_counted(lr.body) if isinstance(lr.body, str | list | dict) else (lr.body, 0)
    attrs, k = redactor.redact_counted(dict(lr.attributes or {}))
    if n + k == 0:
        return record
    if k or n:
        prior = attrs.get(REDACTED_COUNT_ATTRIBUTE)
        attrs[REDACTED_COUNT_ATTRIBUTE] = (prior if isinstance(prior, int) else 0) + n + k
    api_record = copy.copy(lr)
    api_record.body = body
    api_record.attributes = attrs
    return ReadableLogRecord(
        log_record=api_record,
        resource=record.resource,
        instrumentation_scope=record.instrumentation_scope,
        limits=record.limits,
    )


class RedactingLogExporter(LogRecordExporter):
    """Hands ``inner`` a redacted copy of every log record."""

    def __init__(self, inner: LogRecordExporter, redactor: Redactor | None = None) -> None:
        self._inner = inner
        self._redactor = redactor

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        r = self._redactor or configured_redactor()
        return self._inner.export([redacted_log_record(rec, r) for rec in batch])

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]  # the SDK base leaves it unannotated

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


# The entry points: built by the SDK with the exporter's own arguments, like the stock ones.


class RedactingOTLPGrpcSpanExporter(RedactingSpanExporter):
    def __init__(self, **kwargs: Any) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        super().__init__(OTLPSpanExporter(**kwargs))


class RedactingOTLPHttpSpanExporter(RedactingSpanExporter):
    def __init__(self, **kwargs: Any) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        super().__init__(OTLPSpanExporter(**kwargs))


class RedactingOTLPGrpcLogExporter(RedactingLogExporter):
    def __init__(self, **kwargs: Any) -> None:
        from membrane_otel._internal.compat import otlp_log_exporter_class

        super().__init__(otlp_log_exporter_class("grpc")(**kwargs))


class RedactingOTLPHttpLogExporter(RedactingLogExporter):
    def __init__(self, **kwargs: Any) -> None:
        from membrane_otel._internal.compat import otlp_log_exporter_class

        super().__init__(otlp_log_exporter_class("http")(**kwargs))
