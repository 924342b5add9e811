"""Row 3: the application thread while the downstream is dead vs healthy.

Two worker processes run the same program — ``setup_l2_logger`` with the full default logs
pipeline plus an OTLP exporter (``OTEL_LOGS_EXPORTER=ledger,membrane,otlp``), throttling off
so every error heads for the bus:

* healthy: the bus is a real reference bus (``membrane-otel bus serve``) and the OTLP
  endpoint a small HTTP server that answers 200;
* dead: the bus URL and the OTLP endpoint are ports nobody listens on (bus and Collector
  down), so envelopes go to the spool and the OTLP exporter retries and gives up.

Each needs its own process-global OTel set-up, so they are sibling processes driven in
rounds by this one: each round tells one, then the other (order alternating) to make a
segment of paced ``logger.exception`` calls, timing each call, and to send the samples
back. The calls are paced (a short sleep between them), as errors in a real program are,
so the background threads keep working the downstream path throughout.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    BIN,
    ROOT,
    clean_env,
    closed_port,
    free_port,
    port_open,
    process,
    ratio,
    round_spread,
    row,
    stop,
    tail,
    variant,
    wait_until,
)

GLOBAL_STATE = False
GAP_S = 0.002  # pause between two errors: ~500 errors/s per worker


# --------------------------------------------------------------------------- worker side


def _worker() -> int:
    """Speak the line protocol on stdin/stdout: ``run N`` → JSON ns samples; ``metrics``; ``quit``."""
    import logging

    from benchmarks import throwaway_stream
    from benchmarks.bench_errorlog import exception_call
    from membrane_otel import get_metrics
    from membrane_otel.logs._l2logger import setup_l2_logger

    logger = setup_l2_logger("bench_downstream", "orchestration/scripts/bench_downstream.py")
    sink = throwaway_stream()
    for h in logger.handlers:
        if type(h) is logging.StreamHandler:
            h.setStream(sink)
    call = exception_call(logger)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "run":
            n, gap = int(cmd[1]), float(cmd[2])
            samples = []
            for _ in range(n):
                samples.append(call())
                time.sleep(gap)
            out.write(json.dumps(samples) + "\n")
        elif cmd[0] == "metrics":
            out.write(json.dumps(get_metrics()) + "\n")
        elif cmd[0] == "profile":
            from benchmarks import profile_top

            n, gap = int(cmd[1]), float(cmd[2])
            out.write(json.dumps(profile_top(call, n, between=functools.partial(time.sleep, gap))) + "\n")
        out.flush()
    # Leave without waiting for a dead downstream: the spool already holds what matters.
    os._exit(0)


def _otlp_sink(port: int) -> int:
    """A stand-in healthy OTLP/HTTP endpoint: reads the body, answers 200 (empty response)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    return 0


# --------------------------------------------------------------------------- driver side


class Worker:
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_downstream", "--worker"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        first = self._read()
        if first.strip() != "ready":
            raise RuntimeError(f"worker {name} did not start: {first!r}\n{tail(log)}")

    def _read(self) -> str:
        stdout = self.proc.stdout
        return stdout.readline() if stdout is not None else ""

    def ask(self, command: str) -> Any:
        stdin = self.proc.stdin
        if stdin is None:
            raise RuntimeError(f"worker {self.name} has no stdin")
        stdin.write(command + "\n")
        stdin.flush()
        answer = self._read()
        if not answer:
            raise RuntimeError(f"worker {self.name} died (exit {self.proc.poll()})")
        return json.loads(answer)

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        stop(self.proc)
        self._log.close()


def _env(tmp: Path, name: str, bus_port: int, otlp_port: int) -> dict[str, str]:
    return clean_env(
        OTEL_LOGS_EXPORTER="ledger,membrane,otlp",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_SERVICE_NAME=f"bench-{name}",
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"http://127.0.0.1:{otlp_port}/v1/logs",
        OTEL_EXPORTER_OTLP_LOGS_TIMEOUT="5",
        MEMBRANE_LEDGER_PATH=str(tmp / f"{name}.jsonl"),
        MEMBRANE_SPOOL_DIR=str(tmp / f"spool-{name}"),
        MEMBRANE_BUS_URL=f"ws://127.0.0.1:{bus_port}/api/ws",
        MEMBRANE_THROTTLE="0",
    )


