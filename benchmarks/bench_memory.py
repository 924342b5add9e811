"""Row 8: memory (RSS) during an error storm.

A worker process runs the default embedded pipeline (``setup_l2_logger``; ledger and
membrane exporters; the bus down, so envelopes head for the spool) and logs exceptions as
fast as it can for 10 s (1 s in quick mode), while this process samples its RSS with
psutil every 50 ms. Every queue on the way is bounded (drop-oldest, counted), so the RSS
should level off: the figure to watch is the growth over the storm's second half.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import ROOT, clean_env, closed_port, ratio, row, stop, tail, variant

GLOBAL_STATE = False
SECOND_HALF_LIMIT_MB = 5.0


def _storm(seconds: float) -> int:
    import logging

    import membrane_otel
    from benchmarks import throwaway_stream
    from benchmarks.bench_errorlog import exception_call
    from membrane_otel.logs._l2logger import setup_l2_logger

    logger = setup_l2_logger("bench_storm", "orchestration/scripts/bench_storm.py")
    for h in logger.handlers:
        if type(h) is logging.StreamHandler:
            h.setStream(throwaway_stream())
    call = exception_call(logger)
    for _ in range(500):
        call()
    membrane_otel.force_flush(10000)
    print("ready", flush=True)
    sys.stdin.readline()
    calls, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        call()
        calls += 1
    metrics = membrane_otel.get_metrics()
    print(json.dumps({"calls": calls, "metrics": metrics}), flush=True)
    sys.stdin.readline()
    os._exit(0)


def run(quick: bool) -> dict[str, Any]:
    import psutil  # type: ignore[import-untyped]

    seconds = 1.0 if quick else 10.0
    with tempfile.TemporaryDirectory(prefix="membrane-bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        env = clean_env(
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            OTEL_SERVICE_NAME="bench_storm",
            MEMBRANE_LEDGER_PATH=str(tmp / "ledger.jsonl"),
            MEMBRANE_SPOOL_DIR=str(tmp / "spool"),
            MEMBRANE_BUS_URL=f"ws://127.0.0.1:{closed_port()}/api/ws",
        )
        log = tmp / "storm.log"
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.bench_memory", "--storm", str(seconds)],
                env=env,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        try:
            if proc.stdout is None or proc.stdin is None:
                raise RuntimeError("storm worker has no pipes")
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"storm worker did not start:\n{tail(log)}")
            ps = psutil.Process(proc.pid)
            lines: list[str] = []
            reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
            rss: list[tuple[float, int]] = [(0.0, ps.memory_info().rss)]
            t0 = time.monotonic()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            reader.start()
            while reader.is_alive() and time.monotonic() - t0 < seconds + 30:
                time.sleep(0.05)
                rss.append((time.monotonic() - t0, ps.memory_info().rss))
            if not lines or not lines[0].strip():
                raise RuntimeError(f"storm worker gave no result:\n{tail(log)}")
            outcome = json.loads(lines[0])
            proc.stdin.write("quit\n")
            proc.stdin.flush()
        finally:
            stop(proc)

    mb = 1024 * 1024
    start = rss[0][1] / mb
    storm = [(t, v / mb) for t, v in rss if t <= seconds]
    mid = min(storm, key=lambda tv: abs(tv[0] - seconds / 2))[1]
    end = storm[-1][1]
    peak = max(v for _, v in storm)
    second_half = end - mid
    m = outcome["metrics"]
    calls = outcome["calls"]
    return row(
        "memory",
        f"RSS during a {seconds:.0f} s error storm (setup_l2_logger, default exporters, bus down)",
        variants=[
            variant("RSS at storm start", None, median=start, unit="MB", n=1),
            variant("RSS at half time", None, median=mid, unit="MB", n=1),
            variant("RSS at storm end", None, median=end, unit="MB", n=1),
            variant("RSS peak", None, median=peak, unit="MB", n=len(storm)),
        ],
        ratios=[
            ratio(
                "storm RSS growth, second half (MB) / 5 MB",
                second_half / SECOND_HALF_LIMIT_MB,
                1.0,
                "<=",
                "bounded queues",
            ),
            ratio("RSS end / start (context)", end / start, None, "<="),
        ],
        note=f"{calls:,} logger.exception calls in {seconds:.0f} s ({calls / seconds:,.0f}/s); growth over the "
        f"whole storm {end - start:+.1f} MB, over its second half {second_half:+.1f} MB. No issue names a "
        f"number here; the bound read against is 'no growth once the queues are full' (≤ {SECOND_HALF_LIMIT_MB:.0f} "
        "MB over the second half).",
        context={
            k: m.get(k, 0)
            for k in (
                "produced_logs",
                "exported",
                "dropped_logs",
                "spool_writes",
                "suppressed",
                "queue_depth",
            )
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--storm"]:
        raise SystemExit(_storm(float(sys.argv[2])))
    raise SystemExit(f"usage: {os.path.basename(__file__)} --storm SECONDS")
