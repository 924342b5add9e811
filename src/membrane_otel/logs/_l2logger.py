"""``setup_l2_logger``: the seed's two-line conversion, on OTel log records.

    logger = setup_l2_logger("resurrect_all_citizens", "orchestration/scripts/resurrect_all_citizens.py")
    logger.error("Bootstrap failed for %s", cid)   # console + OTel log record (+ envelope)

The returned logger is a plain ``logging.Logger``: every level goes to the console as
before; records at or above ``l2_level`` also become OTel log records inside the active
span, carrying the stack fingerprint, dedupe key, node id and the rest of ``seeds/000``.
It does not propagate to the root logger, so the root's OTel handler (installed by
``opentelemetry-instrument``) never emits the same record a second time.

What the application thread pays, and what it does not: it captures the frames of the
traceback as ``(file, line, function)`` tuples (a ``tb_next`` walk, a few µs), computes the
fingerprint and dedupe key from them, redacts the message, takes the current OTel context
and appends all that to a bounded queue. Rendering the traceback text (the ~120 µs most of
a plain ``logger.exception`` costs), redacting it and building the OTel record happen on a
background thread. That queue is ours rather than the SDK's because the seed promises the
caller "builds, enqueues, returns immediately" — the SDK's processors run inside
``Logger.emit`` on the caller's thread. Like the SDK's, it is bounded, drops the oldest
when full and counts it (``dropped_logs``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry._logs import LogRecord, get_logger
from opentelemetry.instrumentation.log_utils import std_to_otel

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.tables import BODY_MAX_BYTES, truncate
from membrane_otel._internal.worker import Worker
from membrane_otel.logs._coalesce import Coalescer, RenderCache
from membrane_otel.logs._errors import (
    CapturedException,
    capture_exception,
    dedupe_key,
    node_id,
    slug,
    stack_fingerprint,
    truncate_stack,
)
from membrane_otel.logs._processors import REDACTED_UPSTREAM
from membrane_otel.logs._redact import configured_redactor

BODY_LIMIT = BODY_MAX_BYTES
_diag = RateLimitedLogger(logging.getLogger("membrane_otel.logs._l2logger"))


# OTel's severity text by the level's floor (a custom level 35 is a WARN).
_SEVERITY_TEXT = (
    (logging.CRITICAL, "FATAL"),
    (logging.ERROR, "ERROR"),
    (logging.WARNING, "WARN"),
    (logging.INFO, "INFO"),
)


def _severity_text(levelno: int) -> str:
    return next((text for floor, text in _SEVERITY_TEXT if levelno >= floor), "DEBUG")


@dataclass(slots=True)
class _Pending:
    """Everything captured on the application thread; rendered later."""

    time_ns: int
    levelno: int
    message: str
    logger_name: str
    attributes: dict[str, Any]
    key: str  # fingerprint + dedupe key: what makes two errors the same one
    exception: CapturedException | None
    context: otel_context.Context
    stack: str | None = None  # already rendered on the caller's thread (for the console)
    last_ns: int = 0
    occurrences: int = 1


class _Renderer:
    """The background half: render stacks, build OTel records, emit them.

    A :class:`~membrane_otel._internal.worker.Worker` with twins coalesced before they
    are queued (``logs/_coalesce.py``): a storm of one error is rendered a few times a
    second, not once per error.
    """

    def __init__(self, queue_size: int, interval_s: float = 0.1) -> None:
        self._coalescer = Coalescer()
        self._worker: Worker[_Pending] = Worker(
            "l2",
            self._render,
            max_queue=queue_size,
            batch_size=256,
            wake_at=64,
            interval_s=interval_s,
            on_drop=self._dropped,
        )

    def put(self, item: _Pending) -> None:
        counters.incr("l2_errors")
        if not self._coalescer.absorb(item):
            self._worker.put(item)

    def _dropped(self, item: _Pending) -> None:
        # The queue's own count is the first of them; twins counted on it are dropped too.
        self._coalescer.close(item)
        if item.occurrences > 1:
            counters.incr("dropped_logs", item.occurrences - 1)
            counters.incr("dropped.l2", item.occurrences - 1)

    def _render(self, batch: list[_Pending], deadline: float | None) -> bool:
        self._coalescer.close_all(batch)  # from here on, twins start a new line
        for item in batch:
            try:
                _emit(item)
            except Exception as exc:  # never let one bad record stop the worker
                counters.incr("rejected", item.occurrences)
                _diag.error("l2 logger could not emit a record: %r", exc)
        return True

    def flush(self, timeout_millis: float) -> bool:
        return self._worker.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float) -> bool:
        return self._worker.shutdown(timeout_millis)


def _emit(item: _Pending) -> None:
    attrs = item.attributes
    if item.exception is not None:
        # The same text traceback.format_exception would print, rendered here, off-thread,
        # unless the console already needed it on the caller's thread.
        stack = item.stack if item.stack is not None else item.exception.render()
        attrs["exception.stacktrace"] = truncate_stack(configured_redactor()(stack))
    if item.occurrences > 1:
        attrs["membrane.occurrences"] = item.occurrences
        attrs["membrane.first_ts_ns"] = item.time_ns
        attrs["membrane.last_ts_ns"] = item.last_ns
    # Message, exception text and stack were redacted with the configured rules (here and on
    # the caller's thread); the logs processor need not do it a second time.
    token = REDACTED_UPSTREAM.set(True)
    try:
        get_logger(item.logger_name).emit(
            LogRecord(
                timestamp=item.time_ns,
                observed_timestamp=time.time_ns(),
                context=item.context,
                severity_number=std_to_otel(item.levelno),
                severity_text=_severity_text(item.levelno),
                body=item.message,
                attributes=attrs,
            )
        )
    finally:
        REDACTED_UPSTREAM.reset(token)


_renders = RenderCache()
_renderer: _Renderer | None = None
_renderer_lock = threading.Lock()


def _get_renderer() -> _Renderer:
    global _renderer
    if _renderer is None:
        with _renderer_lock:
            if _renderer is None:
                from membrane_otel.settings import get_settings

                _renderer = _Renderer(get_settings().queue_size)
    return _renderer


def flush(timeout_millis: float = 30000) -> bool:
    """Wait until every captured record has been handed to the OTel pipeline."""
    return _renderer.flush(timeout_millis) if _renderer is not None else True


def shutdown(timeout_millis: float = 30000) -> bool:
    """Hand what is captured to the OTel pipeline within the deadline, then stop the renderer."""
    return _renderer.shutdown(timeout_millis) if _renderer is not None else True


class L2Handler(logging.Handler):
    """Turns records at or above ``l2_level`` into OTel log records with seeds/000 attributes."""

    def __init__(self, script_name: str, script_path: str, l2_level: int = logging.ERROR) -> None:
        super().__init__(l2_level)
        from membrane_otel.settings import get_settings

        self.script_name = script_name
        self.script_path = script_path
        # Set when a console handler follows this one on the same logger (setup_l2_logger).
        self.share_render = False
        self._static: dict[str, Any] = {
            "membrane.l2": True,
            "membrane.signal_type": "script_error",
            "membrane.script_name": script_name,
            "membrane.script_path": script_path,
            "membrane.node_id": node_id(script_path),
            "membrane.source": f"script:{script_name}",
            "membrane.scope": get_settings().scope,
            "membrane.channel": f"signals.script.{slug(script_name)}",
            "code.file.path": script_path,
        }

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._capture(record)
        except Exception:  # logging must never break the caller
            counters.incr("rejected")
            self.handleError(record)

    def _capture(self, record: logging.LogRecord) -> None:
        redact = configured_redactor()
        message = redact(record.getMessage())
        message = truncate(message, BODY_LIMIT)
        attrs = dict(self._static)
        captured: CapturedException | None = None
        stack: str | None = None
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            # Plain data only (no frames, no locals): a few µs; rendering happens later.
            captured = capture_exception(exc)
            if self.share_render and record.exc_text is None:
                # The console handler after us would render this traceback now anyway: render
                # it once (or take the text of the same error rendered before) for both.
                stack = _renders.text(captured, captured.render)
                record.exc_text = stack[:-1] if stack.endswith("\n") else stack
            error_type = captured.type_name
            attrs["exception.type"] = error_type
            attrs["exception.message"] = redact(captured.message)
            attrs["membrane.fingerprint"] = captured.fingerprint
        else:
            error_type = record.levelname.title()
            # No traceback: the fingerprint comes from where the error was logged.
            attrs["membrane.fingerprint"] = stack_fingerprint()
        fingerprint = attrs["membrane.fingerprint"]
        key = dedupe_key(self.script_name, error_type, message, fingerprint)
        attrs["membrane.dedupe_key"] = key
        attrs["code.function"] = record.funcName
        attrs["code.lineno"] = record.lineno
        attrs["code.namespace"] = record.module
        time_ns = int(record.created * 1e9)
        _get_renderer().put(
            _Pending(
                time_ns=time_ns,
                last_ns=time_ns,
                levelno=record.levelno,
                message=message,
                logger_name=record.name,
                attributes=attrs,
                key=f"{fingerprint}:{key}:{record.levelno}:{message}",
                exception=captured,
                context=otel_context.get_current(),
                stack=stack,
            )
        )


_CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_l2_logger(
    script_name: str,
    script_path: str,
    l2_level: int | None = None,
    *,
    level: int = logging.INFO,
    console: bool = True,
) -> logging.Logger:
    """A logger whose records ≥ ``l2_level`` also become OTel log records (and envelopes).

    ``l2_level`` None means ``MEMBRANE_L2_LEVEL`` (default ERROR); an argument wins over it.

    Console output for every level at or above ``level`` is kept, as ``basicConfig`` gave.
    Calling it again for the same script returns the same logger, re-configured, never
    with doubled handlers.
    """
    from membrane_otel._setup import ensure_configured

    # The seed's promise is a two-line change: without opentelemetry-instrument, set up here.
    ensure_configured()
    logger = logging.getLogger(script_name)
    logger.setLevel(level)
    # The root logger's OTel handler (opentelemetry-instrument) must not see these records:
    # our handler emits them, once.
    logger.propagate = False
    for handler in list(logger.handlers):
        if getattr(handler, "_membrane_l2", False):
            logger.removeHandler(handler)
    if l2_level is None:
        from membrane_otel.settings import get_settings

        l2_level = get_settings().l2_level
    # The L2 handler goes first: it renders a traceback once for itself and the console.
    l2 = L2Handler(script_name, script_path, l2_level)
    l2._membrane_l2 = True  # type: ignore[attr-defined]
    l2.share_render = console
    logger.addHandler(l2)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        # Redacted like every other exit: the console prints exception messages and tracebacks.
        from membrane_otel.logs._redact_format import RedactingFormatter

        stream.setFormatter(RedactingFormatter(_CONSOLE_FORMAT))
        stream._membrane_l2 = True  # type: ignore[attr-defined]
        logger.addHandler(stream)
    return logger
