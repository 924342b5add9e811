"""Row 2: ``logger.exception`` through ``setup_l2_logger`` vs the plain OTel ``LoggingHandler``
vs a plain ``logging.FileHandler``; plus redaction of a 1 KB line.

Variants, all three with the same console handler (setup_l2_logger's own, its stream
pointed at /dev/null) and the same exception (raised 7 frames deep, fresh each call):

* membrane: ``setup_l2_logger(...)`` — capture, fingerprint, dedupe key and redaction on the
  caller's thread; rendering and the OTel record on its own thread; then our
  ``MembraneLogProcessor`` and the batch processor with the ledger exporter;
* plain OTel: a logger with the console handler plus
  ``opentelemetry.instrumentation.logging.handler.LoggingHandler`` on a ``LoggerProvider``
  with the same batch processor and the same (ledger) exporter, to a file of its own;
* FileHandler: the console handler plus ``logging.FileHandler``.

Only the ``logger.exception`` call is timed. After each segment the variant's background
queues are flushed (untimed), so one variant's backlog never runs on another's clock.
``OTEL_LOGS_EXPORTER=ledger`` here, so both OTel variants export through the same single
processor; the full default pipeline (ledger + membrane bus) is row 3's.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    add_profiles,
    closed_port,
    interleave,
    profile_top,
    ratio,
    round_spread,
    row,
    throwaway_stream,
    timed,
    timer_overhead_ns,
    variant,
)

GLOBAL_STATE = True
SCRIPT = "bench_errors"
SCRIPT_PATH = "orchestration/scripts/bench_errors.py"


def _raise(depth: int, cid: int) -> None:
    if depth <= 1:
        raise ValueError(f"Bootstrap failed for {cid}: upstream returned 503")
    _raise(depth - 1, cid)


def exception_call(logger: logging.Logger) -> Any:
    """One timed ``logger.exception`` on a fresh 7-frame traceback; returns its ns."""
    clock = time.perf_counter_ns
    counter = [0]

    def call() -> int:
        counter[0] += 1
        try:
            _raise(6, counter[0])  # + this frame = 7 frames in the traceback
        except ValueError:
            t0 = clock()
            logger.exception("Bootstrap failed for %s", counter[0])
            return clock() - t0
        return 0

    return call


def configure_env(tmp: Path, exporters: str = "ledger") -> None:
    """This process's membrane-otel settings: files under ``tmp``, a bus nobody listens on."""
    os.environ.update(
        OTEL_LOGS_EXPORTER=exporters,
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_SERVICE_NAME="bench",
        MEMBRANE_LEDGER_PATH=str(tmp / "membrane.jsonl"),
        MEMBRANE_SPOOL_DIR=str(tmp / "spool"),
        MEMBRANE_BUS_URL=f"ws://127.0.0.1:{closed_port()}/api/ws",
    )


def l2_logger(sink: Any) -> logging.Logger:
    """setup_l2_logger's logger with its console pointed at ``sink``."""
    from membrane_otel.logs._l2logger import setup_l2_logger

    logger = setup_l2_logger(SCRIPT, SCRIPT_PATH)
    for h in logger.handlers:
        if type(h) is logging.StreamHandler:
            h.setStream(sink)
    return logger


def console_of(logger: logging.Logger) -> logging.Handler:
    return next(h for h in logger.handlers if type(h) is logging.StreamHandler)


