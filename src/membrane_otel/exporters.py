"""In-process exporters, registered as OTel exporter entry points.

``OTEL_TRACES_EXPORTER=otlp,ledger`` / ``OTEL_LOGS_EXPORTER=ledger,membrane`` select them
like any other exporter. Each converts the SDK's records with the adapter in
:mod:`membrane_otel.translate._records` and runs the one translation in :mod:`membrane_otel.translate._core`.
They run on the batch processor's thread, never the application's.

What they need only to export (the translation and its envelope models, the bus client) is
imported on first use, on that thread: ``opentelemetry-instrument python app.py`` loads these
classes before the application's first line, and a user pays that start-up on every run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from membrane_otel._internal import counters
from membrane_otel._internal.atshutdown import export_imports
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.tables import STIMULUS_EVENT
from membrane_otel.ledger._writer import ledger_for
from membrane_otel.settings import get_settings
from membrane_otel.spans._console_tree import ConsoleTreeSpanExporter
from membrane_otel.translate._records import LogData, log_from_sdk, span_from_sdk

if TYPE_CHECKING:
    from membrane_otel.membrane._publish import MembranePublisher

__all__ = ["ConsoleTreeSpanExporter", "LedgerLogExporter", "LedgerSpanExporter", "MembraneLogExporter"]

_log = RateLimitedLogger(logging.getLogger("membrane_otel.exporters"))


class LedgerSpanExporter(SpanExporter):
    """Spans → ledger lines (HRM spans keep the seed's ``TraceEvent`` fields)."""

    name = "ledger"

    def __init__(self, path: str | Path | None = None) -> None:
        s = get_settings()
        self._ledger = ledger_for(path or s.ledger_path, max_bytes=s.ledger_max_bytes)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            with export_imports():
                from membrane_otel.translate._core import span_line

            lines = [span_line(span_from_sdk(s)) for s in spans]
            self._ledger.append_many(lines)
        except Exception as exc:
            counters.incr("export_failed", len(spans))
            _log.error("ledger span export to %s failed: %r", self._ledger.path, exc)
            return SpanExportResult.FAILURE
        counters.incr("exported_spans", len(spans))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class LedgerLogExporter(LogRecordExporter):
    """Log records (errors, ledger events, narratives, stimuli) → ledger lines.

    The ledger is not allowed to sample: its batch processor sends the events and errors a
    full queue cannot hold to a disk buffer, and hands them back here as neutral records.
    """

    name = "ledger"
    overflow_to_disk = True

    def __init__(self, path: str | Path | None = None) -> None:
        s = get_settings()
        self._ledger = ledger_for(path or s.ledger_path, max_bytes=s.ledger_max_bytes)

    def export(self, batch: Sequence[ReadableLogRecord | LogData]) -> LogRecordExportResult:
        try:
            with export_imports():
                from membrane_otel.translate._core import log_line

            lines = [log_line(r) for r in _neutral(batch)]
            self._ledger.append_many(lines)
        except Exception as exc:
            counters.incr("export_failed", len(batch))
            _log.error("ledger log export to %s failed: %r", self._ledger.path, exc)
            return LogRecordExportResult.FAILURE
        counters.incr("exported", len(batch))
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class MembraneLogExporter(LogRecordExporter):
    """Error and stimulus records → ``membrane.inject`` envelopes → bus (or spool).

    It runs on its batch processor's thread and sends from there (``BusClient.deliver``):
    one queue between the application and the bus, not two. Errors and stimuli are not
    sampled here either: what a full queue cannot hold goes to the same kind of disk buffer
    as the ledger's and comes back as neutral records, in order (the throttle then decides).
    """

    name = "membrane"
    overflow_to_disk = True

    def __init__(self) -> None:
        settings = get_settings()
        self._l2 = std_to_otel(settings.l2_level).value
        self._built: MembranePublisher | None = None
        # The bus client starts on the first export, unless an earlier run left envelopes
        # in the spool: those are replayed now, as they always were.
        if _has_entries(settings.spool_dir):
            self._publisher()

    def _publisher(self) -> MembranePublisher:
        if self._built is None:
            with export_imports():
                from membrane_otel.membrane._publish import get_publisher

            self._built = get_publisher()
        return self._built

    def accepts(self, record: ReadWriteLogRecord) -> bool:
        """Whether a record could become an envelope, judged cheaply before it is queued:
        ledger events never do, so they must not take (or be dropped from) this queue."""
        lr = record.log_record
        if lr.event_name is not None:
            return lr.event_name == STIMULUS_EVENT
        attrs = lr.attributes
        if attrs is not None and attrs.get("membrane.l2") is True:
            return True
        return lr.severity_number is not None and lr.severity_number.value >= self._l2

    def export(self, batch: Sequence[ReadableLogRecord | LogData]) -> LogRecordExportResult:
        try:
            self._publisher().submit_logs(_neutral(batch), direct=True)
        except Exception as exc:
            counters.incr("export_failed", len(batch))
            _log.error("membrane export failed: %r", exc)
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def abandon(self, batch: Sequence[ReadableLogRecord | LogData]) -> None:
        """Records a shutdown could not wait for: to the disk spool, replayed on the next run."""
        self._publisher().submit_logs(_neutral(batch), direct=True, spool_only=True)

    def shutdown(self, timeout_millis: float = 30000) -> None:
        if self._built is not None:
            self._built.shutdown(timeout_millis)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._built.force_flush(timeout_millis) if self._built is not None else True


def _neutral(batch: Sequence[ReadableLogRecord | LogData]) -> list[LogData]:
    """SDK records and records back from the disk buffer, alike."""
    return [r if isinstance(r, LogData) else log_from_sdk(r) for r in batch]


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as it:
            return any(True for _ in it)
    except OSError:
        return False
