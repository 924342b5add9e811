"""Ledger events: ``emit_event`` and the seed's wrappers, as OTel log records with ``event_name``.

An event is an OTel log record whose ``event_name`` is the event type (``task_started``)
and whose attributes are the payload plus the ids ``task_id`` / ``persona_id`` /
``session_id``; the ledger exporter turns it into the flat line
``{"event": "task_started", "ts": …, "ts_unix": …, "task_id": …, "goal": …, …}``.
(The separate Events API is gone from recent SDKs; a log record with ``event_name`` is
what replaced it.)

When no OTel logs pipeline would take the record (nothing configured: no ``configure()``,
no ``opentelemetry-instrument``; or after ``shutdown()``), the event is appended to the
ledger directly, in the very same line shape (buffered with ``AGI_EVENT_ASYNC``). The ledger
is the application's own record, so it is written either way; we do not set up the whole
OTel pipeline behind the caller's back just to write one line. ``OTEL_SDK_DISABLED=true``
turns events off too: ``emit_event`` returns False and writes nothing.

Nothing here raises into the caller: a failure to log is counted (``emit_failed``) and
reported on the ``membrane_otel.ledger._events`` logger, rate-limited.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from opentelemetry._logs import Logger, SeverityNumber, get_logger

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.tables import OTEL_SEVERITY
from membrane_otel.ledger._writer import Ledger, ledger_for
from membrane_otel.translate._shape import event_line

__all__ = [
    "EVENT_CATEGORIES",
    "EventEmitter",
    "append_ledger",
    "emit_alert",
    "emit_event",
    "emit_monitoring_snapshot",
    "emit_system_event",
    "emit_task_lifecycle",
]

_log = logging.getLogger("membrane_otel.ledger._events")
_rate_log = RateLimitedLogger(_log)

# The seed's event types (seeds/001), by category. Names outside this set are recorded too,
# with one warning per name: a typo shows up once in the log instead of silently
# becoming a new event type in every query.
EVENT_CATEGORIES: dict[str, frozenset[str]] = {
    "core_lifecycle": frozenset(
        (
            "task_started",
            "task_completed",
            "task_failed",
            "thesis_start",
            "thesis_end",
            "antithesis_start",
            "antithesis_end",
            "synthesis_start",
            "synthesis_end",
            "eval",
            "rune",
            "replan",
        )
    ),  # fmt: skip
    "evidence_rag": frozenset(
        (
            "evidence_search",
            "evidence_added",
            "evidence_rejected",
            "evidence_correction",
            "rag_retrieval",
            "citation_added",
        )
    ),  # fmt: skip
    "self_correction": frozenset(("second_pass", "quality_check", "confidence_check")),
    "system_operations": frozenset(
        ("system_startup", "system_shutdown", "health_check", "performance_metric")
    ),
    "infrastructure": frozenset(
        ("migration", "deployment", "rollback", "configuration_change", "scale_event")
    ),
    "bqi_learning": frozenset(
        ("bqi_pattern_learned", "bqi_rule_applied", "binoche_decision", "ensemble_update")
    ),
    "monitoring_alerts": frozenset(
        ("alert_triggered", "alert_resolved", "threshold_exceeded", "anomaly_detected", "monitoring_snapshot")
    ),
    "session_management": frozenset(
        ("session_start", "session_end", "persona_activated", "persona_switched", "session_harvest_completed")
    ),
    "chatops": frozenset(("chatops_command",)),
    "testing": frozenset(("test_event",)),
    # What the rest of membrane-otel writes into the same ledger.
    "telemetry": frozenset(("log", "script_error", "span", "hrm_trace", "membrane.stimulus", "ledger_entry")),
}
KNOWN_EVENTS: frozenset[str] = frozenset().union(*EVENT_CATEGORIES.values())
# Families named by prefix: 5W1H narratives (``narrative.dispatch``), membrane records.
KNOWN_PREFIXES = ("narrative.", "membrane.")

_LIFECYCLE = {
    "start": "task_started", "started": "task_started",
    "complete": "task_completed", "completed": "task_completed", "done": "task_completed",
    "fail": "task_failed", "failed": "task_failed", "error": "task_failed",
}  # fmt: skip
_METRIC_NAME = re.compile(r"[A-Za-z][-_./A-Za-z0-9]{0,200}$")
_MAX_WARNED = 1024


def category_of(event_type: str) -> str | None:
    """The seed category of an event type, or None if it is not a known one."""
    for category, names in EVENT_CATEGORIES.items():
        if event_type in names:
            return category
    if event_type.startswith("narrative."):
        return "narrative"
    if event_type.startswith("membrane."):
        return "telemetry"
    return None


def _plain(value: Any, depth: int = 0) -> Any:
    """A payload value as OTel can carry it and JSON can write it (no logged type warnings)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth > 16:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    return str(value)


def _service_name() -> str | None:
    name = os.environ.get("OTEL_SERVICE_NAME")
    if name:
        return name
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-", "-c", "-m") else ""
    return Path(argv0).stem or None if argv0 else None


