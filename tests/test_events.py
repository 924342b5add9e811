"""Ledger events: emit_event and the seed's wrappers, through OTel and directly."""

from __future__ import annotations

import datetime as dt
import json
import logging
import selectors
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry._logs import NoOpLogger, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from membrane_otel._internal import counters
from membrane_otel._internal.batching import BatchLogProcessor
from membrane_otel.exporters import LedgerLogExporter
from membrane_otel.ledger._events import EVENT_CATEGORIES, KNOWN_EVENTS, EventEmitter, category_of
from membrane_otel.ledger._reader import read_lines
from membrane_otel.ledger._verify import verify
from membrane_otel.ledger._writer import Ledger
from membrane_otel.logs._processors import MembraneLogProcessor, configured_value_redactor
from tests._helpers import BIN, clean_env, read_ledger, wait_for

T0 = 1_761_800_000_000_000_000  # 2025-10-30T04:53:20Z, the seed's date
CHAIN = ("seq", "prev_hash", "hash")
VOLATILE = ("ts", "ts_unix", "record_id", *CHAIN)


def _clock() -> int:
    return T0


def _direct(path: Path) -> EventEmitter:
    """An emitter with no OTel pipeline: it writes the ledger itself."""
    return EventEmitter(logger=NoOpLogger("test"), ledger=Ledger(path), clock=_clock, service="svc")


@pytest.fixture
def otel(tmp_path: Path) -> Iterator[tuple[EventEmitter, LoggerProvider]]:
    """An emitter on a private SDK pipeline: our processor, our batch processor, the ledger exporter."""
    provider = LoggerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_log_record_processor(MembraneLogProcessor(configured_value_redactor()))
    provider.add_log_record_processor(
        BatchLogProcessor(
            LedgerLogExporter(tmp_path / "otel.jsonl"),
            max_queue_size=1000,
            schedule_delay_millis=250,
            max_export_batch_size=25,
        )
    )
    yield EventEmitter(logger=provider.get_logger("membrane_otel.ledger._events"), clock=_clock), provider
    provider.shutdown()


def _seed_examples(em: EventEmitter) -> None:
    """The seed's four examples (task lifecycle, alert, migration, monitoring snapshot) and the old API."""
    em.emit(
        "task_started", {"goal": "AGI 기억 설명", "priority": "high"}, task_id="demo-001", persona_id="gitko"
    )
    em.task_lifecycle(
        "completed", "demo-001", quality=0.85, confidence=0.78, evidence_added=5, cache_hit=True
    )
    em.alert("warning", "Proxy port not responding", component="proxy", port=18091)
    em.system_event("migration", "D to C drive", reason="SSD_performance", status="completed")
    em.monitoring_snapshot({"confidence": 0.786, "quality": 0.691, "second_pass_rate": 0.137})
    em.append_ledger({"event": "eval", "task_id": "demo-001", "quality": 0.85})


def _check_seed_lines(lines: list[dict[str, Any]]) -> None:
    stable = [{k: v for k, v in ln.items() if k not in VOLATILE} for ln in lines]
    base = {"otel_trace_id": None, "otel_span_id": None, "service": "svc"}
    assert stable == [
        {"event": "task_started", "task_id": "demo-001", "persona_id": "gitko", **base,
         "goal": "AGI 기억 설명", "priority": "high"},
        {"event": "task_completed", "task_id": "demo-001", **base,
         "quality": 0.85, "confidence": 0.78, "evidence_added": 5, "cache_hit": True},
        {"event": "alert_triggered", **base, "level": "warning", "message": "Proxy port not responding",
         "component": "proxy", "port": 18091},
        {"event": "migration", **base, "description": "D to C drive", "reason": "SSD_performance",
         "status": "completed"},
        {"event": "monitoring_snapshot", **base, "confidence": 0.786, "quality": 0.691, "second_pass_rate": 0.137},
        {"event": "eval", "task_id": "demo-001", **base, "quality": 0.85},
    ]  # fmt: skip
    for ln in lines:
        assert list(ln)[:3] == ["event", "ts", "ts_unix"] and list(ln)[-3:] == list(CHAIN)
        assert ln["ts"] == "2025-10-30T04:53:20.000Z" and ln["ts_unix"] == T0 / 1e9


