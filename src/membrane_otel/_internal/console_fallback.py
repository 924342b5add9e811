"""Keep the application's console output once an OTel handler sits on the root logger.

Python prints WARNING+ records through ``logging.lastResort`` only when a record finds
no handler at all. The OTel logging handler on the root logger counts as one, so an app
that never configured logging would go silent on the console.

We replace nothing in :mod:`logging`: a small filter of ours rides on the OTel handler
(``Handler.addFilter``, public API). For each WARNING+ record it looks at the handlers the
record would reach — the loggers from the record's own up to the root, as ``callHandlers``
walks them — and hands the record to ``logging.lastResort`` only when none of them is the
application's. So the console output is exactly Python's own until the application
configures logging (``basicConfig``, ``dictConfig``, ``fileConfig``, a handler added by
hand), and from then on the filter steps aside by itself: no doubled lines. The filter adds
no handler to the root logger, so ``basicConfig`` still sees an unconfigured root (the OTel
instrumentation steps its own handler aside around it) and takes effect.
"""

from __future__ import annotations

import logging

__all__ = ["ConsoleWhenAlone", "keep_console_output"]


def _is_otel(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("opentelemetry")


def _app_handles(name: str) -> bool:
    """Whether a record of logger ``name`` reaches a handler that is not OTel's."""
    logger: logging.Logger | None = logging.root.manager.loggerDict.get(name)  # type: ignore[assignment]
    if not isinstance(logger, logging.Logger):
        logger = logging.root
    current: logging.Logger | None = logger
    while current is not None:
        if any(not _is_otel(h) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class ConsoleWhenAlone(logging.Filter):
    """On the OTel handler: ``lastResort``'s output while the app has no handler of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        last = logging.lastResort
        if last is not None and record.levelno >= last.level and not _app_handles(record.name):
            # lastResort prints message and traceback: it gets a redacted copy of the record.
            from membrane_otel.logs._redact_format import redacted_record

            last.handle(redacted_record(record))
        return True  # never keeps the record from the OTel handler


def keep_console_output() -> None:
    """Put the filter on every OTel handler of the root logger (once each). Idempotent."""
    for handler in logging.getLogger().handlers:
        if _is_otel(handler) and not any(isinstance(f, ConsoleWhenAlone) for f in handler.filters):
            handler.addFilter(ConsoleWhenAlone())
