"""Every span's attributes and events through the one redaction policy, not only HRM spans.

Third-party instrumentations put ``http.url``, ``url.query``, ``db.statement``, headers and
exception messages on their spans verbatim; HRM spans are scrubbed as they are built
(:mod:`membrane_otel.spans._scrub`), these are not. So every exit that reads spans redacts
them: the translation to ledger lines and envelopes (:func:`redact_span_data`, on the neutral
record; the bridge's records pass the same way) and the ``otlp`` exporter wrapper
(:func:`redacted_readable_span`, a redacted copy: an ended span is immutable). A second pass
over an HRM span changes nothing, and costs little: short values take the prefilter.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status

from membrane_otel.logs._redact import REDACTED_COUNT_ATTRIBUTE, Redactor, configured_redactor
from membrane_otel.translate._records import EventData, SpanData


def _count(attrs: Any) -> int:
    n = attrs.get(REDACTED_COUNT_ATTRIBUTE) if attrs else None
    return n if isinstance(n, int) else 0


def redact_span_data(span: SpanData, redactor: Redactor | None = None) -> SpanData:
    """The neutral span with its name, status message, attributes and events (names too) redacted; the
    same object when nothing changed. A count of what went rides as ``membrane.redacted_count``."""
    r = redactor or configured_redactor()
    attrs, n = r.redact_counted(span.attributes)
    events = span.events
    changed_events = False
    new_events: list[EventData] = []
    for ev in events:
        ea, k = r.redact_counted(ev.attributes)
        ename = r(ev.name)  # an event's name is free text too ("retry with token=…")
        n += k
        changed = k > 0 or ename != ev.name
        changed_events = changed_events or changed
        new_events.append(EventData(ename, ev.time_ns, ea) if changed else ev)
    message = r(span.status_message) if span.status_message else span.status_message
    name = r(span.name)
    if n == 0 and message == span.status_message and name == span.name:
        return span
    if n:
        attrs[REDACTED_COUNT_ATTRIBUTE] = _count(span.attributes) + n
    return dataclasses.replace(
        span,
        name=name,
        status_message=message,
        attributes=attrs,
        events=new_events if changed_events else events,
    )


def redacted_readable_span(span: ReadableSpan, redactor: Redactor | None = None) -> ReadableSpan:
    """A copy of an ended SDK span with everything it would send redacted — name, status,
    attributes, event names and attributes, link attributes (the span itself is immutable);
    the same span when nothing needed it. (Its resource was cleaned when the SDK made it:
    :func:`redacted_resource`.)"""
    r = redactor or configured_redactor()
    attrs, n = r.redact_counted(dict(span.attributes or {}))
    events = []
    renamed = False
    for ev in span.events:
        ea, k = r.redact_counted(dict(ev.attributes or {}))
        ename = r(ev.name)
        n += k
        renamed = renamed or ename != ev.name
        events.append(Event(ename, ea, ev.timestamp) if k or ename != ev.name else ev)
    links = []
    for link in span.links:
        la, k = r.redact_counted(dict(link.attributes or {}))
        n += k
        links.append(Link(link.context, la) if k else link)
    status = span.status
    description = status.description
    new_description = r(description) if description else description
    name = r(span.name)
    if n == 0 and not renamed and new_description == description and name == span.name:
        return span
    if n:
        attrs[REDACTED_COUNT_ATTRIBUTE] = _count(span.attributes) + n
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attrs,
        events=events,
        links=links,
        kind=span.kind,
        status=Status(status.status_code, new_description) if new_description != description else status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def redacted_resource(resource: Resource, redactor: Redactor | None = None) -> Resource:
    """``resource`` with its attributes redacted; the same resource when nothing needed it.

    The SDK sends it with every batch of every signal. It is the process's own, from its
    environment (``OTEL_RESOURCE_ATTRIBUTES``: a DSN with its password, a ``…token=``) and
    the resource detectors (the ``process`` detector's command line and arguments).
    """
    r = redactor or configured_redactor()
    attrs = dict(resource.attributes)
    # The SDK's own service.instance.id, a UUID, is not looked at: the rules leave a bare UUID
    # as it is (tests/test_redact.py), and reading one builds them at start-up (~80 ms, the
    # start-up benchmark) where the rest of a usual resource needs no rule at all.
    looked = {k: v for k, v in attrs.items() if not (type(v) is str and _UUID.fullmatch(v))}
    clean, n = r.redact_counted(looked)
    return resource if n == 0 else Resource(attrs | clean, resource.schema_url)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
