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

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.translate._records import readable_copy

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)
_log = RateLimitedLogger(logging.getLogger("membrane_otel.batching"))


class _Export(Protocol[T_contra]):  # the part of SpanExporter / LogRecordExporter we call
    def export(self, batch: Sequence[T_contra], /) -> Any: ...
    def shutdown(self) -> None: ...


class _Batcher(Generic[T]):
    def __init__(
        self,
        export: _Export[T],
        name: str,
        *,
        max_queue_size: int,
        schedule_delay_millis: float,
        max_export_batch_size: int,
        drop_counter: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._exporter = export
        self._drop_counter = drop_counter
        self._name = name
        self._max_queue_size = max_queue_size
        self._delay = schedule_delay_millis / 1000
        self._batch_size = max_export_batch_size
        self._clock = clock
        self._queue: collections.deque[T] = collections.deque()
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        self._shutdown = False
        self.last_export_seconds = 0.0
        counters.register_gauge(f"queue_depth.{name}", lambda: len(self._queue))
        # For the watchdog: the latest export's duration, and whether the worker still runs.
        counters.register_gauge(f"export_latency_ms.{name}", lambda: int(self.last_export_seconds * 1000))
        counters.register_gauge(f"worker_alive.{name}", lambda: int(self._thread.is_alive()))
        self._start()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork)

            def _child() -> None:
                if (fn := ref()) is not None:
                    fn()

            os.register_at_fork(after_in_child=_child)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._worker, name=f"membrane-{self._name}", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The parent's queued records belong to the parent; the child starts empty.
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        self._queue.clear()
        self._start()

    def emit(self, item: T) -> None:
        """Enqueue; never blocks beyond a deque append. A full queue drops its oldest."""
        if self._shutdown:
            counters.incr("rejected_after_shutdown")
            return
        with self._lock:
            if len(self._queue) >= self._max_queue_size:
                self._queue.popleft()
                counters.incr(self._drop_counter)
                counters.incr(f"dropped.{self._name}")
            self._queue.append(item)
            full = len(self._queue) >= self._batch_size
        if full:
            self._wake.set()

    def depth(self) -> int:
        return len(self._queue)

    def _worker(self) -> None:
        while not self._shutdown:
            self._wake.wait(self._delay)
            self._wake.clear()
            if self._shutdown:
                break
            self._drain(all_=False)
        self._drain(all_=True)

    def _take(self) -> list[T]:
        with self._lock:
            n = min(self._batch_size, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _drain(self, *, all_: bool, deadline: float | None = None) -> bool:
        with self._export_lock:
            first = True
            while self._queue and (all_ or first or len(self._queue) >= self._batch_size):
                if deadline is not None and self._clock() > deadline:
                    return False
                first = False
                batch = self._take()
                if not batch:
                    break
                started = self._clock()
                try:
                    with suppress_instrumentation():
                        self._exporter.export(batch)
                except Exception as exc:  # an exporter bug must not kill the worker
                    counters.incr(f"export_errors.{self._name}", len(batch))
                    _log.error("exporter %s raised %r; %d records lost", self._name, exc, len(batch))
                finally:
                    self.last_export_seconds = self._clock() - started
            return not self._queue

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        if self._shutdown:
            return False
        deadline = self._clock() + timeout_millis / 1000
        drained = self._drain(all_=True, deadline=deadline)
        # Then the exporter's own buffers (the membrane exporter queues on its bus client),
        # within what is left of the same deadline.
        flush = getattr(self._exporter, "force_flush", None)
        if callable(flush):
            try:
                left_ms = max(0.0, (deadline - self._clock()) * 1000)
                drained = bool(flush(timeout_millis=left_ms)) and drained
            except Exception as exc:
                _log.error("exporter %s failed to flush: %r", self._name, exc)
                return False
        return drained

    def shutdown(self, timeout_millis: float = 30000) -> None:
        if self._shutdown:
            return
        deadline = self._clock() + timeout_millis / 1000
        self._shutdown = True
        self._wake.set()
        if self._pid == os.getpid():
            self._thread.join(max(0.0, deadline - self._clock()))
        try:
            shutdown = self._exporter.shutdown
            try:
                shutdown(timeout_millis=max(0.0, (deadline - self._clock()) * 1000))  # type: ignore[call-arg]
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
    )


class BatchLogProcessor(LogRecordProcessor):
    """``BatchLogRecordProcessor`` with the seeds' counters (see module doc)."""

    def __init__(
        self,
        exporter: LogRecordExporter,
        *,
        max_queue_size: int | None = None,
        schedule_delay_millis: float | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        self._batcher: _Batcher[ReadableLogRecord] = _batcher_for(
            exporter, "logs", "dropped_logs", max_queue_size, schedule_delay_millis, max_export_batch_size
        )

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._batcher.emit(readable_copy(log_record))

    def shutdown(self) -> None:
        self._batcher.shutdown()

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

    def shutdown(self) -> None:
        self._batcher.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batcher.force_flush(timeout_millis)
