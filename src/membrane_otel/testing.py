"""In-memory capture of what the pipeline produces, for tests of code that uses membrane-otel.

    from membrane_otel.testing import capture

    with capture() as got:
        run_my_agent()
    got.flush()
    assert got.ledger_lines(event="script_error")
    assert got.envelopes[0]["severity"] == "error"

The capture sees records after redaction and translates them with the same code as the
exporters, synchronously, so tests need no polling of files or sockets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from membrane_otel.translate._core import log_envelope, log_line, otel_severity, span_line, wants_envelope
from membrane_otel.translate._records import LogData, SpanData, log_from_sdk, readable_copy, span_from_sdk

__all__ = ["Captured", "capture"]


@dataclass
class Captured:
    """What was produced while the capture was active."""

    spans: list[SpanData] = field(default_factory=list)
    logs: list[LogData] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def flush(self, timeout_millis: int = 10_000) -> None:
        """Wait for records still on their way (``setup_l2_logger`` renders off-thread)."""
        from membrane_otel._setup import _flush_l2

        _flush_l2(timeout_millis)

    def ledger_lines(self, event: str | None = None) -> list[dict[str, Any]]:
        """Ledger lines (without the chain fields), optionally of one event type."""
        with self._lock:
            lines = [span_line(s) for s in self.spans] + [log_line(r) for r in self.logs]
        lines.sort(key=lambda ln: ln["ts_unix"])
        return [ln for ln in lines if event is None or ln["event"] == event]

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        """The envelopes these records become (before throttling)."""
        from membrane_otel.settings import get_settings

        settings = get_settings()
        l2 = otel_severity(settings.l2_level)
        with self._lock:
            logs = list(self.logs)
        return [
            log_envelope(r, default_scope=settings.scope).to_json_dict(
                legacy=settings.envelope_format == "legacy"
            )
            for r in logs
            if wants_envelope(r, l2)
        ]


_active: list[Captured] = []
_installed = False
_install_lock = threading.Lock()


class _SpanTap(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if _active:
            data = span_from_sdk(span)
            for cap in list(_active):
                with cap._lock:
                    cap.spans.append(data)


class _LogTap(LogRecordProcessor):
    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if _active:
            data = log_from_sdk(readable_copy(log_record))
            for cap in list(_active):
                with cap._lock:
                    cap.logs.append(data)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        from opentelemetry import trace
        from opentelemetry._logs import get_logger_provider

        from membrane_otel._setup import ensure_configured

        ensure_configured()
        tp, lp = trace.get_tracer_provider(), get_logger_provider()
        if hasattr(tp, "add_span_processor"):
            tp.add_span_processor(_SpanTap())
        if hasattr(lp, "add_log_record_processor"):
            lp.add_log_record_processor(_LogTap())
        _installed = True


@contextmanager
def capture() -> Iterator[Captured]:
    """Capture spans and log records produced inside the ``with`` block."""
    _install()
    cap = Captured()
    # Records logged before the block and still on their way (setup_l2_logger renders
    # off-thread) arrive first, so that they are not taken for this block's.
    cap.flush()
    _active.append(cap)
    try:
        yield cap
    finally:
        cap.flush()
        _active.remove(cap)
