"""The ``otlp`` exporters, wrapped so that what they send is a redacted copy.

Under this distro ``OTEL_TRACES_EXPORTER=otlp`` (``OTEL_LOGS_EXPORTER``, ``OTEL_METRICS_EXPORTER``)
means the SDK's own OTLP exporter behind :class:`RedactingSpanExporter` /
:class:`RedactingLogExporter` / :class:`RedactingMetricExporter`:
:func:`route_otlp_through_redaction` renames the choice, after resolving the protocol exactly
as the SDK does (``OTEL_EXPORTER_OTLP_{TRACES,LOGS}_PROTOCOL``, then ``OTEL_EXPORTER_OTLP_PROTOCOL``,
gRPC by default), to our entry points, which build the stock exporter and wrap it. The
Collector's redaction processor is then a second line, not the first.

Log records are already redacted when emitted (the first logs processor); the log wrapper
catches what a processor added after it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
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
    """Rename ``otlp`` in ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER`` to the wrapped exporters."""
    for signal in ("TRACES", "LOGS", "METRICS"):
        var = f"OTEL_{signal}_EXPORTER"
        names = os.environ.get(var)
        if not names or ("otlp" not in names and "console" not in names):
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
            elif name == "console" and signal == "METRICS":
                # The SDK's console dump of metrics prints data point attributes as they are.
                name = "membrane_console"
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


class RedactingMetricExporter(MetricExporter):
    """Hands ``inner`` the metrics with every data point's attributes (and its exemplars')
    redacted: a counter keyed by a URL with its query, a user id, a tenant's token."""

    def __init__(self, inner: MetricExporter, redactor: Redactor | None = None) -> None:
        from membrane_otel._internal.compat import metric_exporter_preferences

        temporality, aggregation = metric_exporter_preferences(inner)
        super().__init__(preferred_temporality=temporality, preferred_aggregation=aggregation)
        self._inner = inner
        self._redactor = redactor

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        data = redacted_metrics(metrics_data, self._redactor or configured_redactor())
        return self._inner.export(data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def redacted_metrics(data: MetricsData, redactor: Redactor) -> MetricsData:
    """``data`` with its data points' and exemplars' attributes redacted (the same objects where
    nothing needed it: the SDK's points are frozen dataclasses, copied only when changed)."""

    def attrs(mapping: Any) -> Any:
        if not mapping:
            return mapping
        clean, n = redactor.redact_counted(dict(mapping))
        return clean if n else mapping

    def point(p: Any) -> Any:
        exemplars = getattr(p, "exemplars", None) or []
        new_ex = [dataclasses.replace(e, filtered_attributes=attrs(e.filtered_attributes)) for e in exemplars]
        changed = {}
        if any(
            a.filtered_attributes is not b.filtered_attributes for a, b in zip(new_ex, exemplars, strict=True)
        ):
            changed["exemplars"] = new_ex
        clean = attrs(p.attributes)
        if clean is not p.attributes:
            changed["attributes"] = clean
        return dataclasses.replace(p, **changed) if changed else p

    def metric(m: Any) -> Any:
        points = getattr(m.data, "data_points", None)
        if not points:
            return m
        new = [point(p) for p in points]
        if all(a is b for a, b in zip(new, points, strict=True)):
            return m
        return dataclasses.replace(m, data=dataclasses.replace(m.data, data_points=new))

    resource_metrics = []
    for rm in data.resource_metrics:
        scopes = [dataclasses.replace(sm, metrics=[metric(m) for m in sm.metrics]) for sm in rm.scope_metrics]
        resource_metrics.append(dataclasses.replace(rm, scope_metrics=scopes))
    return MetricsData(resource_metrics=resource_metrics)


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


class RedactingOTLPGrpcMetricExporter(RedactingMetricExporter):
    def __init__(self, **kwargs: Any) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        super().__init__(OTLPMetricExporter(**kwargs))


class RedactingOTLPHttpMetricExporter(RedactingMetricExporter):
    def __init__(self, **kwargs: Any) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        super().__init__(OTLPMetricExporter(**kwargs))


class RedactingConsoleMetricExporter(RedactingMetricExporter):
    def __init__(self, **kwargs: Any) -> None:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        super().__init__(ConsoleMetricExporter(**kwargs))
