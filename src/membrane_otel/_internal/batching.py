"""The batch processors behind our exporters.

Why not the SDK's ``BatchLogRecordProcessor`` as is: the seeds promise things it does not
expose through public API — a ``dropped_logs`` counter that increments when the oldest
record is dropped from a full queue, the live queue depth and export latency that the
watchdog reads, and an accounting of every record (produced = exported + dropped + …).
So this keeps the SDK's shape (bounded deque, daemon worker woken by an Event, flush
every ``schedule_delay`` or ``batch_size`` records, instrumentation suppressed while
exporting, restart after fork) and adds the counters. It is handed to the SDK through
the configurator's public ``export_*_processor`` seam, so everything else stays stock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import orjson
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from membrane_otel._internal.disk_buffer import DiskBuffer
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.tables import SEV_ERROR
from membrane_otel._internal.worker import Overflow, Worker, clamp_ms, remaining_ms
from membrane_otel.translate._records import LogData, log_from_sdk, readable_copy

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
_log = RateLimitedLogger(logging.getLogger("membrane_otel.batching"))


class _Export(Protocol[T_contra]):  # the part of SpanExporter / LogRecordExporter we call
    def export(self, batch: Sequence[T_contra], /) -> Any: ...
    def shutdown(self) -> None: ...


class _Batcher(Generic[T]):
    """An exporter behind the one worker shape (``_internal/worker.py``)."""

    def __init__(
        self,
        export: _Export[T],
        name: str,
        *,
        max_queue_size: int,
        schedule_delay_millis: float,
        max_export_batch_size: int,
        drop_counter: str,
        overflow: Overflow[T] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exporter = export
        self._name = name
        self._clock = clock
        self._worker: Worker[T] = Worker(
            name,
            self._export,
            max_queue=max_queue_size,
            batch_size=max_export_batch_size,
            interval_s=schedule_delay_millis / 1000,
            drop_counter=drop_counter,
            overflow=overflow,
            # What a stuck exporter still holds at shutdown: its own safe place (the membrane
            # exporter spools it), else counted as dropped.
            abandon=getattr(export, "abandon", None),
            # The batch the exporter is stuck on stays with it: its own timeouts end the wait
            # and it spools what it could not send; handing it over too would count it twice.
            abandon_inflight=False,
            clock=clock,
        )

    def _export(self, batch: list[T], deadline: float | None) -> bool:
        self._exporter.export(batch)  # the exporters count their own failures
        return True

    def emit(self, item: T) -> None:
        """Enqueue; never blocks beyond a deque append. A full queue drops its oldest."""
        self._worker.put(item)

    def depth(self) -> int:
        return self._worker.depth

    @property
    def last_export_seconds(self) -> float:
        return self._worker.last_export_seconds

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        timeout_millis = clamp_ms(timeout_millis)
        deadline = self._clock() + timeout_millis / 1000
        drained = self._worker.force_flush(timeout_millis)
        # Then the exporter's own buffers, within what is left of the same deadline.
        flush = getattr(self._exporter, "force_flush", None)
        if callable(flush):
            try:
                drained = bool(flush(timeout_millis=remaining_ms(deadline, self._clock))) and drained
            except Exception as exc:
                _log.error("exporter %s failed to flush: %r", self._name, exc)
                return False
        return drained

    def shutdown(self, timeout_millis: float = 30000) -> None:
        if self._worker.stopped:
            return
        timeout_millis = clamp_ms(timeout_millis)
        deadline = self._clock() + timeout_millis / 1000
        self._worker.shutdown(timeout_millis)
        try:
            shutdown = self._exporter.shutdown
            try:
                shutdown(timeout_millis=remaining_ms(deadline, self._clock))  # type: ignore[call-arg]
            except TypeError:
                shutdown()
        except Exception as exc:
            _log.error("exporter %s failed to shut down: %r", self._name, exc)


def _batcher_for(
    exporter: Any,
    signal: str,
    drop_counter: str,
    max_queue_size: int | None,
    schedule_delay_millis: float | None,
    max_export_batch_size: int | None,
    *,
    min_queue: int = 1,
    min_batch: int = 1,
    overflow: Overflow[Any] | None = None,
) -> _Batcher[Any]:
    """A batcher named after its exporter, sized by the arguments or else the settings."""
    from membrane_otel.settings import get_settings

    s = get_settings()
    return _Batcher(
        exporter,
        f"{signal}.{getattr(exporter, 'name', type(exporter).__name__)}",
        max_queue_size=max_queue_size or max(s.queue_size, min_queue),
        schedule_delay_millis=schedule_delay_millis or s.flush_interval_ms,
        max_export_batch_size=max_export_batch_size or max(s.batch_size, min_batch),
        drop_counter=drop_counter,
        overflow=overflow,
    )


def _must_keep(record: ReadableLogRecord | LogData) -> bool:
    """Ledger events and errors are never sampled: a full queue sends them to disk."""
    if isinstance(record, LogData):
        return True
    lr = record.log_record
    return lr.event_name is not None or (
        lr.severity_number is not None and lr.severity_number.value >= SEV_ERROR
    )


def _encode(record: ReadableLogRecord | LogData) -> bytes:
    data = record if isinstance(record, LogData) else log_from_sdk(record)
    fields = {name: getattr(data, name) for name in LogData.__slots__}
    return orjson.dumps(fields, default=str, option=orjson.OPT_NON_STR_KEYS)


def _decode(line: bytes) -> LogData:
    return LogData(**orjson.loads(line))


def _overflow_for(exporter: Any, name: str) -> DiskBuffer[Any] | None:
    """The disk half of the ledger's memory-then-disk buffer (``_internal/disk_buffer.py``)."""
    if not getattr(exporter, "overflow_to_disk", False):
        return None
    from membrane_otel.settings import get_settings

    s = get_settings()
    buffer: DiskBuffer[Any] = DiskBuffer(
        Path(s.spool_dir) / "overflow",
        name,
        max_bytes=s.spool_max_bytes,
        encode=_encode,
        decode=_decode,
        accepts=_must_keep,
    )
    buffer.adopt_orphans()  # what a crashed run of this program left behind
    return buffer


