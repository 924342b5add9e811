"""Row 4: ledger append (lock and hash chain included) vs plain buffered writes of the same lines.

One iteration is one export batch (25 records, the default batch size) of realistic error
records (15 attributes, a 7-frame stack trace). Variants:

* plain orjson: ``orjson.dumps`` of the same line dicts, the raw bytes written to a binary
  file and flushed once per batch — the fastest plain JSONL writer of these lines, and the
  baseline of the target (issue 17: the headline must not be read against a slower writer);
* context: the same plain writes with the stdlib's ``json.dumps`` through a text file;
* ``Ledger.append_many``: the same dicts through the ledger (flock, tail read, chain, hash);
* ``LedgerLogExporter.export``: the SDK's records through the ledger exporter (adapter +
  translation + ledger) — the path a log record really takes, and the one issue 6 targets;
* context: the SDK's stock ``ConsoleLogRecordExporter`` writing the same records to a file
  as one-line JSON (``to_json(indent=None)``) — the nearest stock way to put records in a file.

Every batch carries fresh record ids (the ledger skips ids it has seen). Files are truncated
after each segment (untimed) to keep the disk use small; appends do not depend on file size.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks import add_profiles, interleave, profile_top, ratio, round_spread, row, variant

GLOBAL_STATE = False
BATCH = 25

_STACK = (
    "Traceback (most recent call last):\n"
    + "".join(
        f'  File "orchestration/scripts/resurrect_all_citizens.py", line {40 + i}, in step_{i}\n'
        f"    result = step_{i + 1}(citizen_id, attempt=attempt)\n"
        for i in range(7)
    )
    + "ValueError: Bootstrap failed for 17: upstream returned 503\n"
)


def _attributes(rid: str) -> dict[str, Any]:
    return {
        "membrane.record_id": rid,
        "membrane.l2": True,
        "membrane.signal_type": "script_error",
        "membrane.script_name": "resurrect_all_citizens",
        "membrane.script_path": "orchestration/scripts/resurrect_all_citizens.py",
        "membrane.node_id": "code_substrate_orchestration_scripts_resurrect_all_citizens_py",
        "membrane.source": "script:resurrect_all_citizens",
        "membrane.scope": "organizational",
        "membrane.channel": "signals.script.resurrect_all_citizens",
        "membrane.fingerprint": "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a",
        "membrane.dedupe_key": "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b",
        "code.function": "step_6",
        "code.lineno": 46,
        "exception.type": "ValueError",
        "exception.message": "Bootstrap failed for 17: upstream returned 503",
        "exception.stacktrace": _STACK,
    }


def make_records(n: int) -> list[Any]:
    """``n`` SDK log records shaped like setup_l2_logger's errors, each with its own id."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    resource = Resource.create({"service.name": "resurrect_all_citizens"})
    scope = InstrumentationScope("resurrect_all_citizens")
    out = []
    for i in range(n):
        lr = LogRecord(
            timestamp=1_705_180_800_000_000_000 + i,
            observed_timestamp=1_705_180_800_000_000_000 + i,
            trace_id=0x5B8EFFF798038103D269B633813FC60C,
            span_id=0xEEE19B7EC3C1B174,
            severity_text="ERROR",
            severity_number=SeverityNumber.ERROR,
            body=f"Bootstrap failed for {i}",
            attributes=_attributes(os.urandom(12).hex()),
        )
        out.append(ReadableLogRecord(log_record=lr, resource=resource, instrumentation_scope=scope))
    return out


