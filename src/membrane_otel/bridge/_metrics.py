"""The bridge's counters, exported twice: Prometheus text on ``GET /metrics``, and OTel self-metrics.

The counters are the process's one table (:mod:`membrane_otel._internal.counters`,
``bridge_*`` names); nothing is counted twice. As OTel metrics they are observable
counters on the ``membrane_otel.bridge`` meter, so whatever MeterProvider the process has
(``OTEL_METRICS_EXPORTER=otlp`` under ``opentelemetry-instrument``) exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics

from membrane_otel._internal import counters

__all__ = ["bridge_counters", "prometheus_text", "register_otel_metrics"]

# Counters every bridge exports, at 0 before the first event, so dashboards see them.
_ALWAYS = (
    "bridge_logs",
    "bridge_spans",
    "bridge_envelopes",
    "bridge_written",
    "bridge_duplicates",
    "bridge_rejected",
    "bridge_envelopes_published",
    "bridge_envelopes_spooled",
    "bridge_envelopes_replayed",
    "bridge_envelopes_rejected",
    "bridge_ledger_failed",
    "bridge_spool_full",
    "bridge_connections_refused",
    "bridge_connections_evicted",
)


def bridge_counters() -> dict[str, int]:
    out = dict.fromkeys(_ALWAYS, 0)
    out.update((k, v) for k, v in counters.snapshot().items() if k.startswith("bridge_"))
    return out


def prometheus_text(gauges: dict[str, float] | None = None) -> bytes:
    """Prometheus text exposition (version 0.0.4) of the bridge's counters and gauges."""
    lines: list[str] = []
    for name, value in sorted(bridge_counters().items()):
        metric = f"membrane_{name}_total"
        lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
    for name, gauge in sorted((gauges or {}).items()):
        metric = f"membrane_{name}"
        lines += [f"# TYPE {metric} gauge", f"{metric} {gauge:g}"]
    return ("\n".join(lines) + "\n").encode()


_registered = False


def register_otel_metrics() -> None:
    """One observable counter per bridge counter on the global MeterProvider (once a process)."""
    global _registered
    if _registered:
        return
    _registered = True
    meter = metrics.get_meter("membrane_otel.bridge")

    def reader(name: str) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
        def read(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(counters.get(name))]

        return read

    for name in _ALWAYS:
        meter.create_observable_counter(f"membrane.{name}", callbacks=[reader(name)])