def _current_ids() -> tuple[str | None, str | None]:
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class EventEmitter:
    """Emits ledger events. One default instance backs :func:`emit_event`.

    Everything it touches can be injected: the OTel ``logger`` (default: the global
    provider's ``membrane_otel.ledger._events`` logger), the ``ledger`` written directly when that
    logger is not enabled (default: the settings' ledger path), the ``clock`` (ns), the
    ``redact`` callable applied to the whole payload (default: the configured redactor; a
    payload dict is redacted as a whole so ``{"password": "…"}`` is caught by its key).
    """

    def __init__(
        self,
        *,
        logger: Logger | None = None,
        ledger: Ledger | None = None,
        clock: Callable[[], int] = time.time_ns,
        redact: Callable[[Any], Any] | None = None,
        service: str | None = None,
    ) -> None:
        self._logger = logger or get_logger("membrane_otel.ledger._events")
        self._ledger = ledger
        self._clock = clock
        self._redact = redact
        self._service = service
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._write: Callable[[dict[str, Any]], Any] | None = None

    # -- pieces resolved on first use (settings, the redactor: not needed to emit) -------

    def _redactor(self) -> Callable[[Any], Any]:
        if self._redact is None:
            from membrane_otel.logs._redact import configured_redactor

            self._redact = configured_redactor().redact_value
        return self._redact

    def _direct_ledger(self) -> Ledger:
        if self._ledger is None:
            from membrane_otel.settings import get_settings

            s = get_settings()
            self._ledger = ledger_for(s.ledger_path, max_bytes=s.ledger_max_bytes)
        return self._ledger

    def _append_direct(self, line: dict[str, Any]) -> None:
        if self._write is None:  # the ledger's append, or AGI_EVENT_ASYNC's buffer in front of it
            from membrane_otel.ledger._async import direct_writer

            self._write = direct_writer(self._direct_ledger())
        self._write(line)

    def _check_name(self, name: str) -> None:
        if name in KNOWN_EVENTS or name.startswith(KNOWN_PREFIXES) or name in self._warned:
            return
        with self._lock:
            if name in self._warned or len(self._warned) >= _MAX_WARNED:
                return
            self._warned.add(name)
        _log.warning(
            "event type %r is not one of the known categories (membrane_otel.ledger._events.EVENT_CATEGORIES); "
            "recorded anyway",
            name,
        )

    # -- the one entry point -----------------------------------------------------------

    def emit(
        self,
        event_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: str | None = None,
        persona_id: str | None = None,
        session_id: str | None = None,
        severity: SeverityNumber = SeverityNumber.INFO,
        severity_text: str = "INFO",
    ) -> bool:
        """Emit one event; True when it was handed on (to OTel) or written (directly).

        Never raises: a failure is counted as ``emit_failed`` and logged, rate-limited.
        """
        try:
            name = str(event_type)
            self._check_name(name)
            attrs: dict[str, Any] = _plain(dict(payload)) if payload else {}
            for key, value in (("task_id", task_id), ("persona_id", persona_id), ("session_id", session_id)):
                if value is not None:
                    attrs[key] = _plain(value)
            attrs = self._redactor()(attrs)
            if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
                return False  # "turns everything off", the ledger's events included
            now = self._clock()
            logger = self._logger
            if not _pipeline_stopped and logger.enabled(severity_number=severity, event_name=name):
                logger.emit(
                    timestamp=now,
                    observed_timestamp=now,
                    severity_number=severity,
                    severity_text=severity_text,
                    event_name=name,
                    attributes=attrs,
                )
                return True
            trace_id, span_id = _current_ids()
            line = event_line(
                name,
                attrs,
                time_ns=now,
                record_id=os.urandom(12).hex(),
                service=self._service or _service_name(),
                trace_id=trace_id,
                span_id=span_id,
            )
            self._append_direct(line)
            counters.incr("ledger_direct")
            return True
        except Exception as exc:
            counters.incr("emit_failed")
            _rate_log.error("emit_event(%r) failed: %r", event_type, exc)
            return False

    # -- the seed's wrappers ---------------------------------------------------------------

    def task_lifecycle(self, stage: str, task_id: str, **fields: Any) -> bool:
        """``task_started`` / ``task_completed`` / ``task_failed`` for stage started/completed/failed."""
        name = _LIFECYCLE.get(str(stage).lower(), f"task_{stage}")
        fields.pop("task_id", None)
        persona_id, session_id = fields.pop("persona_id", None), fields.pop("session_id", None)
        return self.emit(name, fields, task_id=task_id, persona_id=persona_id, session_id=session_id)

    def alert(self, level: str, message: str, **fields: Any) -> bool:
        """``alert_triggered`` with ``level`` and ``message``; the record's severity follows the level."""
        number, text = OTEL_SEVERITY.get(str(level).lower(), OTEL_SEVERITY["warn"])
        severity = SeverityNumber(number)
        ids = {k: fields.pop(k, None) for k in ("task_id", "persona_id", "session_id")}
        payload = {"level": level, "message": message, **fields}
        return self.emit("alert_triggered", payload, severity=severity, severity_text=text, **ids)

    def system_event(self, kind: str, description: str, **fields: Any) -> bool:
        """A system operation as event ``kind``: ``system_event("migration", "D to C drive", status=…)``."""
        ids = {k: fields.pop(k, None) for k in ("task_id", "persona_id", "session_id")}
        return self.emit(kind, {"description": description, **fields}, **ids)

    def monitoring_snapshot(
        self,
        metrics: Mapping[str, Any],
        *,
        task_id: str | None = None,
        persona_id: str | None = None,
        session_id: str | None = None,
    ) -> bool:
        """A ``monitoring_snapshot`` line with the metrics as fields, and each number as a gauge."""
        try:
            ids = {"task_id": task_id, "persona_id": persona_id, "session_id": session_id}
            _record_gauges(metrics, {k: str(v) for k, v in ids.items() if v is not None})
        except Exception as exc:  # the line below must still be written
            counters.incr("emit_failed")
            _rate_log.error("monitoring gauges failed: %r", exc)
        return self.emit(
            "monitoring_snapshot", metrics, task_id=task_id, persona_id=persona_id, session_id=session_id
        )

    def append_ledger(self, record: Mapping[str, Any]) -> bool:
        """The old API: ``append_ledger({"event": "eval", "task_id": t, "quality": 0.85})``."""
        try:
            fields = dict(record)
            event = fields.pop("event", None) or "ledger_entry"
        except Exception as exc:
            counters.incr("emit_failed")
            _rate_log.error("append_ledger(%r) failed: %r", type(record).__name__, exc)
            return False
        return self.emit(str(event), fields)