def test_seed_examples_written_directly(tmp_path: Path) -> None:
    """With no OTel pipeline, the seed's examples become the expected ledger lines."""
    em = _direct(tmp_path / "l.jsonl")
    _seed_examples(em)
    _check_seed_lines(read_ledger(tmp_path / "l.jsonl"))
    assert verify(tmp_path / "l.jsonl").ok


def test_seed_examples_through_otel(otel: tuple[EventEmitter, LoggerProvider], tmp_path: Path) -> None:
    """Through the SDK pipeline and the ledger exporter, the same examples give the same lines."""
    em, provider = otel
    _seed_examples(em)
    assert provider.force_flush()
    _check_seed_lines(read_ledger(tmp_path / "otel.jsonl"))


def test_payload_values_become_json(tmp_path: Path) -> None:
    """Dates, sets, bytes, paths and nested values are written as JSON, nothing dropped."""
    em = _direct(tmp_path / "l.jsonl")
    when = dt.datetime(2025, 10, 30, 12, 0, tzinfo=dt.UTC)
    em.emit("eval", {"when": when, "tags": {"a"}, "raw": b"\x01\x02", "p": Path("/x"), "n": {"k": [1, None]}})
    (line,) = read_ledger(tmp_path / "l.jsonl")
    assert line["when"] == "2025-10-30T12:00:00+00:00" and line["tags"] == ["a"]
    assert line["raw"] == "0102" and line["p"] == "/x" and line["n"] == {"k": [1, None]}


def test_reserved_payload_names_are_kept_prefixed(tmp_path: Path) -> None:
    """A payload field named like a line field (ts, seq) is kept as payload_<name>."""
    em = _direct(tmp_path / "l.jsonl")
    em.append_ledger({"event": "eval", "ts": "old-ts", "seq": 5})
    (line,) = read_ledger(tmp_path / "l.jsonl")
    assert line["payload_ts"] == "old-ts" and line["payload_seq"] == 5 and line["seq"] == 1


def test_secrets_in_payload_are_redacted_on_both_paths(
    otel: tuple[EventEmitter, LoggerProvider], tmp_path: Path
) -> None:
    """A payload field named like a secret, or holding a token, never reaches the ledger."""
    payload = {"password": "hunter2", "note": "Authorization: Bearer abc.def.ghi", "user": "ann"}
    _direct(tmp_path / "l.jsonl").emit("configuration_change", payload)
    em, provider = otel
    em.emit("configuration_change", payload)
    provider.force_flush()
    for path in (tmp_path / "l.jsonl", tmp_path / "otel.jsonl"):
        text = path.read_text()
        assert "hunter2" not in text and "abc.def.ghi" not in text
        (line,) = read_ledger(path)
        assert line["user"] == "ann" and "<REDACTED>" in line["password"]


def test_direct_line_carries_the_active_span(tmp_path: Path) -> None:
    """An event emitted inside a span names its trace and span, to find it in Jaeger."""
    tracer = TracerProvider().get_tracer("t")
    em = _direct(tmp_path / "l.jsonl")
    with tracer.start_as_current_span("op") as span:
        em.emit("eval", {"q": 1})
    ctx = span.get_span_context()
    (line,) = read_ledger(tmp_path / "l.jsonl")
    assert line["otel_trace_id"] == format(ctx.trace_id, "032x")
    assert line["otel_span_id"] == format(ctx.span_id, "016x")


def test_lifecycle_stages_map_to_event_names(tmp_path: Path) -> None:
    """started/start → task_started, completed/done → task_completed, failed/error → task_failed."""
    em = _direct(tmp_path / "l.jsonl")
    for stage in ("started", "start", "completed", "done", "failed", "error"):
        em.task_lifecycle(stage, "t1")
    assert [ln["event"] for ln in read_ledger(tmp_path / "l.jsonl")] == [
        "task_started", "task_started", "task_completed", "task_completed", "task_failed", "task_failed",
    ]  # fmt: skip