def run(quick: bool) -> dict[str, Any]:
    from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

    from membrane_otel.exporters import LedgerLogExporter
    from membrane_otel.ledger._writer import Ledger

    _stdlib = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
    from membrane_otel.translate._core import log_line
    from membrane_otel.translate._records import log_from_sdk

    rounds, per_round, warmup = (5, 20, 10) if quick else (30, 60, 50)
    total = warmup + rounds * per_round
    # CPU time of this thread (user + system, so the write and flock syscalls count): the
    # variants take 0.2-0.6 ms a batch, and on a busy machine a longer one is preempted by
    # other processes more often, which wall time would charge to it.
    clock = time.thread_time_ns

    with tempfile.TemporaryDirectory(prefix="membrane-bench-ledger-") as tmp:
        d = Path(tmp)
        # Fresh records (and ids) for every batch of every variant, built before any timing.
        recs = {
            name: make_records(total * BATCH) for name in ("plain", "fast", "ledger", "exporter", "stock")
        }
        lines = {
            name: [log_line(log_from_sdk(r)) for r in recs[name]] for name in ("plain", "fast", "ledger")
        }

        plain_path = d / "plain.jsonl"
        plain_file = open(plain_path, "a", encoding="utf-8")
        fast_path = d / "fast.jsonl"
        fast_file = open(fast_path, "ab")
        ledger = Ledger(d / "ledger.jsonl")
        exporter = LedgerLogExporter(d / "exporter.jsonl")
        stock_path = d / "stock.jsonl"
        stock_file = open(stock_path, "a", encoding="utf-8")
        stock = ConsoleLogRecordExporter(out=stock_file, formatter=lambda r: r.to_json(indent=None) + "\n")
        cursor = {"plain": 0, "fast": 0, "ledger": 0, "exporter": 0, "stock": 0}

        def take(name: str, source: list[Any]) -> list[Any]:
            i = cursor[name]
            cursor[name] = i + BATCH
            return source[i : i + BATCH]

        def plain() -> int:
            batch = take("plain", lines["plain"])
            t0 = clock()
            write = plain_file.write
            for obj in batch:
                write(_stdlib(obj) + "\n")
            plain_file.flush()
            return clock() - t0

        def fast() -> int:
            batch = take("fast", lines["fast"])
            t0 = clock()
            write = fast_file.write
            for obj in batch:
                write(orjson.dumps(obj) + b"\n")
            fast_file.flush()
            return clock() - t0

        def chained() -> int:
            batch = take("ledger", lines["ledger"])
            t0 = clock()
            ledger.append_many(batch)
            return clock() - t0

        def exported() -> int:
            batch = take("exporter", recs["exporter"])
            t0 = clock()
            exporter.export(batch)
            return clock() - t0

        def stock_export() -> int:
            batch = take("stock", recs["stock"])
            t0 = clock()
            stock.export(batch)
            return clock() - t0

        def truncate(path: Path) -> Any:
            return lambda: os.truncate(path, 0) if path.exists() else None

        try:
            samples = interleave(
                {
                    "plain": plain,
                    "fast": fast,
                    "ledger": chained,
                    "exporter": exported,
                    "stock": stock_export,
                },
                rounds=rounds,
                per_round=per_round,
                warmup=warmup,
                settle={
                    "plain": truncate(plain_path),
                    "fast": truncate(fast_path),
                    "ledger": truncate(ledger.path),
                    "exporter": truncate(d / "exporter.jsonl"),
                    "stock": truncate(stock_path),
                },
            )
        finally:
            plain_file.close()
            fast_file.close()
            stock_file.close()
            ledger.close()

        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        rate = {k: BATCH / (v / 1e9) for k, v in med.items()}

        def per_batch(name: str, label: str) -> dict[str, Any]:
            v = variant(label, samples[name])
            v["note"] = f"{rate[name]:,.0f} lines/s (median batch of {BATCH})"
            return v

        line_bytes = len(json.dumps(lines["plain"][0], ensure_ascii=False))
        result = row(
            "ledger",
            "Ledger append (flock + hash chain) vs plain buffered writes of the same JSON lines",
            variants=[
                per_batch("plain", "plain buffered writes with stdlib json (context)"),
                per_batch("fast", "plain orjson bytes to a binary file (the baseline)"),
                per_batch("ledger", "Ledger.append_many (same dicts)"),
                per_batch("exporter", "LedgerLogExporter.export (SDK records → translate → ledger)"),
                per_batch("stock", "stock ConsoleLogRecordExporter to a file, one-line JSON (context)"),
            ],
            ratios=[
                ratio(
                    "ledger exporter throughput / plain orjson writes",
                    rate["exporter"] / rate["fast"],
                    0.5,
                    ">=",
                    "issue 6",
                    round_spread(samples["fast"], samples["exporter"], per_round),
                ),
                ratio(
                    "Ledger.append_many throughput / plain orjson writes",
                    rate["ledger"] / rate["fast"],
                    0.5,
                    ">=",
                    "issue 6",
                    round_spread(samples["fast"], samples["ledger"], per_round),
                ),
                ratio(
                    "ledger exporter throughput / plain stdlib json writes (context)",
                    rate["exporter"] / rate["plain"],
                    None,
                    ">=",
                    spread=round_spread(samples["plain"], samples["exporter"], per_round),
                ),
                ratio(
                    "ledger exporter throughput / stock SDK file exporter (context)",
                    rate["exporter"] / rate["stock"],
                    None,
                    ">=",
                    spread=round_spread(samples["stock"], samples["exporter"], per_round),
                ),
            ],
            note=f"Thread CPU time per batch of {BATCH} lines (~{line_bytes} bytes each, error records with a "
            "7-frame stack trace).",
        )

        prof_recs = make_records(200 * BATCH)

        def profile_exporter() -> str:
            it = iter(range(0, len(prof_recs), BATCH))

            def one() -> None:
                i = next(it)
                exporter.export(prof_recs[i : i + BATCH])

            return profile_top(one, 100)

        def profile_ledger() -> str:
            prof_lines = [log_line(log_from_sdk(r)) for r in prof_recs]
            it = iter(range(0, len(prof_lines), BATCH))

            def one() -> None:
                i = next(it)
                ledger.append_many(prof_lines[i : i + BATCH])

            return profile_top(one, 150)

        return add_profiles(
            result,
            {
                "ledger exporter throughput / plain orjson writes": profile_exporter,
                "Ledger.append_many throughput / plain orjson writes": profile_ledger,
            },
        )
