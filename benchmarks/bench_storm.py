"""Storm row: what an error storm costs the whole process, and how many errors survive it.

One thread raises and logs ``log.exception(...)`` as fast as it can for a few seconds; each
pipeline writes to a file of its own; the process's CPU time (all threads: the caller, the
renderer, the batch processor, the exporter) is taken from just before the loop to after
its shutdown, so work moved to a background thread is still paid for here.

* plain OTel: a console handler (to /dev/null) + OTel ``LoggingHandler`` + the SDK's stock
  ``BatchLogRecordProcessor`` + the ledger exporter (the same sink as ours);
* membrane: ``membrane_otel.configure()`` (``OTEL_LOGS_EXPORTER=ledger``) + ``setup_l2_logger``
  with its console to /dev/null.

Two storms: 500 different call sites (distinct errors), and one error repeated. Each variant
runs in a fresh process, the variants alternate, and the ratios are medians over the reps.
An error is accounted for when it is on a ledger line (as one of a line's ``occurrences``)
or counted as dropped; ``unaccounted`` is what is neither.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks import ROOT, clean_env, closed_port, ratio, row, variant

CHILD = r"""
import json, logging, os, sys, time
pipeline, kind, secs, tmp = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
sink = open(os.devnull, "w")
sites = {}
exec(compile("\n".join(f"def site_{i}():\n    raise KeyError('distinct failure {i}')" for i in range(500)),
             "generated_sites.py", "exec"), sites)
def same():
    raise ValueError("the same failure")
if pipeline == "otel":
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from membrane_otel.exporters import LedgerLogExporter
    provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(LedgerLogExporter(os.path.join(tmp, "ledger.jsonl"))))
    log = logging.getLogger("storm")
    log.propagate = False
    console = logging.StreamHandler(sink)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.handlers[:] = [console, LoggingHandler(logger_provider=provider)]
    def stop():
        provider.shutdown()
        return {}
else:
    import membrane_otel
    from membrane_otel import setup_l2_logger
    membrane_otel.configure()
    log = setup_l2_logger("storm", "scripts/storm.py")
    for h in log.handlers:
        if type(h) is logging.StreamHandler:
            h.setStream(sink)
    def stop():
        membrane_otel.shutdown(60_000)
        return membrane_otel.get_metrics()
clock = time.perf_counter_ns
lat = []
n = 0
t0 = os.times()
end = time.perf_counter() + secs
while time.perf_counter() < end:
    try:
        sites[f"site_{n % 500}"]() if kind == "distinct" else same()
    except Exception:
        a = clock()
        log.exception("failure %d", n % 500 if kind == "distinct" else 0)
        lat.append(clock() - a)
    n += 1
loop = os.times()
metrics = stop()
t1 = os.times()
lines = 0
occ = 0
with open(os.path.join(tmp, "ledger.jsonl"), "rb") as f:
    for raw in f:
        ln = json.loads(raw)
        if ln.get("event") == "script_error":
            lines += 1
            occ += ln.get("occurrences", 1)
