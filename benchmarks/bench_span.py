"""Row 1: an HRM span vs a bare OTel SDK span vs a Logfire span of the same shape; tracing off.

All three tracers get their own ``TracerProvider`` with the same processor — our
``BatchSpanProcessorWithCounts`` — and a no-op exporter, so what differs is only what each
adds on the application thread. Nothing here touches the global tracer provider, so the
row can run inside another process (the test suite runs it in-process).

The shape (the seed's ``tracer.span("alt", "transition", "altitude.py", "L3→L2")`` with
``set_output``): span ``altitude.transition``, attributes ``hrm.layer``, ``hrm.operation``,
``hrm.component``, ``hrm.input_summary``, ``hrm.event_id`` at start, ``hrm.output_summary``
and ``hrm.status`` at the end, made current for its duration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from benchmarks import (
    add_profiles,
    interleave,
    profile_top,
    ratio,
    round_spread,
    row,
    timed,
    timer_overhead_ns,
    variant,
)

GLOBAL_STATE = False
NAME = "altitude.transition"
START_ATTRS = {
    "hrm.layer": "altitude",
    "hrm.operation": "transition",
    "hrm.component": "altitude.py",
    "hrm.input_summary": "L3→L2",
    "hrm.event_id": "alt_1705180800_a3f2",
}


def _noop_exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NoopSpanExporter(SpanExporter):
        name = "noop"

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            return None

    return NoopSpanExporter()


def _processor() -> Any:
    from membrane_otel._internal.batching import BatchSpanProcessorWithCounts

    return BatchSpanProcessorWithCounts(_noop_exporter())


def _provider() -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(_processor())
    return provider


def _hrm_tracer(provider: Any) -> Any:
    from membrane_otel.spans._hrm import HRMTracer

    return HRMTracer(enabled=True, tracer_provider=provider)


def _logfire(processor: Any) -> Any:
    import logfire

    return logfire.configure(
        local=True,
        send_to_logfire=False,
        console=False,
        metrics=False,
        inspect_arguments=False,
        distributed_tracing=True,
        service_name="bench",
        additional_span_processors=[processor],
    )


def build() -> tuple[dict[str, Any], list[Any]]:
    """The variants' callables, and the providers to shut down afterwards."""
    from membrane_otel.spans._hrm import HRMTracer

    hrm_provider, bare_provider = _provider(), _provider()
    hrm = _hrm_tracer(hrm_provider)
    bare = bare_provider.get_tracer("bench.bare")
    off = HRMTracer(enabled=False)
    lf = _logfire(_processor())

    def hrm_span() -> None:
        with hrm.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
            ctx.set_output("ok")

    def bare_span() -> None:
        with bare.start_as_current_span(
            NAME, attributes=START_ATTRS, record_exception=False, set_status_on_exception=False
        ) as span:
            span.set_attribute("hrm.output_summary", "ok")
            span.set_attribute("hrm.status", "success")

    def logfire_span() -> None:
        with lf.span(NAME, **START_ATTRS) as span:
            span.set_attribute("hrm.output_summary", "ok")
            span.set_attribute("hrm.status", "success")

    def off_span() -> None:
        with off.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
            ctx.set_output("ok")

    fns = {"hrm": hrm_span, "bare": bare_span, "logfire": logfire_span, "off": off_span}
    return fns, [hrm_provider, bare_provider, lf]


def _off_cost_ns(fn: Any, batches: int, per_batch: int = 1000) -> list[float]:
    """Per-call ns of tracing-off, measured over batches (one call is below the timer's grain)."""
    clock = time.perf_counter_ns
    out: list[float] = []
    rng = range(per_batch)
    for _ in range(batches):
        t0 = clock()
        for _ in rng:
            pass
        empty = clock() - t0
        t0 = clock()
        for _ in rng:
            fn()
        out.append(max(0.0, (clock() - t0 - empty) / per_batch))
    return out


def run(quick: bool) -> dict[str, Any]:
    rounds, per_round, warmup = (6, 300, 300) if quick else (40, 1500, 2000)
    fns, closers = build()
    try:
        samples = interleave(
            {"hrm": timed(fns["hrm"]), "bare": timed(fns["bare"]), "logfire": timed(fns["logfire"])},
            rounds=rounds,
            per_round=per_round,
            warmup=warmup,
            overhead_ns=timer_overhead_ns(),
        )
        off = _off_cost_ns(fns["off"], 20 if quick else 200)
        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        off_med = sorted(off)[len(off) // 2] / 1000
        result = row(
            "span",
            "HRM span (tracing on) vs bare OTel SDK span vs Logfire span; tracing off",
            variants=[
                variant("HRM span (membrane_otel.tracer.span)", samples["hrm"]),
                variant("bare OTel SDK span, same attributes", samples["bare"]),
                variant("Logfire span, same shape", samples["logfire"]),
                variant(
                    "tracing off (per call)",
                    None,
                    median=off_med,
                    p99=sorted(off)[int(len(off) * 0.99)] / 1000,
                    n=len(off) * 1000,
                    note="timed over batches of 1000 calls (one call is below the clock's grain); "
                    "p99 is over the batch means",
                ),
            ],
            ratios=[
                ratio(
                    "HRM / bare SDK span",
                    med["hrm"] / med["bare"],
                    1.3,
                    "<=",
                    "issue 3",
                    round_spread(samples["hrm"], samples["bare"], per_round),
                ),
                ratio(
                    "HRM / Logfire span",
                    med["hrm"] / med["logfire"],
                    0.5,
                    "<=",
                    "issue 3",
                    round_spread(samples["hrm"], samples["logfire"], per_round),
                ),
                ratio("tracing off / 1 µs budget", off_med / 1.0, 1.0, "<=", "issue 3"),
            ],
            note="Same processor (BatchSpanProcessorWithCounts) and a no-op exporter for all three; "
            "Logfire 'local' instance with send_to_logfire=False, console off, its default scrubbing on.",
        )
        return add_profiles(
            result,
            {
                "HRM / bare SDK span": lambda: profile_top(fns["hrm"], 3000),
                "HRM / Logfire span": lambda: profile_top(fns["hrm"], 3000),
                "tracing off / 1 µs budget": lambda: profile_top(fns["off"], 30000),
            },
        )
    finally:
        for c in closers:
            c.shutdown()