def plain_logger(name: str, *handlers: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers[:] = list(handlers)
    return logger


def redaction_line() -> str:
    """~1 KB of log text with two secrets in it, the rest benign."""
    text = (
        "2024-01-14T10:00:00Z worker-3 retrying POST https://api.internal/v1/citizens/17/bootstrap "
        "after 503 (attempt 3 of 5); headers={'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxNyJ9."
        "c2lnbmF0dXJlc2lnbmF0dXJl', 'X-Request-Id': '9f1c2a9b'} payload={\"citizen_id\": 17, \"password\": "
        '"hunter2hunter2", "mode": "full"} token bucket refilled; '
    )
    while len(text) < 1024:
        text += "queue depth 12, batch 25, flush 250 ms, latency p50 3.1 ms p99 9.7 ms; "
    return text[:1024]


def run(quick: bool) -> dict[str, Any]:
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.resources import Resource

    import membrane_otel
    from membrane_otel._internal.batching import BatchLogProcessor
    from membrane_otel.exporters import LedgerLogExporter
    from membrane_otel.logs._redact import redact_secrets

    rounds, per_round, warmup = (5, 60, 60) if quick else (30, 200, 300)
    with tempfile.TemporaryDirectory(prefix="membrane-bench-errlog-") as tmp_name:
        tmp = Path(tmp_name)
        configure_env(tmp)
        sink = throwaway_stream()
        membrane = l2_logger(sink)
        console = console_of(membrane)

        plain_provider = LoggerProvider(resource=Resource.create({"service.name": "bench"}))
        plain_provider.add_log_record_processor(
            BatchLogProcessor(LedgerLogExporter(tmp / "plain-otel.jsonl"))
        )
        otel_handler = LoggingHandler(logger_provider=plain_provider)
        otel = plain_logger("bench.plain_otel", console, otel_handler)
        file_handler = logging.FileHandler(tmp / "plain.log", encoding="utf-8")
        filelog = plain_logger("bench.file", console, file_handler)

        # Context: the two OTel handlers alone, without the console render they share.
        from membrane_otel.logs._l2logger import setup_l2_logger

        l2_only = setup_l2_logger(SCRIPT + "_quiet", SCRIPT_PATH, console=False)
        otel_only = plain_logger("bench.otel_only", otel_handler)

        variants = {
            "membrane": exception_call(membrane),
            "otel": exception_call(otel),
            "file": exception_call(filelog),
            "l2_only": exception_call(l2_only),
            "otel_only": exception_call(otel_only),
        }
        cpu: dict[str, list[int]] = {}
        try:
            samples = interleave(
                variants,
                process_cpu=cpu,
                rounds=rounds,
                per_round=per_round,
                warmup=warmup,
                settle={
                    "membrane": lambda: membrane_otel.force_flush(30000),
                    "otel": lambda: plain_provider.force_flush(30000),
                    "file": file_handler.flush,
                    "l2_only": lambda: membrane_otel.force_flush(30000),
                    "otel_only": lambda: plain_provider.force_flush(30000),
                },
                overhead_ns=timer_overhead_ns(2000),
            )
            from membrane_otel.logs._errors import stack_fingerprint

            try:
                _raise(6, 0)
            except ValueError as exc:
                tb = exc.__traceback__
            from membrane_otel.logs import _errors

            def cold() -> str:
                _errors._by_codes.clear()  # as if this stack had never been seen
                return stack_fingerprint(tb)

            fingerprints = interleave(
                {"fingerprint": timed(lambda: stack_fingerprint(tb)), "cold": timed(cold)},
                rounds=rounds,
                per_round=per_round * 4,
                warmup=warmup,
                overhead_ns=timer_overhead_ns(2000),
            )
            fingerprint = fingerprints["fingerprint"]
            fingerprint_med = sorted(fingerprint)[len(fingerprint) // 2] / 1000
            line = redaction_line()
            redact = interleave(
                {"redact": timed(lambda: redact_secrets(line))},
                rounds=rounds,
                per_round=per_round * 4,
                warmup=warmup,
                overhead_ns=timer_overhead_ns(2000),
            )["redact"]
            metrics = membrane_otel.get_metrics()
            med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
            redact_med = sorted(redact)[len(redact) // 2] / 1000
            vs_otel = med["membrane"] / med["otel"]
            spread = round_spread(samples["membrane"], samples["otel"], per_round)
            result = row(
                "errorlog",
                "logger.exception: setup_l2_logger vs plain OTel LoggingHandler vs logging.FileHandler",
                variants=[
                    variant("setup_l2_logger (fingerprint, dedupe key, redaction)", samples["membrane"]),
                    variant("console + OTel LoggingHandler, same processor/exporter", samples["otel"]),
                    variant("console + logging.FileHandler", samples["file"]),
                    variant("L2 handler alone, no console (context)", samples["l2_only"]),
                    variant("OTel LoggingHandler alone, no console (context)", samples["otel_only"]),
                    variant(
                        "setup_l2_logger: process CPU per call, all threads (segment + drain)",
                        cpu["membrane"],
                    ),
                    variant("console + OTel LoggingHandler: process CPU per call, all threads", cpu["otel"]),
                    variant("redact_secrets, 1 KB line", redact),
                    variant("stack_fingerprint of a 7-frame traceback, a stack seen before", fingerprint),
                    variant("stack_fingerprint, first time for a stack (context)", fingerprints["cold"]),
                ],
                ratios=[
                    ratio("setup_l2_logger / OTel LoggingHandler", vs_otel, 1.0, "<=", "issue 4", spread),
                    ratio(
                        "setup_l2_logger / OTel LoggingHandler (issue 9)",
                        vs_otel,
                        2.0,
                        "<=",
                        "issue 9",
                        spread,
                    ),
                    ratio(
                        "L2 handler / OTel LoggingHandler, no console (context)",
                        med["l2_only"] / med["otel_only"],
                        None,
                        "<=",
                        spread=round_spread(samples["l2_only"], samples["otel_only"], per_round),
                    ),
                    ratio(
                        "setup_l2_logger / FileHandler (context)", med["membrane"] / med["file"], None, "<="
                    ),
                    ratio(
                        "setup_l2_logger / OTel LoggingHandler, process CPU all threads (context)",
                        statistics.median(cpu["membrane"]) / statistics.median(cpu["otel"]),
                    ),
                    ratio("redaction of 1 KB / 20 µs budget", redact_med / 20.0, 1.0, "<=", "issue 4"),
                    ratio("fingerprint / 5 µs budget", fingerprint_med / 5.0),
                ],
                note="Every variant also has the same console handler (to /dev/null); the exception is "
                "raised 7 frames deep and only the logging call is timed. Both OTel variants export "
                "through BatchLogProcessor → LedgerLogExporter.",
                context={
                    k: metrics.get(k, 0) for k in ("produced_logs", "exported", "dropped_logs", "rejected")
                },
            )
            return add_profiles(
                result,
                {
                    "setup_l2_logger / OTel LoggingHandler": lambda: profile_top(variants["membrane"], 500),
                    "setup_l2_logger / OTel LoggingHandler (issue 9)": lambda: profile_top(
                        variants["membrane"], 500
                    ),
                    "redaction of 1 KB / 20 µs budget": lambda: profile_top(
                        lambda: redact_secrets(line), 2000
                    ),
                    "fingerprint / 5 µs budget": lambda: profile_top(lambda: stack_fingerprint(tb), 2000),
                },
            )
        finally:
            membrane_otel.force_flush(10000)
            plain_provider.shutdown()
            file_handler.close()