def run(quick: bool) -> dict[str, Any]:
    rounds, per_round, warmup = (4, 100, 60) if quick else (24, 200, 200)
    with tempfile.TemporaryDirectory(prefix="membrane-bench-downstream-") as tmp_name:
        tmp = Path(tmp_name)
        bus_port, sink_port = free_port(), free_port()
        bus_cmd = [str(BIN / "membrane-otel"), "bus", "serve", "--port", str(bus_port)]
        sink_cmd = [sys.executable, "-m", "benchmarks.bench_downstream", "--otlp-sink", str(sink_port)]
        with (
            process(bus_cmd, env=clean_env(), log=tmp / "bus.log", cwd=tmp),
            process(sink_cmd, env=clean_env(), log=tmp / "sink.log", cwd=ROOT),
        ):
            wait_until(lambda: port_open(bus_port), 20, "reference bus")
            wait_until(lambda: port_open(sink_port), 20, "OTLP sink")
            workers = {
                "healthy": Worker("healthy", _env(tmp, "healthy", bus_port, sink_port), tmp / "healthy.log"),
                "dead": Worker("dead", _env(tmp, "dead", closed_port(), closed_port()), tmp / "dead.log"),
            }
            try:
                for w in workers.values():
                    w.ask(f"run {warmup} {GAP_S}")
                samples: dict[str, list[int]] = {"healthy": [], "dead": []}
                names = list(workers)
                for r in range(rounds):
                    for name in names if r % 2 == 0 else names[::-1]:
                        samples[name].extend(workers[name].ask(f"run {per_round} {GAP_S}"))
                metrics = {name: w.ask("metrics") for name, w in workers.items()}
                p99 = {name: _pct(v, 0.99) for name, v in samples.items()}
                profile = (
                    workers["dead"].ask(f"profile {per_round} {GAP_S}")
                    if p99["dead"] > 1.1 * p99["healthy"]
                    else ""
                )
            finally:
                for w in workers.values():
                    w.close()

    def pct(name: str, q: float) -> float:
        return _pct(samples[name], q)

    slow = {name: sum(1 for v in samples[name] if v > 1_000_000) for name in samples}
    keys = ("produced_logs", "exported", "published", "spool_writes", "export_failed", "dropped_logs")
    result = row(
        "downstream",
        "The application thread while the bus and the Collector are down vs healthy",
        variants=[
            variant("healthy: reference bus + OTLP endpoint up", samples["healthy"]),
            variant("dead: bus and OTLP endpoint on closed ports", samples["dead"]),
        ],
        ratios=[
            ratio(
                "p99 dead / p99 healthy",
                pct("dead", 0.99) / pct("healthy", 0.99),
                spread=round_spread(samples["dead"], samples["healthy"], per_round, 0.99),
            ),
            ratio(
                "p50 dead / p50 healthy (context)",
                pct("dead", 0.5) / pct("healthy", 0.5),
                spread=round_spread(samples["dead"], samples["healthy"], per_round),
            ),
        ],
        note=f"logger.exception through setup_l2_logger with OTEL_LOGS_EXPORTER=ledger,membrane,otlp and "
        f"throttling off, one error every {GAP_S * 1000:.0f} ms, in two sibling worker processes driven in "
        "alternating rounds. 'p99 unchanged' is read as a ratio ≤ 1.1; the spread (10th–90th "
        "percentile of the round-by-round p99 ratio) shows how far the p99 of a few thousand calls "
        "moves on a shared machine. Pipeline counters per worker are below.",
        context={
            name: {**{k: m.get(k, 0) for k in keys}, "calls over 1 ms": slow[name]}
            for name, m in metrics.items()
        },
    )
    if profile:
        result["profiles"]["p99 dead / p99 healthy"] = (
            "cProfile of the dead worker's application thread. It sees only that thread: time lost "
            "waiting for the GIL while the background threads spool and retry shows up inside whatever "
            "the caller was running; compare 'calls over 1 ms' above.\n" + profile
        )
    return result


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        raise SystemExit(_worker())
    if sys.argv[1:2] == ["--otlp-sink"]:
        raise SystemExit(_otlp_sink(int(sys.argv[2])))
    raise SystemExit(f"usage: {os.path.basename(__file__)} --worker | --otlp-sink PORT")
