"""Row 6: end to end, ``logger.error`` → the ledger line, embedded and through the Collector.

One application process (``setup_l2_logger``) exports each error twice at once:

* embedded: ``OTEL_LOGS_EXPORTER=ledger`` writes the line itself (the default pipeline);
* collector: ``otlp`` → the real Collector built by ``make collector`` running the shipped
  ``collector-config/otelcol.yaml`` (ports and queue directory set through its environment
  variables) → ``membrane-otel bridge serve`` → the bridge's ledger.

For every probe the application logs an error with a unique marker and polls both ledger
files (every 2 ms) until the marker is in each; the time from the call to the line being
readable on disk is the latency. Probes are spaced by a random pause so they land on every
phase of the batching timers. Without the Collector binary, the collector variant is
skipped with the reason.
"""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    BIN,
    ROOT,
    clean_env,
    closed_port,
    free_port,
    module_available,
    process,
    ratio,
    row,
    tail,
    variant,
    wait_until,
)

GLOBAL_STATE = False
COLLECTOR = ROOT / ".tools" / "otelcol-membrane"
CONFIG = ROOT / "collector-config" / "otelcol.yaml"
PROBE_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------- the application


class _Follower:
    """Reads what was appended to a file since last time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return b""
        self.offset += len(data)
        return data


def _probe(followers: list[_Follower], marker: bytes, call: Any) -> list[float | None]:
    """Seconds from ``call()`` to ``marker`` being readable in each followed file (None: not seen)."""
    seen: list[float | None] = [None] * len(followers)
    buffers = [b""] * len(followers)
    t0 = time.perf_counter()
    call()
    while None in seen and time.perf_counter() - t0 < PROBE_TIMEOUT_S:
        for k, f in enumerate(followers):
            if seen[k] is None:
                buffers[k] = buffers[k][-200:] + f.new()
                if marker in buffers[k]:
                    seen[k] = time.perf_counter() - t0
        time.sleep(0.002)
    return seen


def _app(probes: int, files: list[str]) -> int:
    import logging

    from benchmarks import throwaway_stream
    from membrane_otel.ledger._events import emit_event
    from membrane_otel.logs._l2logger import setup_l2_logger

    logger = setup_l2_logger("bench_e2e", "orchestration/scripts/bench_e2e.py")
    for h in logger.handlers:
        if type(h) is logging.StreamHandler:
            h.setStream(throwaway_stream())
    followers = [_Follower(Path(f)) for f in files]
    logger.error("e2e warm-up")
    emit_event("bench_probe", {"marker": "warm-up"})
    time.sleep(1.0)
    for f in followers:
        f.new()
    results: dict[str, list[list[float | None]]] = {"error": [], "event": []}
    for i in range(probes):
        for kind in ("error", "event"):
            marker = f"probe-{os.getpid()}-{kind}-{i}-{random.getrandbits(32):08x}"
            call: Callable[[], object]
            if kind == "error":
                call = functools.partial(logger.error, "e2e probe %s", marker)
            else:
                call = functools.partial(emit_event, "bench_probe", {"marker": marker}, task_id="bench")
            results[kind].append(_probe(followers, marker.encode(), call))
            time.sleep(random.uniform(0.05, 0.35))
    print(json.dumps(results), flush=True)
    return 0


# --------------------------------------------------------------------------- the driver


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:
            return bool(200 <= r.status < 300)
    except OSError:
        return False


def _collector_reason() -> str | None:
    if not COLLECTOR.exists():
        return f"{COLLECTOR.relative_to(ROOT)} is not built (make collector needs Go)"
    if not module_available("membrane_otel.cli.bridge"):
        return "the bridge (membrane-otel bridge) is not built yet"
    if not CONFIG.exists():
        return f"{CONFIG.relative_to(ROOT)} is missing"
    return None


def _run_app(
    env: dict[str, str], probes: int, files: list[Path], log: Path
) -> dict[str, list[list[float | None]]]:
    cmd = [sys.executable, "-m", "benchmarks.bench_e2e", "--app", str(probes), *map(str, files)]
    with open(log, "ab") as err:
        done = subprocess.run(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=60 + 2 * probes * (PROBE_TIMEOUT_S + 1),
        )
    if done.returncode != 0:
        raise RuntimeError(f"e2e application exited {done.returncode}:\n{tail(log)}")
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def _latency(values: list[float | None]) -> tuple[list[int], int]:
    got = [int(v * 1e9) for v in values if v is not None]
    return got, len(values) - len(got)


def run(quick: bool) -> dict[str, Any]:
    probes = 8 if quick else 60
    reason = _collector_reason()
    with tempfile.TemporaryDirectory(prefix="membrane-bench-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        embedded, bridged = tmp / "embedded.jsonl", tmp / "bridge.jsonl"
        app_env = clean_env(
            OTEL_LOGS_EXPORTER="ledger",
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            OTEL_SERVICE_NAME="bench_e2e",
            MEMBRANE_LEDGER_PATH=str(embedded),
            MEMBRANE_SPOOL_DIR=str(tmp / "spool"),
            MEMBRANE_BUS_URL=f"ws://127.0.0.1:{closed_port()}/api/ws",
        )
        if reason is not None:
            results = _run_app(app_env, probes, [embedded], tmp / "app.log")
        else:
            bridge_port, http_port, grpc_port, health_port, metrics_port = (free_port() for _ in range(5))
            col_env = clean_env(
                MEMBRANE_COLLECTOR_GRPC_ENDPOINT=f"127.0.0.1:{grpc_port}",
                MEMBRANE_COLLECTOR_HTTP_ENDPOINT=f"127.0.0.1:{http_port}",
                MEMBRANE_COLLECTOR_HEALTH_ENDPOINT=f"127.0.0.1:{health_port}",
                MEMBRANE_COLLECTOR_METRICS_PORT=str(metrics_port),
                MEMBRANE_COLLECTOR_STORAGE_DIR=str(tmp / "queue"),
                MEMBRANE_JAEGER_OTLP_ENDPOINT=f"127.0.0.1:{closed_port()}",
                MEMBRANE_BRIDGE_URL=f"http://127.0.0.1:{bridge_port}",
            )
            bridge_cmd = [
                str(BIN / "membrane-otel"),
                "bridge",
                "serve",
                "--port",
                str(bridge_port),
                "--ledger",
                str(bridged),
                "--no-bus",
            ]
            with (
                process(
                    bridge_cmd,
                    env=clean_env(MEMBRANE_SPOOL_DIR=str(tmp / "bridge-spool")),
                    log=tmp / "bridge.log",
                    cwd=tmp,
                ),
                process(
                    [str(COLLECTOR), "--config", str(CONFIG)], env=col_env, log=tmp / "collector.log", cwd=tmp
                ),
            ):
                try:
                    wait_until(lambda: _http_ok(f"http://127.0.0.1:{bridge_port}/ready"), 30, "bridge")
                    wait_until(lambda: _http_ok(f"http://127.0.0.1:{health_port}/"), 60, "Collector")
                except TimeoutError as exc:
                    raise RuntimeError(
                        f"{exc}\n--- bridge:\n{tail(tmp / 'bridge.log')}\n--- collector:\n"
                        f"{tail(tmp / 'collector.log')}"
                    ) from exc
                app_env.update(
                    OTEL_LOGS_EXPORTER="ledger,otlp",
                    OTEL_EXPORTER_OTLP_LOGS_PROTOCOL="http/protobuf",
                    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"http://127.0.0.1:{http_port}/v1/logs",
                )
                results = _run_app(app_env, probes, [embedded, bridged], tmp / "app.log")

    def p(values: list[int], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1e9

    def measured(kind: str, index: int, label: str) -> tuple[dict[str, Any], list[int]]:
        values, lost = _latency([r[index] for r in results[kind]])
        v = variant(label, values)
        if lost:
            v["note"] = f"{lost} of {probes} probes not seen within {PROBE_TIMEOUT_S:.0f} s"
        return v, values

    v_err, emb_err = measured("error", 0, "embedded: logger.error → ledger line")
    v_evt, emb_evt = measured("event", 0, "embedded: emit_event → ledger line")
    variants = [v_err, v_evt]
    ratios = [
        ratio("embedded logger.error p99 / 1 s", p(emb_err, 0.99), 1.0, "<=", "issue 9"),
        ratio("embedded emit_event p99 / 1 s", p(emb_evt, 0.99), 1.0, "<=", "issue 6"),
    ]
    note = (
        f"{probes} probes of each kind, spaced 50–350 ms apart at random; latency = call → line readable "
        "in the file (polled every 2 ms)."
    )
    if reason is None:
        v_col, col = measured("error", 1, "collector: logger.error → OTLP → Collector → bridge → ledger line")
        v_col_evt, _ = measured("event", 1, "collector: emit_event → … → bridge → ledger line")
        variants += [v_col, v_col_evt]
        ratios += [
            ratio("collector p50 / 1.5 s", (p(col, 0.5) or 0) / 1.5 if col else None, 1.0, "<=", "issue 7"),
            ratio("collector p99 / 1.5 s", (p(col, 0.99) or 0) / 1.5 if col else None, 1.0, "<=", "issue 7"),
        ]
        note += (
            " The application exports each record twice at once (OTEL_LOGS_EXPORTER=ledger,otlp); the "
            "Collector runs collector-config/otelcol.yaml unchanged (batch timeout 200 ms)."
        )
    else:
        ratios += [
            ratio("collector p50 / 1.5 s", None, 1.0, "<=", "issue 7"),
            ratio("collector p99 / 1.5 s", None, 1.0, "<=", "issue 7"),
        ]
        note += f" Collector variant skipped: {reason}."
    return row(
        "e2e",
        "End to end: logger.error / emit_event → ledger line, embedded and through the Collector",
        variants=variants,
        ratios=ratios,
        note=note,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--app"]:
        raise SystemExit(_app(int(sys.argv[2]), sys.argv[3:]))
    raise SystemExit(f"usage: {os.path.basename(__file__)} --app PROBES FILE...")
