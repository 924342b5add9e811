"""The watchdog of the telemetry pipeline itself (``seeds/002``'s Layer 2 watchdog, on our pipeline).

Every ``interval_s`` (15 s by default) :class:`PipelineWatchdog` reads the pipeline's counters
(``get_metrics()``: queue depth, dropped, spooled, exported, failed, export latency) and
compares them with its thresholds. A condition that starts raises one ``alert_triggered``
event, one that ends raises ``alert_resolved``; while it holds nothing is repeated (an
escalation from warn to critical is a new ``alert_triggered``). Every check that finds a
condition counts an SLO breach for it. Events are OTel log records with ``event_name``, so
they land in the ledger like every other event.

The same figures are OTel metrics on the ``membrane_otel`` meter (observable gauges and
counters read at collection time, so they cost nothing between exports) and reach the
Collector whenever a metrics exporter is configured.

:func:`check_readiness` (whether the pipeline can deliver, per component) lives in
:mod:`membrane_otel.ops._readiness` and is re-exported here.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from membrane_otel.ops._readiness import ReadMetrics, _default_read_metrics, acheck_readiness, check_readiness
from membrane_otel.ops._readiness import (
    bus_answers as bus_answers,  # membrane-otel doctor imports it from here
)
from membrane_otel.ops._readiness import http_ok as http_ok

__all__ = [
    "Alert",
    "PipelineWatchdog",
    "acheck_readiness",
    "check_readiness",
    "pipeline_figures",
    "start_watchdog",
    "stop_watchdog",
]

_log = logging.getLogger("membrane_otel.ops._watchdog")

Severity = Literal["warn", "critical"]
Emit = Callable[[str, dict[str, Any]], None]


def _sum(m: Mapping[str, int], *names: str, prefix: str | None = None) -> int:
    total = sum(int(m.get(n, 0)) for n in names)
    if prefix is not None:
        total += sum(int(v) for k, v in m.items() if k.startswith(prefix))
    return total


def pipeline_figures(m: Mapping[str, int]) -> dict[str, float]:
    """The watchdog's figures from a ``get_metrics()`` snapshot."""
    latency_ms = [v for k, v in m.items() if k.startswith("export_latency_ms.")]
    return {
        "queue_depth": int(m.get("queue_depth", 0)),
        "dropped": _sum(m, "dropped_logs", "dropped_spans", "dropped_count"),
        "spooled": _sum(m, "spool_writes"),
        "exported": _sum(m, "exported", "exported_spans", "published"),
        "failed": _sum(m, "export_failed", prefix="export_errors."),
        "suppressed": _sum(m, "suppressed"),
        "export_latency_s": max(latency_ms, default=0) / 1000.0,
    }


def _emit_event(name: str, payload: dict[str, Any]) -> None:
    """Through :mod:`membrane_otel.ledger._events`: an OTel log record with ``event_name``, the ledger's way.

    ``alert_triggered`` goes through ``emit_alert`` so the record's severity follows the level.
    """
    from membrane_otel.ledger import _events as events

    if name == "alert_triggered":
        fields = {k: v for k, v in payload.items() if k not in ("level", "message")}
        events.emit_alert(str(payload["level"]), str(payload["message"]), **fields)
    else:
        events.emit_event(name, payload)


@dataclass
class Alert:
    """One condition that holds now."""

    name: str
    severity: Severity
    value: float
    threshold: float
    message: str
    since: float


