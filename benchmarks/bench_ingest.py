"""Row 5: bridge ingest vs bare OTLP protobuf decode, in the same process.

If the bridge's own benchmark (``benchmarks/bench_bridge.py``, owned by the bridge) is
there, its ``run(quick)`` result is used as this row. Otherwise this measures, per OTLP
logs request of 100 error records (16 attributes each, a 7-frame stack trace):

* ceiling: ``ExportLogsServiceRequest.FromString`` and reading every record's fields
  (times, severity, body, ids, every attribute's value) into Python — what any Python
  consumer of the same bytes pays;
* bridge: ``bridge.otlp.decode_logs`` (the OTLP adapter) and ``Bridge.accept_logs`` (the
  one translation and the hash-chained ledger append), envelope publishing off; the HTTP
  layer is not included.

Every request carries distinct record ids (the ledger skips ids it has seen).
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import (
    ROOT,
    add_profiles,
    interleave,
    module_available,
    profile_top,
    ratio,
    round_spread,
    row,
    variant,
)

GLOBAL_STATE = False
PER_REQUEST = 100
TITLE = "Bridge ingest vs bare OTLP protobuf decode (records/s, same process)"


def _from_bridge_bench(quick: bool) -> dict[str, Any]:
    """The bridge engineer's row, in this report's shape."""
    result = importlib.import_module("benchmarks.bench_bridge").run(quick)
    if not isinstance(result, dict):
        raise TypeError(f"bench_bridge.run returned {type(result).__name__}, expected a dict")
    if "ratios" in result and "key" in result:
        result.setdefault("title", TITLE)
        result["key"] = "ingest"
        return result
    # A free-form dict: keep its numbers; find the two rates if it names them.
    rates = {k: v for k, v in result.items() if isinstance(v, int | float)}
    decode = next((v for k, v in rates.items() if "decode" in k), None)
    ingest = next((v for k, v in rates.items() if "ingest" in k or "bridge" in k), None)
    value = ingest / decode if decode and ingest else None
    return row(
        "ingest",
        TITLE,
        variants=[variant(k, None, median=float(v), unit="") for k, v in rates.items()],
        ratios=[ratio("bridge ingest / bare decode", value, 0.5, ">=", "issue 7")],
        note="From benchmarks/bench_bridge.py.",
        context={k: v for k, v in result.items() if k not in rates},
    )


def _read_all(req: Any) -> int:
    """Touch every field of every record, as a consumer turning them into Python would."""
    n = 0
    for rl in req.resource_logs:
        resource = {
            kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
            for kv in rl.resource.attributes
        }
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for lr in sl.log_records:
                rec = {
                    "time": lr.time_unix_nano,
                    "observed": lr.observed_time_unix_nano,
                    "severity": lr.severity_number,
                    "severity_text": lr.severity_text,
                    "body": getattr(lr.body, lr.body.WhichOneof("value") or "string_value"),
                    "trace_id": lr.trace_id.hex(),
                    "span_id": lr.span_id.hex(),
                    "attrs": {
                        kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                        for kv in lr.attributes
                    },
                    "resource": resource,
                    "scope": scope,
                }
                n += len(rec)
    return n


def _bodies(count: int) -> list[bytes]:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    from benchmarks.bench_ledger import make_records

    return [encode_logs(make_records(PER_REQUEST)).SerializeToString() for _ in range(count)]


def run(quick: bool) -> dict[str, Any]:
    if (ROOT / "benchmarks" / "bench_bridge.py").exists():
        return _from_bridge_bench(quick)
    if not module_available("membrane_otel.bridge._otlp"):
        return row(
            "ingest",
            TITLE,
            status="pending",
            note="membrane_otel.bridge is not built yet (issue 7).",
            ratios=[ratio("bridge ingest / bare decode", None, 0.5, ">=", "issue 7")],
        )
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from membrane_otel.bridge import Bridge
    from membrane_otel.bridge._otlp import decode_logs
    from membrane_otel.ledger._writer import Ledger

    rounds, per_round, warmup = (4, 5, 5) if quick else (20, 20, 20)
    # CPU time of this thread, not wall time: the target is records per second *per core*,
    # and a 10 ms request is preempted by other processes far more often than a 1 ms one.
    clock = time.thread_time_ns
    with tempfile.TemporaryDirectory(prefix="membrane-bench-ingest-") as tmp:
        bodies = _bodies(warmup + rounds * per_round)
        profile_bodies = _bodies(20)
        ledger = Ledger(Path(tmp) / "bridge.jsonl")
        bridge = Bridge(ledger, None)
        cursor = {"decode": 0, "bridge": 0}

        def bare() -> int:
            body = bodies[cursor["decode"]]
            cursor["decode"] += 1
            t0 = clock()
            _read_all(ExportLogsServiceRequest.FromString(body))
            return clock() - t0

        def ingest_one(body: bytes) -> None:
            out = bridge.accept_logs(decode_logs(body, json_body=False))
            if out.written != PER_REQUEST:
                raise RuntimeError(f"bridge wrote {out.written} of {PER_REQUEST} records: {out.message}")

        def ingest() -> int:
            body = bodies[cursor["bridge"]]
            cursor["bridge"] += 1
            t0 = clock()
            ingest_one(body)
            return clock() - t0

        try:
            samples = interleave(
                {"decode": bare, "bridge": ingest},
                rounds=rounds,
                per_round=per_round,
                warmup=warmup,
            )
        finally:
            ledger.close()
        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        rate = {k: PER_REQUEST / (v / 1e9) for k, v in med.items()}
        vs = []
        for name, label in (
            ("decode", "bare decode: FromString + read every field"),
            ("bridge", "bridge: decode_logs + Bridge.accept_logs (translate + ledger)"),
        ):
            v = variant(label, samples[name])
            v["note"] = f"{rate[name]:,.0f} records/s (median request of {PER_REQUEST})"
            vs.append(v)
        result = row(
            "ingest",
            TITLE,
            variants=vs,
            ratios=[
                ratio(
                    "bridge ingest / bare decode",
                    rate["bridge"] / rate["decode"],
                    0.5,
                    ">=",
                    "issue 7",
                    round_spread(samples["decode"], samples["bridge"], per_round),
                )
            ],
            note=f"Per OTLP logs request of {PER_REQUEST} records, timed in CPU time of the thread (records/s "
            "per core); HTTP and envelope publishing excluded; "
            "this row's own measurement (no benchmarks/bench_bridge.py present).",
        )
        it = iter(profile_bodies)
        return add_profiles(
            result, {"bridge ingest / bare decode": lambda: profile_top(lambda: ingest_one(next(it)), 20)}
        )
