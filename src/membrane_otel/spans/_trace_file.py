"""The seed's ``trace.jsonl``: HRM spans as plain ``TraceEvent`` lines, beside the ledger.

``tracing.output`` in the settings file (or ``MEMBRANE_TRACE_OUTPUT``) names the file. The
ledger keeps its own span lines (hash-chained, with OTel ids); this file holds exactly what
the seed's tracer wrote, one ``asdict(TraceEvent)`` per line, for tools built on it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.spans._event import TraceEvent
from membrane_otel.translate._core import span_line
from membrane_otel.translate._records import span_from_sdk

_log = RateLimitedLogger(logging.getLogger("membrane_otel.spans._trace_file"))


class TraceFileSpanExporter(SpanExporter):
    """Appends each finished HRM span to ``path`` as one seed ``TraceEvent`` JSON line."""

    name = "trace_file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for raw in spans:
            span = span_from_sdk(raw)
            if "hrm.layer" in span.attributes:
                event = TraceEvent.from_line(span_line(span))
                lines.append(json.dumps(event.to_dict(), ensure_ascii=False, default=str))
        if not lines:
            return SpanExportResult.SUCCESS
        try:
            with self._lock:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with open(self._path, "a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
        except OSError as exc:
            _log.error("trace output %s cannot be written: %s; %d lines lost", self._path, exc, len(lines))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
