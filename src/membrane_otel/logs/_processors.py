"""Processors that run on the application thread, before anything is queued.

:class:`MembraneLogProcessor` sits first in the logs pipeline: it gives every record a
stable id (so replays are idempotent), redacts the body and every string attribute
(secrets never leave the process, and never even reach a queue), and counts the record
as produced. It is cheap by design: no rendering, no I/O.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from membrane_otel._internal import counters
from membrane_otel._internal.compat import set_log_attribute
from membrane_otel._internal.tables import (
    BODY_MAX_BYTES,
    PRE_CUT,
    SEV_WARN,
    node_id,
    truncate,
    truncate_stack,
)
from membrane_otel.logs._errors import dedupe_key, fingerprint_from_stacktrace, stack_fingerprint

Redact = Callable[[Any], Any]


def _enrich_error(log_record: ReadWriteLogRecord, attrs: Any) -> None:
    """Fingerprint and dedupe key for warnings/errors that arrive without them.

    Records from ``setup_l2_logger`` carry them already; records from any other logger
    (through the root's OTel handler under opentelemetry-instrument) get them here, from
    the rendered stack the handler attached or, with no traceback, from the call site —
    we are still on the application's thread, inside the logging call.
    """
    stack = attrs.get("exception.stacktrace")
    fingerprint = fingerprint_from_stacktrace(stack) if isinstance(stack, str) else None
    if fingerprint is None:
        fingerprint = stack_fingerprint()
    scope = log_record.instrumentation_scope
    script = scope.name if scope is not None else "app"
    body = log_record.log_record.body
    attrs["membrane.fingerprint"] = fingerprint
    attrs["membrane.dedupe_key"] = dedupe_key(
        script, attrs.get("exception.type"), body if isinstance(body, str) else str(body), fingerprint
    )
    # seeds/000's limits hold here too: the fingerprint above saw the whole stack (its top
    # frames are the last lines), what goes on is the first 60 lines / 16 KB.
    if isinstance(stack, str):
        cut = truncate_stack(stack)
        if cut is not stack:
            set_log_attribute(attrs, "exception.stacktrace", cut)
    # The envelope's module/script_path/node_id, from the code attributes the logging
    # instrumentation adds (OTEL_PYTHON_LOG_CODE_ATTRIBUTES, on under this distro).
    path = attrs.get("code.file.path")
    if isinstance(path, str) and path and "membrane.script_path" not in attrs:
        rel = _relative(path)
        set_log_attribute(attrs, "membrane.script_path", rel)
        set_log_attribute(attrs, "membrane.node_id", node_id(rel))
        if "code.namespace" not in attrs:
            set_log_attribute(attrs, "code.namespace", os.path.splitext(os.path.basename(path))[0])


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (the seeds' script_path)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def _identity(value: Any) -> Any:
    return value


def configured_value_redactor() -> Redact:
    """The configured redactor applied to values (strings, and strings inside lists and dicts)."""
    from membrane_otel.logs._redact import configured_redactor

    return configured_redactor().redact_value


# Set while a producer that has already redacted a record with the configured redactor emits
# it (the L2 logger's renderer): redacting it again would double the work of an error storm.
# A context variable, not an attribute, so that no record can claim it for itself.
REDACTED_UPSTREAM: contextvars.ContextVar[bool] = contextvars.ContextVar("membrane_redacted", default=False)


class MembraneLogProcessor(LogRecordProcessor):
    """Stamp a record id, redact, count. Must be the first logs processor."""

    def __init__(self, redact: Redact | None = None) -> None:
        self._redact = redact or _identity

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        redact = _identity if REDACTED_UPSTREAM.get() else self._redact
        redacted = 0
        if isinstance(record.body, str) and len(record.body) > PRE_CUT:
            record.body = record.body[:PRE_CUT]  # then redacted, then cut to 64 KB (redact_capped)
        if isinstance(record.body, str | list | dict):
            body = redact(record.body)
            redacted += body != record.body
            record.body = body
        body = record.body
        if isinstance(body, str) and len(body) > BODY_MAX_BYTES // 4:
            # seeds/000: a body is at most 64 KB (redacted first, so the redactor saw it all).
            record.body = truncate(body, BODY_MAX_BYTES, unit="bytes")
        attrs = record.attributes
        if attrs is not None:
            # Redact the attributes as one mapping, so a value is judged by its key too
            # (`extra={"password": "hunter2"}` on a log call). BoundedAttributes is mutable
            # until the record is read.
            plain = dict(attrs)
            huge = [k for k, v in plain.items() if isinstance(v, str) and len(v) > PRE_CUT]
            for key in huge:
                plain[key] = str(plain[key])[:PRE_CUT]
            cleaned = redact(plain)
            if cleaned is not plain:
                for key, value in cleaned.items():
                    if value is not plain[key] and value != plain[key]:
                        set_log_attribute(attrs, key, value)
                        redacted += 1
            for key in huge:  # cut like a body, after the redactor read past the cut
                set_log_attribute(attrs, key, truncate(str(cleaned[key]), BODY_MAX_BYTES, unit="bytes"))
            if redacted:
                # How many values were redacted (never which): visible without the secret.
                set_log_attribute(attrs, "membrane.redacted_count", redacted)
            if "membrane.record_id" not in attrs:
                set_log_attribute(attrs, "membrane.record_id", os.urandom(12).hex())
            if (
                "membrane.fingerprint" not in attrs
                and record.event_name is None
                and (record.severity_number is not None and record.severity_number.value >= SEV_WARN)
            ):
                _enrich_error(log_record, attrs)
        else:
            record.attributes = {"membrane.record_id": os.urandom(12).hex()}
            if redacted:
                record.attributes["membrane.redacted_count"] = redacted
        counters.incr("produced_logs")

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