lat.sort()
print(json.dumps({
    "n": n, "lines": lines, "delivered": occ,
    "dropped": metrics.get("dropped_logs", 0) + metrics.get("rejected", 0),
    "cpu_s": (t1.user + t1.system) - (t0.user + t0.system),
    "caller_median_ns": lat[len(lat) // 2], "caller_p99_ns": lat[int(len(lat) * 0.99)],
}))
"""


def _one(pipeline: str, kind: str, secs: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="membrane-bench-storm-") as tmp:
        env = clean_env(
            OTEL_LOGS_EXPORTER="ledger",
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            OTEL_SERVICE_NAME="bench",
            MEMBRANE_LEDGER_PATH=str(Path(tmp) / "ledger.jsonl"),
            MEMBRANE_SPOOL_DIR=str(Path(tmp) / "spool"),
            MEMBRANE_BUS_URL=f"ws://127.0.0.1:{closed_port()}/api/ws",
            MEMBRANE_WATCHDOG="0",
        )
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CHILD), pipeline, kind, str(secs), tmp],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=secs + 120,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["cpu_us_per_error"] = out["cpu_s"] * 1e6 / max(1, out["n"])
    out["unaccounted"] = out["n"] - out["delivered"] - out["dropped"]
    out["delivered_pct"] = 100.0 * out["delivered"] / max(1, out["n"])
    # Saturation: what the pipeline delivers per second of a producer at full speed, and the
    # CPU each delivered error cost (a line standing for n errors delivers n).
    out["delivered_per_s"] = out["delivered"] / secs
    out["drop_pct"] = 100.0 * out["dropped"] / max(1, out["n"])
    out["cpu_us_per_delivered"] = out["cpu_s"] * 1e6 / max(1, out["delivered"])
    return out


def measure(secs: float, reps: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Each (pipeline, storm) ``reps`` times, alternating, each in a fresh process."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(reps):
        for kind in ("distinct", "same"):
            for pipeline in ("otel", "membrane"):
                runs.setdefault((pipeline, kind), []).append(_one(pipeline, kind, secs))
    return runs


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def _spread(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = [x[key] / y[key] for x, y in zip(a, b, strict=False) if y[key]]
    return (min(values), max(values)) if values else (0.0, 0.0)


def run(quick: bool) -> dict[str, Any]:
    secs, reps = (1.5, 1) if quick else (4.0, 3)
    runs = measure(secs, reps)
    variants: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    context: dict[str, Any] = {}
    for kind, cpu_target, title in (
        ("distinct", 1.0, "500 different call sites"),
        ("same", 0.3, "one error repeated"),
    ):
        otel, ours = runs[("otel", kind)], runs[("membrane", kind)]
        for name, rs in (("plain OTel", otel), ("setup_l2_logger", ours)):
            variants.append(
                variant(
                    f"{name}, {title}: process CPU per error (all threads)",
                    median=_med(rs, "cpu_us_per_error"),
                    n=sum(r["n"] for r in rs),
                    note=f"delivered {_med(rs, 'delivered_pct'):.1f} %, unaccounted {int(_med(rs, 'unaccounted'))}",
                )
            )
            variants.append(
                variant(
                    f"{name}, {title}: saturation, delivered per second",
                    median=_med(rs, "delivered_per_s"),
                    unit="/s",
                    n=len(rs),
                    note=f"drop {_med(rs, 'drop_pct'):.1f} %, "
                    f"CPU per delivered error {_med(rs, 'cpu_us_per_delivered'):.0f} µs",
                )
            )
            variants.append(
                variant(
                    f"{name}, {title}: caller-thread latency",
                    median=_med(rs, "caller_median_ns") / 1000,
                    p99=_med(rs, "caller_p99_ns") / 1000,
                    n=sum(r["n"] for r in rs),
                )
            )
        ratios.append(
            ratio(
                f"storm CPU per error, {kind} / plain OTel",
                _med(ours, "cpu_us_per_error") / _med(otel, "cpu_us_per_error"),
                cpu_target,
                "<=",
                "issue 17",
                _spread(ours, otel, "cpu_us_per_error"),
            )
        )
        ratios.append(
            ratio(
                f"storm caller latency, {kind} / plain OTel",
                _med(ours, "caller_median_ns") / _med(otel, "caller_median_ns"),
                1.0,
                "<=",
                "issue 17",
                _spread(ours, otel, "caller_median_ns"),
            )
        )
        ratios.append(
            ratio(
                f"storm errors unaccounted for, {kind} (count)",
                float(max(r["unaccounted"] for r in ours)),
                0.0,
                "<=",
                "issue 17",
            )
        )
        for name, rs in (("otel", otel), ("membrane", ours)):
            context[f"{kind}.{name}"] = {
                k: round(_med(rs, k), 1)
                for k in (
                    "n",
                    "lines",
                    "delivered_pct",
                    "delivered_per_s",
                    "drop_pct",
                    "dropped",
                    "unaccounted",
                    "cpu_us_per_error",
                    "cpu_us_per_delivered",
                )
            }
    return row(
        "storm",
        "Error storm: all-thread process CPU per error, delivery and caller latency, vs plain OTel",
        variants=variants,
        ratios=ratios,
        note=f"One thread logging log.exception as fast as it can for {secs} s, {reps} run(s) per variant, "
        "each in a fresh process; CPU is os.times() user+system of the whole process from the loop's start "
        "to after shutdown. Spread is the min–max of the per-run ratio.",
        context=context,
    )


if __name__ == "__main__":
    found = measure(float(sys.argv[1]) if len(sys.argv) > 1 else 1.5, 1)
    print(json.dumps({"/".join(k): v for k, v in found.items()}, indent=1))