_gauges: dict[str, Any] = {}
_gauges_lock = threading.Lock()


def _record_gauges(metrics: Mapping[str, Any], attributes: dict[str, str]) -> None:
    """Each numeric value as an OTel gauge data point ``monitoring.<name>`` (no-op without a meter provider)."""
    from opentelemetry import metrics as otel_metrics

    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = f"monitoring.{key}"
        if not _METRIC_NAME.match(name):
            continue
        gauge = _gauges.get(name)
        if gauge is None:
            with _gauges_lock:
                gauge = _gauges.get(name)
                if gauge is None:
                    meter = otel_metrics.get_meter("membrane_otel.ledger._events")
                    gauge = _gauges[name] = meter.create_gauge(
                        name, description=f"monitoring snapshot: {key}"
                    )
        gauge.set(value, attributes)


_pipeline_stopped = False


def pipeline_stopped() -> None:
    """``shutdown()`` calls this: later events go straight to the ledger, not a stopped pipeline."""
    global _pipeline_stopped
    _pipeline_stopped = True


_default: EventEmitter | None = None
_default_lock = threading.Lock()


def _emitter() -> EventEmitter:
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = EventEmitter()
    return _default


# --------------------------------------------------------------------------- the seed's API


def emit_event(
    event_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    task_id: str | None = None,
    persona_id: str | None = None,
    session_id: str | None = None,
) -> bool:
    """Record an event in the ledger: ``emit_event("task_started", {"goal": …}, task_id="t1")``.

    The payload's fields become the line's fields. Real time: with the default settings
    the line is on disk within 1 s (the batch processor flushes every 250 ms). Never raises.
    """
    return _emitter().emit(event_type, payload, task_id=task_id, persona_id=persona_id, session_id=session_id)


def emit_task_lifecycle(stage: str, task_id: str, **fields: Any) -> bool:
    """``emit_task_lifecycle("completed", "demo-001", quality=0.85)`` → ``task_completed``."""
    return _emitter().task_lifecycle(stage, task_id, **fields)


def emit_alert(level: str, message: str, **fields: Any) -> bool:
    """``emit_alert("warning", "Proxy port not responding", port=18091)`` → ``alert_triggered``."""
    return _emitter().alert(level, message, **fields)


def emit_system_event(kind: str, description: str, **fields: Any) -> bool:
    """``emit_system_event("migration", "D to C drive", status="completed")`` → ``migration``."""
    return _emitter().system_event(kind, description, **fields)


def emit_monitoring_snapshot(
    metrics: Mapping[str, Any],
    *,
    task_id: str | None = None,
    persona_id: str | None = None,
    session_id: str | None = None,
) -> bool:
    """``monitoring_snapshot`` line with ``metrics`` as fields; numbers also as ``monitoring.*`` gauges."""
    return _emitter().monitoring_snapshot(
        metrics, task_id=task_id, persona_id=persona_id, session_id=session_id
    )


def append_ledger(record: Mapping[str, Any]) -> bool:
    """The old API, unchanged for its callers: ``append_ledger({"event": "eval", "task_id": t, ...})``."""
    return _emitter().append_ledger(record)
