"""The small neutral records the one translation works on, and the SDK adapters.

Two thin adapters feed :mod:`membrane_otel.translate._core`: this module's, from the SDK's
``ReadableSpan`` / ``ReadableLogRecord`` (embedded mode), and the bridge's, from the OTLP
protobuf the Collector sends. Both produce the same :class:`SpanData` / :class:`LogData`,
so both modes produce the same envelopes and ledger lines.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry.context import Context
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

StatusName = Literal["unset", "ok", "error"]


@dataclass(slots=True)
class EventData:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SpanData:
    name: str
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    status: StatusName
    status_message: str | None
    attributes: dict[str, Any]
    events: list[EventData]
    resource: dict[str, Any]
    scope: str


@dataclass(slots=True)
class LogData:
    time_ns: int
    severity_number: int  # OTel severity number: 9 INFO, 13 WARN, 17 ERROR, 21 FATAL
    severity_text: str
    body: Any
    attributes: dict[str, Any]
    event_name: str | None
    trace_id: str | None
    span_id: str | None
    resource: dict[str, Any]
    scope: str


def _plain(value: Any) -> Any:
    """Attribute values as JSON-ready Python: tuples become lists, mappings dicts."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


# Most attribute values are scalars; testing the exact type first skips the (slow, ABC)
# isinstance checks of _plain for them.
_SCALARS = frozenset((str, int, float, bool, type(None)))


def _attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {k: v if type(v) in _SCALARS else _plain(v) for k, v in attributes.items()}


_last_resource: tuple[object, dict[str, Any]] = (None, {})


def _resource(resource: Any) -> dict[str, Any]:
    """A resource's attributes, converted once: every record of a provider shares one."""
    global _last_resource
    if resource is None:
        return {}
    seen, attrs = _last_resource
    if seen is not resource:
        attrs = _attrs(resource.attributes)
        _last_resource = (resource, attrs)
    return attrs


def _hex32(value: int | None) -> str | None:
    return f"{value:032x}" if value else None


def _hex16(value: int | None) -> str | None:
    return f"{value:016x}" if value else None


def span_from_sdk(span: ReadableSpan) -> SpanData:
    ctx = span.context
    parent = span.parent
    status = span.status
    code: StatusName = (
        "error"
        if status.status_code is StatusCode.ERROR
        else "ok"
        if status.status_code is StatusCode.OK
        else "unset"
    )
    scope = span.instrumentation_scope
    return SpanData(
        name=span.name,
        trace_id=_hex32(ctx.trace_id) or "" if ctx else "",
        span_id=_hex16(ctx.span_id) or "" if ctx else "",
        parent_span_id=_hex16(parent.span_id) if parent else None,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        status=code,
        status_message=status.description,
        attributes=_attrs(span.attributes),
        events=[EventData(e.name, e.timestamp, _attrs(e.attributes)) for e in span.events],
        resource=_resource(span.resource),
        scope=scope.name if scope else "",
    )


def readable_copy(log_record: ReadWriteLogRecord) -> ReadableLogRecord:
    """A read-only copy of a record being emitted, as the SDK's batch processor takes it:
    the (possibly large) context is dropped, the record itself kept."""
    api_record = copy.copy(log_record.log_record)
    api_record.context = Context()
    return ReadableLogRecord(
        log_record=api_record,
        resource=log_record.resource or Resource.get_empty(),
        instrumentation_scope=log_record.instrumentation_scope,
        limits=log_record.limits,
    )


def log_from_sdk(record: ReadableLogRecord) -> LogData:
    lr = record.log_record
    scope = record.instrumentation_scope
    severity = lr.severity_number.value if lr.severity_number is not None else 0
    body = lr.body
    return LogData(
        time_ns=lr.timestamp or lr.observed_timestamp or 0,
        severity_number=severity,
        severity_text=lr.severity_text or "",
        body=body if type(body) in _SCALARS else _plain(body),
        attributes=_attrs(lr.attributes),
        event_name=lr.event_name,
        trace_id=_hex32(lr.trace_id),
        span_id=_hex16(lr.span_id),
        resource=_resource(record.resource),
        scope=scope.name if scope else "",
    )
