"""The seed's Layer 2 watchdog over the *user's* components (``seeds/002``).

    from membrane_otel.watchdog import layer2_watchdog, register_component

    register_component("htm_orchestrator", lambda: {"queue_depth": q.qsize(), "worker_count": n},
                       thresholds={"queue_depth": {"warn": 1000, "critical": 5000},
                                   "worker_count": {"min": 1}})
    await layer2_watchdog.start()
    readiness = await layer2_watchdog.check_readiness(timeout_seconds=30)   # {'htm_orchestrator': True}
    report = layer2_watchdog.get_health_report()

A probe returns the component's figures (a mapping of numbers; ``ready``/``healthy`` booleans
are honoured), sync or async. Thresholds per figure: ``warn`` / ``critical`` (at or above),
``min`` / ``min_critical`` (below), ``min_rate`` / ``max_rate`` (per second, for a figure
that counts up, such as dispatched tasks). A probe that raises or times out is unhealthy.

Every ``interval_s`` (15 s) a check reads every probe and: raises an alert once when a
condition starts (``alert_triggered``, and a 5W1H narrative), resolves it once when it ends
(``alert_resolved``), counts an SLO breach per check that finds it, records each figure as
an OTel gauge (``membrane_otel.component.<figure>``, attribute ``component``), and hands the
seed's telemetry dict ``{'layer': …, 'components': {…}}`` to every subscriber.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

_log = logging.getLogger("membrane_otel.ops._components")

Probe = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
Emit = Callable[[str, dict[str, Any]], None]
_KINDS = ("warn", "critical", "min", "min_critical", "min_rate", "max_rate")


@dataclass
class Component:
    name: str
    probe: Probe
    thresholds: dict[str, dict[str, float]]
    timeout_s: float
    figures: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    healthy: bool = False
    error: str | None = None
    previous: tuple[float, dict[str, float]] | None = None  # (when, numeric figures) for rates
    slo_breaches: int = 0


def _check_thresholds(
    name: str, thresholds: Mapping[str, Mapping[str, float]] | None
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for figure, limits in (thresholds or {}).items():
        unknown = set(limits) - set(_KINDS)
        if unknown:
            raise ValueError(
                f"component {name!r}: threshold {sorted(unknown)[0]!r} for {figure!r}: expected {_KINDS}"
            )
        out[figure] = {k: float(v) for k, v in limits.items()}
        w, c = out[figure].get("warn"), out[figure].get("critical")
        if w is not None and c is not None and w > c:
            raise ValueError(f"component {name!r}: {figure} warn {w} is above critical {c}")
    return out


def _conditions(comp: Component, now: float) -> dict[str, tuple[str, float, float, str]]:
    """(figure, kind) key -> (severity, value, threshold, message) for conditions holding now."""
    found: dict[str, tuple[str, float, float, str]] = {}
    if comp.error is not None:
        found["probe"] = ("critical", 1.0, 0.0, f"{comp.name} probe failed: {comp.error}")
        return found
    numbers = {
        k: float(v) for k, v in comp.figures.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    if comp.figures.get("healthy") is False:
        found["healthy"] = ("critical", 0.0, 1.0, f"{comp.name} reports itself unhealthy")
    for figure, lim in comp.thresholds.items():
        value = numbers.get(figure)
        if value is None:
            continue
        if "critical" in lim and value >= lim["critical"]:
            found[figure] = (
                "critical",
                value,
                lim["critical"],
                f"{comp.name} {figure} {value:g} ≥ {lim['critical']:g}",
            )
        elif "warn" in lim and value >= lim["warn"]:
            found[figure] = ("warn", value, lim["warn"], f"{comp.name} {figure} {value:g} ≥ {lim['warn']:g}")
        if "min_critical" in lim and value < lim["min_critical"]:
            found[f"{figure}_low"] = (
                "critical",
                value,
                lim["min_critical"],
                f"{comp.name} {figure} {value:g} < {lim['min_critical']:g}",
            )
        elif "min" in lim and value < lim["min"]:
            found[f"{figure}_low"] = (
                "warn",
                value,
                lim["min"],
                f"{comp.name} {figure} {value:g} < {lim['min']:g}",
            )
        if comp.previous is not None and ("min_rate" in lim or "max_rate" in lim):
            then, before = comp.previous
            if figure in before and now > then:
                rate = (value - before[figure]) / (now - then)
                if "min_rate" in lim and rate < lim["min_rate"]:
                    found[f"{figure}_rate"] = (
                        "warn",
                        rate,
                        lim["min_rate"],
                        f"{comp.name} {figure} {rate:.2f}/s < {lim['min_rate']:g}/s",
                    )
                elif "max_rate" in lim and rate > lim["max_rate"]:
                    found[f"{figure}_rate"] = (
                        "warn",
                        rate,
                        lim["max_rate"],
                        f"{comp.name} {figure} {rate:.2f}/s > {lim['max_rate']:g}/s",
                    )
    comp.previous = (now, numbers)
    return found


class Layer2Watchdog:
    """Registered components, checked every ``interval_s``; the seed's ``layer2_watchdog``."""

    def __init__(
        self,
        layer: str = "layer2_orchestration",
        interval_s: float = 15.0,
        *,
        emit: Emit | None = None,
        narrate: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"watchdog interval_s must be positive, got {interval_s}")
        self.layer = layer
        self.interval_s = interval_s
        self._emit = emit
        self._narrate = narrate
        self._clock = clock
        self._lock = threading.Lock()
        self._components: dict[str, Component] = {}
        self._alerts: dict[tuple[str, str], dict[str, Any]] = {}
        self._subscribers: list[Callable[[dict[str, Any]], Any]] = []
        self._task: asyncio.Task[None] | None = None
        self.last_telemetry: dict[str, Any] = {"layer": layer, "components": {}}
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("membrane_otel")
        self._breaches = meter.create_counter(
            "membrane_otel.component.slo_breaches",
            unit="{breach}",
            description="Checks that found a component's SLO breached",
        )
        self._gauges: set[str] = set()
        self._meter = meter

    # -- registry -------------------------------------------------------------------------------

    def register_component(
        self,
        name: str,
        probe: Probe,
        thresholds: Mapping[str, Mapping[str, float]] | None = None,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        """Watch ``name``: ``probe()`` (sync or async) returns its figures; ``thresholds`` judge them."""
        if not isinstance(name, str) or not name:
            raise ValueError("component name must be a non-empty string")
        if not callable(probe):
            raise TypeError(f"component {name!r}: probe must be callable, got {type(probe).__name__}")
        comp = Component(name, probe, _check_thresholds(name, thresholds), timeout_s)
        with self._lock:
            self._components[name] = comp
            for figure in comp.thresholds:
                self._gauge(figure)

    def unregister_component(self, name: str) -> None:
        with self._lock:
            self._components.pop(name, None)

    def subscribe(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """``callback(telemetry)`` after every check (the seed's routing to Layer 3)."""
        self._subscribers.append(callback)

    # -- checks ---------------------------------------------------------------------------------

    async def _read(self, comp: Component) -> None:
        try:
            result = comp.probe()
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, comp.timeout_s)
            if not isinstance(result, Mapping):
                raise TypeError(f"probe returned {type(result).__name__}, expected a mapping of figures")
            comp.figures, comp.error = dict(result), None
        except Exception as exc:  # a failing probe is a finding, not a crash of the watchdog
            comp.figures, comp.error = {}, f"{type(exc).__name__}: {exc}"[:200]
        comp.ready = comp.error is None and comp.figures.get("ready", True) is not False

    async def check_once(self) -> dict[str, Any]:
        """Read every probe, raise/resolve alerts, count breaches; returns the telemetry dict."""
        with self._lock:
            comps = list(self._components.values())
        await asyncio.gather(*(self._read(c) for c in comps))
        now = self._clock()
        events: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            seen: set[tuple[str, str]] = set()
            for comp in comps:
                found = _conditions(comp, now)
                comp.healthy = comp.ready and not any(sev == "critical" for sev, *_ in found.values())
                for key, (sev, value, limit, message) in found.items():
                    seen.add((comp.name, key))
                    comp.slo_breaches += 1
                    self._breaches.add(1, {"component": comp.name, "slo": key})
                    current = self._alerts.get((comp.name, key))
                    if current is not None and current["level"] == sev:
                        continue  # still holds: raised once
                    alert = {"alert": key, "component": comp.name, "level": sev, "value": value,
                             "threshold": limit, "message": message, "since": current["since"] if current else now}  # fmt: skip
                    self._alerts[(comp.name, key)] = alert
                    events.append(("alert_triggered", dict(alert)))
            for gone in [k for k in self._alerts if k not in seen]:
                alert = self._alerts.pop(gone)
                events.append(("alert_resolved", {**alert, "message": f"resolved: {alert['message']}",
                                                  "duration_s": round(now - alert["since"], 3)}))  # fmt: skip
            telemetry = {"layer": self.layer, "components": {c.name: self._component_view(c) for c in comps}}
            self.last_telemetry = telemetry
        for name, attrs in events:
            self._record(name, attrs)
        for callback in list(self._subscribers):
            try:
                result = callback(telemetry)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("watchdog telemetry subscriber failed")
        return telemetry

    def _component_view(self, comp: Component) -> dict[str, Any]:
        view = {
            "ready": comp.ready,
            "healthy": comp.healthy,
            **comp.figures,
            "slo_breaches": comp.slo_breaches,
        }
        if comp.error:
            view["error"] = comp.error
        return view

    def _record(self, name: str, attrs: dict[str, Any]) -> None:
        """An alert as an event in the ledger and a 5W1H narrative (who/what/where/why/how)."""
        attrs = {k: v for k, v in attrs.items() if k != "since"}
        try:
            if self._emit is not None:
                self._emit(name, attrs)
            else:
                from membrane_otel.ledger import _events as events

                if name == "alert_triggered":
                    fields = {k: v for k, v in attrs.items() if k not in ("level", "message")}
                    events.emit_alert(str(attrs["level"]), str(attrs["message"]), **fields)
                else:
                    events.emit_event(name, attrs)
            from membrane_otel.ops import _narrative

            narrate = self._narrate or _narrative.narrate
            narrate(who=self.layer + "_watchdog", what="raise_alert" if name == "alert_triggered" else "resolve_alert",
                    where=str(attrs["component"]), why=[str(attrs["message"])], how="threshold_check",
                    context={"alert": attrs["alert"], "level": attrs["level"]}, result=name.removeprefix("alert_"))  # fmt: skip
        except Exception:
            _log.exception("watchdog could not record %s", name)

    # -- the seed's facade ----------------------------------------------------------------------

    async def start(self) -> None:
        """Check now, then every ``interval_s`` on this event loop. Idempotent."""
        if self._task is not None and not self._task.done():
            return
        await self.check_once()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="layer2-watchdog")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check_once()
            except Exception:
                _log.exception("watchdog check failed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def check_readiness(self, timeout_seconds: float = 30.0, poll_s: float = 0.25) -> dict[str, bool]:
        """Each registered component's readiness, waiting up to ``timeout_seconds`` for all."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            with self._lock:
                comps = list(self._components.values())
            await asyncio.gather(*(self._read(c) for c in comps))
            ready = {c.name: c.ready for c in comps}
            if all(ready.values()) or time.monotonic() >= deadline:
                return ready
            await asyncio.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def get_health_report(self) -> dict[str, Any]:
        """The latest telemetry, the alerts that hold, and the SLO breach counts."""
        with self._lock:
            alerts = [{k: v for k, v in a.items() if k != "since"} for a in self._alerts.values()]
            breaches = {c.name: c.slo_breaches for c in self._components.values()}
            return {
                **self.last_telemetry,
                "healthy": not alerts and all(c.healthy for c in self._components.values()),
                "active_alerts": alerts,
                "slo_breaches": breaches,
                "slo_breaches_total": sum(breaches.values()),
                "interval_s": self.interval_s,
            }

    # -- OTel metrics ---------------------------------------------------------------------------

    def _gauge(self, figure: str) -> None:
        if figure in self._gauges:
            return
        self._gauges.add(figure)
        self._meter.create_observable_gauge(
            f"membrane_otel.component.{figure}",
            [self._observe(figure)],
            description=f"Watched components' {figure}",
        )

    def _observe(self, figure: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                values = [(c.name, c.figures.get(figure)) for c in self._components.values()]
            return [
                Observation(float(v), {"component": n})
                for n, v in values
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            ]

        return callback


layer2_watchdog = Layer2Watchdog()


def register_component(
    name: str, probe: Probe, thresholds: Mapping[str, Mapping[str, float]] | None = None, **kw: Any
) -> None:
    """Register a component with the process's :data:`layer2_watchdog`."""
    layer2_watchdog.register_component(name, probe, thresholds, **kw)