class BatchLogProcessor(LogRecordProcessor):
    """``BatchLogRecordProcessor`` with the seeds' counters (see module doc).

    For an exporter that asks for it (the ledger's ``overflow_to_disk``), ledger events and
    errors that a full queue cannot hold go to a disk buffer drained in order, not dropped.
    """

    def __init__(
        self,
        exporter: LogRecordExporter,
        *,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        name = f"logs.{getattr(exporter, 'name', type(exporter).__name__)}"
        self._batcher: _Batcher[ReadableLogRecord] = _batcher_for(
            exporter,
            "logs",
            "dropped_logs",
            max_queue_size,
            schedule_delay_millis,
            max_export_batch_size,
            overflow=_overflow_for(exporter, name),
        )
        accepts = getattr(exporter, "accepts", None)
        self._accepts: Callable[[ReadWriteLogRecord], bool] | None = accepts if callable(accepts) else None

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._accepts is not None and not self._accepts(log_record):
            return  # a record this exporter would discard must not take a place in its queue
        self._batcher.emit(readable_copy(log_record))

    def shutdown(self, timeout_millis: float = 30000) -> None:
        self._batcher.shutdown(timeout_millis)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batcher.force_flush(timeout_millis)


class BatchSpanProcessorWithCounts(SpanProcessor):
    """``BatchSpanProcessor`` with the same counters as :class:`BatchLogProcessor`."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        # Spans come in bursts (a request's whole tree at once): room for more than logs.
        self._batcher: _Batcher[ReadableSpan] = _batcher_for(
            exporter,
            "spans",
            "dropped_spans",
            max_queue_size,
            schedule_delay_millis,
            max_export_batch_size,
            min_queue=2048,
            min_batch=64,
        )

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and not span.context.trace_flags.sampled:
            return
        self._batcher.emit(span)

    def shutdown(self, timeout_millis: float = 30000) -> None:
        self._batcher.shutdown(timeout_millis)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batcher.force_flush(timeout_millis)