def test_alert_severity_follows_its_level() -> None:
    """emit_alert's record has the severity of its level (warning → WARN, critical → FATAL)."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    em = EventEmitter(logger=provider.get_logger("t"), redact=lambda v: v)
    em.alert("warning", "w")
    em.alert("critical", "c")
    em.emit("eval", {})
    records = [r.log_record for r in exporter.get_finished_logs()]
    assert [(r.event_name, r.severity_number) for r in records] == [
        ("alert_triggered", SeverityNumber.WARN),
        ("alert_triggered", SeverityNumber.FATAL),
        ("eval", SeverityNumber.INFO),
    ]
    provider.shutdown()


def test_unknown_event_type_warns_once_and_is_recorded(tmp_path: Path) -> None:
    """A name outside EVENT_CATEGORIES is written, with one warning per name."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("membrane_otel.ledger._events")
    logger.addHandler(handler)
    try:
        em = _direct(tmp_path / "l.jsonl")
        for _ in range(3):
            em.emit("made_up_event", {})
        em.emit("narrative.dispatch", {})  # a known family: no warning
        em.emit("task_started", {})
    finally:
        logger.removeHandler(handler)
    assert len(seen) == 1 and "made_up_event" in seen[0]
    assert [ln["event"] for ln in read_ledger(tmp_path / "l.jsonl")].count("made_up_event") == 3


def test_a_failure_to_log_never_raises(tmp_path: Path) -> None:
    """An unwritable ledger, a bad payload or a failing redactor: False and a count, never an exception."""
    (tmp_path / "dir.jsonl").mkdir()
    before = counters.get("emit_failed")
    assert _direct(tmp_path / "dir.jsonl").emit("eval", {"q": 1}) is False
    assert _direct(tmp_path / "l.jsonl").emit("eval", [1, 2]) is False

    def broken(value: Any) -> Any:
        raise RuntimeError("redactor down")

    em = EventEmitter(logger=NoOpLogger("t"), ledger=Ledger(tmp_path / "l.jsonl"), redact=broken)
    assert em.emit("eval", {}) is False
    assert _direct(tmp_path / "l.jsonl").append_ledger(42) is False
    assert counters.get("emit_failed") == before + 4


def test_event_categories_are_the_seeds_documented_set() -> None:
    """50+ known names in categories, every seed example among them; prefixes for narratives."""
    assert len(KNOWN_EVENTS) >= 50
    assert sum(len(v) for v in EVENT_CATEGORIES.values()) == len(KNOWN_EVENTS)  # no name in two categories
    for name in ("task_started", "eval", "evidence_correction", "health_check", "migration",
                 "alert_triggered", "session_harvest_completed", "chatops_command", "system_startup"):  # fmt: skip
        assert name in KNOWN_EVENTS
    assert category_of("migration") == "infrastructure"
    assert category_of("narrative.shed_load") == "narrative"
    assert category_of("nope") is None


# --------------------------------------------------------------------------- real processes

MODULE_API = textwrap.dedent(
    """
    import sys
    import membrane_otel
    from membrane_otel.ledger._events import (
        append_ledger, emit_alert, emit_event, emit_monitoring_snapshot, emit_system_event, emit_task_lifecycle,
    )

    if sys.argv[1] == "configured":
        membrane_otel.configure()
    emit_event("task_started", {"goal": "AGI", "priority": "high"}, task_id="demo-001", persona_id="gitko")
    emit_task_lifecycle("completed", "demo-001", quality=0.85, confidence=0.78)
    emit_alert("warning", "Proxy port not responding", component="proxy", port=18091)
    emit_system_event("migration", "D to C drive", reason="SSD_performance", status="completed")
    emit_monitoring_snapshot({"confidence": 0.786, "quality": 0.691})
    append_ledger({"event": "eval", "task_id": "demo-001", "quality": 0.85})
    if sys.argv[1] == "configured":
        membrane_otel.shutdown()
    from membrane_otel._internal import counters
    print(counters.get("ledger_direct"))
    """
)


