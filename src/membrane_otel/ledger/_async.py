"""``AGI_EVENT_ASYNC`` (``seeds/001``) for events written without an OTel pipeline."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Sequence
from typing import Any

from membrane_otel._internal.batching import _Batcher
from membrane_otel.ledger._writer import Ledger


def async_appender(ledger: Ledger, settings: Any) -> Any:
    """``AGI_EVENT_ASYNC`` on the direct path: the house batcher, flushing every
    ``AGI_EVENT_FLUSH_INTERVAL`` s or ``AGI_EVENT_BUFFER_SIZE`` lines, and at exit.

    (Through the OTel pipeline events are always buffered, by the batch log processor.)
    """

    class _LedgerSink:
        name = "events"

        def export(self, batch: Sequence[dict[str, Any]], /) -> None:
            ledger.append_many(batch)

        def shutdown(self) -> None:
            return None

    batcher: _Batcher[dict[str, Any]] = _Batcher(
        _LedgerSink(),
        "events.direct",
        max_queue_size=max(settings.queue_size, settings.event_buffer_size * 10),
        schedule_delay_millis=settings.event_flush_interval_s * 1000,
        max_export_batch_size=settings.event_buffer_size,
        drop_counter="dropped_logs",
    )
    atexit.register(batcher.shutdown)
    return batcher


def direct_writer(ledger: Ledger) -> Callable[[dict[str, Any]], Any]:
    """How an event without a pipeline is written: at once, or buffered (``AGI_EVENT_ASYNC``)."""
    from membrane_otel.settings import get_settings

    settings = get_settings()
    return async_appender(ledger, settings).emit if settings.event_async else ledger.append