class PipelineWatchdog:
    """Checks the pipeline every ``interval_s`` on a daemon thread; ``check_once()`` for tests."""

    def __init__(
        self,
        interval_s: float = 15.0,
        queue_warn: int = 1000,
        queue_critical: int = 5000,
        *,
        latency_warn_s: float = 1.0,
        latency_critical_s: float = 5.0,
        read_metrics: ReadMetrics | None = None,
        emit: Emit | None = None,
        clock: Callable[[], float] = time.time,
        meter_provider: MeterProvider | None = None,
        spool_waiting: Callable[[], int] | None = None,
        bus_chosen: Callable[[], bool] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"watchdog interval_s must be positive, got {interval_s}")
        if not 0 < queue_warn <= queue_critical:
            raise ValueError(f"need 0 < queue_warn <= queue_critical, got {queue_warn}, {queue_critical}")
        self.interval_s = interval_s
        self.queue_warn = queue_warn
        self.queue_critical = queue_critical
        self.latency_warn_s = latency_warn_s
        self.latency_critical_s = latency_critical_s
        self._read = read_metrics or _default_read_metrics
        self._spool_waiting = spool_waiting or _spool_waiting
        self._bus_chosen = bus_chosen or (lambda: bool(_publisher_status().get("bus_chosen", True)))
        self._emit = emit or _emit_event
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._alerts: dict[str, Alert] = {}
        self._previous: dict[str, float] | None = None
        self._figures: dict[str, float] = {}
        self._metrics: Mapping[str, int] = {}
        self._checks = 0
        self._last_check: float | None = None
        self.slo_breaches: dict[str, int] = {}
        self._instruments(meter_provider)

    # -- the loop -------------------------------------------------------------------------------

    def start(self) -> None:
        """Check now and then every ``interval_s``, on a daemon thread. Idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._wake.clear()
            self._thread = threading.Thread(target=self._run, name="membrane-watchdog", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (it finishes a check in progress). Idempotent."""
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.check_once()
            except Exception:  # the watchdog must outlive a bad reading
                _log.exception("pipeline watchdog check failed")
            self._wake.wait(self.interval_s)

    # -- one check ------------------------------------------------------------------------------

    def _conditions(
        self, f: Mapping[str, float], prev: Mapping[str, float]
    ) -> dict[str, tuple[Severity, float, float, str]]:
        """name -> (severity, value, threshold, message) for every condition that holds now."""
        out: dict[str, tuple[Severity, float, float, str]] = {}
        depth = f["queue_depth"]
        if depth >= self.queue_warn:
            sev: Severity = "critical" if depth >= self.queue_critical else "warn"
            limit = self.queue_critical if sev == "critical" else self.queue_warn
            out["queue_depth"] = (
                sev,
                depth,
                limit,
                f"telemetry queues hold {int(depth)} records (≥ {limit})",
            )
        latency = f["export_latency_s"]
        if latency >= self.latency_warn_s:
            sev = "critical" if latency >= self.latency_critical_s else "warn"
            limit_s = self.latency_critical_s if sev == "critical" else self.latency_warn_s
            out["export_latency"] = (sev, latency, limit_s, f"last export took {latency:.2f}s (≥ {limit_s}s)")
        for name, key, what in (
            ("records_dropped", "dropped", "records dropped from full queues"),
            ("export_failed", "failed", "records failed to export"),
            ("spooling", "spooled", "envelopes spooled to disk (membrane bus unreachable)"),
        ):
            if name == "spooling" and not self._bus_chosen():
                continue  # no bus was chosen: envelopes wait in the spool by design, no alert
            delta = f[key] - prev.get(key, 0)
            if delta > 0:
                out[name] = ("warn", delta, 0, f"{int(delta)} {what} since the last check")
        if "spooling" not in out and "spooling" in self._alerts:
            # Resolved when the spool is empty again (the bus took it), not merely when
            # nothing new was spooled in one interval while the bus is still down.
            waiting = self._spool_waiting()
            if waiting > 0:
                out["spooling"] = ("warn", waiting, 0, f"{waiting} envelopes wait in the spool for the bus")
        return out

    def check_once(self) -> dict[str, float]:
        """Read the figures, raise/resolve alerts, count SLO breaches; returns the figures."""
        raw = self._read()
        figures = pipeline_figures(raw)
        events: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            now = self._clock()
            prev = self._previous or {}
            found = self._conditions(figures, prev)
            for name, (sev, value, threshold, message) in found.items():
                self.slo_breaches[name] = self.slo_breaches.get(name, 0) + 1
                self._breach_counter.add(1, {"slo": name})
                current = self._alerts.get(name)
                if current is not None and current.severity == sev:
                    current.value = value  # still holds: no new event
                    continue
                alert = Alert(name, sev, value, threshold, message, current.since if current else now)
                self._alerts[name] = alert
                attrs = _alert_attrs(alert)
                if current is not None:
                    attrs["previous_level"] = current.severity
                events.append(("alert_triggered", attrs))
            for name in [n for n in self._alerts if n not in found]:
                alert = self._alerts.pop(name)
                attrs = _alert_attrs(alert)
                attrs["duration_s"] = round(now - alert.since, 3)
                attrs["message"] = f"resolved: {alert.message}"
                events.append(("alert_resolved", attrs))
            self._previous = figures
            self._figures = figures
            self._metrics = raw
            self._checks += 1
            self._last_check = now
        for name, attrs in events:  # outside the lock: emitting enqueues into the pipeline
            level = logging.ERROR if attrs.get("level") == "critical" else logging.WARNING
            if name == "alert_resolved":
                level = logging.INFO
            _log.log(level, "pipeline %s: %s", name, attrs["message"])
            try:
                self._emit(name, attrs)
            except Exception:
                _log.exception("pipeline watchdog could not emit %s", name)
        return figures

    # -- reports ---------------------------------------------------------------------------------

    @property
    def active_alerts(self) -> list[Alert]:
        with self._lock:
            return [Alert(**asdict(a)) for a in self._alerts.values()]

    def get_health_report(self) -> dict[str, Any]:
        """The seed's telemetry shape for this pipeline: health, figures, alerts, SLO breaches."""
        with self._lock:
            alerts = [asdict(a) for a in self._alerts.values()]
            status = "ok"
            if alerts:
                status = "critical" if any(a["severity"] == "critical" for a in alerts) else "warn"
            last = self._last_check
            return {
                "layer": "telemetry_pipeline",
                "healthy": not alerts,
                "status": status,
                "checks": self._checks,
                "last_check": None if last is None else datetime.fromtimestamp(last, tz=UTC).isoformat(),
                "figures": dict(self._figures),
                "active_alerts": alerts,
                "slo_breaches": dict(self.slo_breaches),
                "slo_breaches_total": sum(self.slo_breaches.values()),
                "thresholds": {
                    "queue_warn": self.queue_warn,
                    "queue_critical": self.queue_critical,
                    "latency_warn_s": self.latency_warn_s,
                    "latency_critical_s": self.latency_critical_s,
                },
                "interval_s": self.interval_s,
            }

    def check_readiness(self, timeout_seconds: float = 30.0, **kwargs: Any) -> dict[str, bool]:
        """:func:`check_readiness` with this watchdog's metrics reader."""
        kwargs.setdefault("read_metrics", self._read)
        return check_readiness(timeout_seconds, **kwargs)

    # -- OTel metrics ----------------------------------------------------------------------------

    def _instruments(self, provider: MeterProvider | None) -> None:
        meter = (provider or metrics.get_meter_provider()).get_meter("membrane_otel")
        self._breach_counter = meter.create_counter(
            "membrane_otel.ops._watchdog.slo_breaches",
            unit="{breach}",
            description="Watchdog checks that found an SLO breached",
        )
        meter.create_observable_gauge(
            "membrane_otel.ops._watchdog.alerts.active",
            [self._observe_alerts],
            unit="{alert}",
            description="Pipeline alerts that hold now",
        )
        for name, callback, unit, description in _PIPELINE_INSTRUMENTS:
            kind = (
                meter.create_observable_gauge
                if name.endswith(("depth", "latency"))
                else meter.create_observable_counter
            )
            kind(name, [self._observing(callback)], unit=unit, description=description)

    def _observe_alerts(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            n = len(self._alerts)
        return [Observation(n)]

    def _observing(
        self, fn: Callable[[Mapping[str, int]], list[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            try:
                return fn(self._read())
            except Exception:  # a failed reading is a gap in the series, never an error in the exporter
                return []

        return callback


def _publisher_status() -> dict[str, Any]:
    publisher = getattr(sys.modules.get("membrane_otel.membrane._publish"), "_publisher", None)
    return dict(publisher.status()) if publisher is not None else {}


def _spool_waiting() -> int:  # envelopes in the process's spool (0 without a membrane path)
    return int(_publisher_status().get("spooled", 0))


def _alert_attrs(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert.name,
        "level": alert.severity,
        "message": alert.message,
        "value": alert.value,
        "threshold": alert.threshold,
        "component": "telemetry_pipeline",
    }


def _by_suffix(m: Mapping[str, int], prefix: str, attr: str) -> list[Observation]:
    return [Observation(int(v), {attr: k[len(prefix) :]}) for k, v in m.items() if k.startswith(prefix)]


def _queues(m: Mapping[str, int]) -> list[Observation]:
    per = _by_suffix(m, "queue_depth.", "queue")
    bus = int(m.get("queue_depth", 0)) - sum(int(o.value) for o in per)
    return [*per, Observation(max(0, bus), {"queue": "bus"})]


def _latency(m: Mapping[str, int]) -> list[Observation]:
    return [Observation(o.value / 1000.0, o.attributes) for o in _by_suffix(m, "export_latency_ms.", "queue")]


def _labelled(**names: str) -> Callable[[Mapping[str, int]], list[Observation]]:
    """Counters of ``get_metrics()`` as one instrument's series: attribute value -> counter name."""
    attr = names.pop("attr")
    return lambda m: [Observation(int(m.get(counter, 0)), {attr: label}) for label, counter in names.items()]


_PIPELINE_INSTRUMENTS: tuple[tuple[str, Callable[[Mapping[str, int]], list[Observation]], str, str], ...] = (
    ("membrane_otel.queue.depth", _queues, "{record}", "Records waiting in each telemetry queue"),
    ("membrane_otel.export.latency", _latency, "s", "Duration of each exporter's latest export"),
    (
        "membrane_otel.translate._records.produced",
        _labelled(attr="signal", logs="produced_logs"),
        "{record}",
        "Log records produced",
    ),
    (
        "membrane_otel.translate._records.exported",
        _labelled(attr="path", logs="exported", spans="exported_spans", bus="published"),
        "{record}",
        "Records written to the ledger / delivered to the membrane bus",
    ),
    (
        "membrane_otel.translate._records.dropped",
        _labelled(attr="queue", logs="dropped_logs", spans="dropped_spans", bus="dropped_count"),
        "{record}",
        "Records dropped from full queues (oldest first)",
    ),
    (
        "membrane_otel.translate._records.spooled",
        _labelled(attr="path", bus="spool_writes"),
        "{record}",
        "Envelopes spooled to disk",
    ),
    (
        "membrane_otel.translate._records.failed",
        lambda m: [Observation(_sum(m, "export_failed", prefix="export_errors."))],
        "{record}",
        "Records an exporter failed to export",
    ),
    (
        "membrane_otel.translate._records.suppressed",
        _labelled(attr="path", bus="suppressed"),
        "{record}",
        "Envelopes held back by the throttle",
    ),
)


_process_watchdog: PipelineWatchdog | None = None
_process_lock = threading.Lock()


def start_watchdog(**kwargs: Any) -> PipelineWatchdog:
    """Start the process's watchdog (once; later calls return the running one).

    ``interval_s`` defaults to ``MEMBRANE_WATCHDOG_INTERVAL`` (15 s); other keyword arguments
    go to :class:`PipelineWatchdog`. Its OTel instruments use the global meter provider.
    """
    global _process_watchdog
    with _process_lock:
        if _process_watchdog is None:
            if "interval_s" not in kwargs:
                from membrane_otel.settings import get_settings

                kwargs["interval_s"] = get_settings().watchdog_interval_s
            _process_watchdog = PipelineWatchdog(**kwargs)
        _process_watchdog.start()
        return _process_watchdog


def stop_watchdog(timeout_s: float = 5.0) -> None:
    """Stop the process's watchdog, if one was started. Idempotent."""
    with _process_lock:
        dog = _process_watchdog
    if dog is not None:
        dog.stop(timeout_s)