@pytest.mark.parametrize("mode", ["configured", "unconfigured"])
def test_module_api_reaches_the_ledger(tmp_path: Path, mode: str) -> None:
    """The module functions write the seed's lines whether or not OTel was configured."""
    script = tmp_path / "app.py"
    script.write_text(MODULE_API)
    env = clean_env(tmp_path, OTEL_LOGS_EXPORTER="ledger", OTEL_SERVICE_NAME="app")
    proc = subprocess.run(
        [sys.executable, str(script), mode], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("0" if mode == "configured" else "6")  # written directly, or not
    lines = read_ledger(tmp_path / "ledger.jsonl")
    assert [ln["event"] for ln in lines] == [
        "task_started", "task_completed", "alert_triggered", "migration", "monitoring_snapshot", "eval",
    ]  # fmt: skip
    assert lines[0]["goal"] == "AGI" and lines[0]["persona_id"] == "gitko"
    assert lines[2]["port"] == 18091 and lines[3]["status"] == "completed"
    assert lines[4]["confidence"] == 0.786 and lines[5]["quality"] == 0.85
    assert {ln["service"] for ln in lines} == {"app"}
    assert verify(tmp_path / "ledger.jsonl").ok


GAUGES = textwrap.dedent(
    """
    import json
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from membrane_otel.ledger._events import emit_monitoring_snapshot

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    emit_monitoring_snapshot({"confidence": 0.786, "cpu_percent": 12, "label": "x"}, session_id="s1")
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    points[m.name] = [p.value, dict(p.attributes)]
    print(json.dumps(points))
    """
)


def test_monitoring_snapshot_records_gauges(tmp_path: Path) -> None:
    """Each numeric value of a snapshot is also an OTel gauge data point monitoring.<name>."""
    script = tmp_path / "gauges.py"
    script.write_text(GAUGES)
    proc = subprocess.run(
        [sys.executable, str(script)], env=clean_env(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "monitoring.confidence": [0.786, {"session_id": "s1"}],
        "monitoring.cpu_percent": [12, {"session_id": "s1"}],
    }
    (line,) = read_ledger(tmp_path / "ledger.jsonl")
    assert line["label"] == "x" and line["session_id"] == "s1"


REALTIME = textwrap.dedent(
    """
    import sys, time
    import membrane_otel
    from membrane_otel.ledger._events import emit_event

    membrane_otel.configure()
    emit_event("task_started", {"goal": "realtime"}, task_id="rt-1")
    print(time.time(), flush=True)
    sys.stdin.readline()  # stay alive (no shutdown flush) until the test has seen the line
    """
)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output within {timeout}s")
    return proc.stdout.readline()


def test_event_is_on_disk_and_tailed_within_one_second(tmp_path: Path) -> None:
    """Default settings: the line reaches disk and `ledger tail -f` on its own, while the app runs."""
    env = clean_env(tmp_path, OTEL_LOGS_EXPORTER="ledger")
    ledger = tmp_path / "ledger.jsonl"
    cli = str(BIN / "membrane-otel")
    subprocess.run([cli, "emit", "system_startup", "-p", "component=test"], env=env, check=True)
    tail = subprocess.Popen(
        [cli, "ledger", "tail", "-f", "-n", "1", "--json"], env=env, stdout=subprocess.PIPE, text=True
    )
    app = tmp_path / "app.py"
    app.write_text(REALTIME)
    proc = subprocess.Popen(
        [sys.executable, str(app)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert json.loads(_read_line(tail, 30))["event"] == "system_startup"  # tail is following now
        emitted = float(_read_line(proc, 60))

        def on_disk() -> bool:
            return any(ln.get("goal") == "realtime" for ln in read_lines(ledger))

        wait_for(on_disk, timeout=5, interval=0.01)
        disk_delay = time.time() - emitted
        shown = json.loads(_read_line(tail, 5))
        tail_delay = time.time() - emitted
        assert shown["event"] == "task_started" and shown["task_id"] == "rt-1"
        print(f"on disk after {disk_delay:.3f}s, shown by tail -f after {tail_delay:.3f}s")
        # The 1 s target itself is a speed figure, measured in benchmarks/ (row e2e: emit_event
        # p99); here, on a shared machine, the behaviour: the line gets out on its own, while the
        # app is still running (no flush, no exit), well inside a few flush periods.
        assert disk_delay < 3.0, f"on disk after {disk_delay:.3f}s"
        assert tail_delay < 3.0, f"tail -f showed it after {tail_delay:.3f}s"
    finally:
        for p in (proc, tail):
            p.kill()
            p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
