"""The pipeline watchdog: alerts on thresholds, SLO breaches, health report, OTel metrics, readiness."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from membrane_otel._internal.batching import BatchLogProcessor
from membrane_otel._internal.counters import get_metrics
from membrane_otel.ops._watchdog import PipelineWatchdog, check_readiness, pipeline_figures
from tests._bus_helpers import BusProcess, free_port
from tests._helpers import clean_env, read_ledger, wait_for


class Events:
    """Collects what the watchdog emits."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, attrs: dict[str, Any]) -> None:
        self.items.append((name, attrs))

    def names(self) -> list[tuple[str, str]]:
        return [(n, a["alert"]) for n, a in self.items]


class Figures:
    """A settable get_metrics() reading, for the threshold logic alone."""

    def __init__(self, **values: int) -> None:
        self.values = dict(values)

    def __call__(self) -> dict[str, int]:
        return dict(self.values)


class BlockingExporter(LogRecordExporter):
    """An exporter that holds its first batch until released, so the queue behind it fills."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported = 0

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.release.wait(30)
        self.exported += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@pytest.fixture
def meter() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def test_a_real_queue_over_its_threshold_raises_then_resolves_one_alert(meter: Any) -> None:
    """Filling a batch queue past queue_warn raises alert_triggered once; draining it resolves it."""
    exporter = BlockingExporter()
    processor = BatchLogProcessor(
        exporter, max_queue_size=1000, max_export_batch_size=10, schedule_delay_millis=10
    )
    logs = LoggerProvider()
    logs.add_log_record_processor(processor)
    events = Events()
    # The counters are process-wide: other tests' queues and drops are part of the reading, so
    # the threshold sits above what is queued already and only queue_depth alerts are looked at.
    base = get_metrics()["queue_depth"]
    dog = PipelineWatchdog(
        queue_warn=base + 100, queue_critical=base + 900, emit=events, meter_provider=meter[0]
    )
    queue_alerts = lambda: [x for x in events.names() if x[1] == "queue_depth"]  # noqa: E731
    try:
        logger = logs.get_logger("flood")
        for i in range(300):
            logger.emit(body=f"record {i}")
        wait_for(lambda: get_metrics()["queue_depth.logs.blocking"] >= 250)
        dog.check_once()
        dog.check_once()  # the condition still holds: no second event
        assert queue_alerts() == [("alert_triggered", "queue_depth")]
        (alert,) = [a for n, a in events.items if a["alert"] == "queue_depth"]
        assert alert["level"] == "warn" and alert["value"] >= 250
        exporter.release.set()
        assert processor.force_flush(10_000)
        dog.check_once()
        assert queue_alerts() == [("alert_triggered", "queue_depth"), ("alert_resolved", "queue_depth")]
        assert dog.slo_breaches["queue_depth"] == 2
        assert exporter.exported == 300
    finally:
        exporter.release.set()
        logs.shutdown()


def test_escalation_to_critical_is_a_new_trigger_and_never_repeats(meter: Any) -> None:
    """warn → critical raises a second alert_triggered naming the previous severity; holding raises none."""
    read, events = Figures(queue_depth=1200), Events()
    dog = PipelineWatchdog(read_metrics=read, emit=events, meter_provider=meter[0])
    dog.check_once()
    read.values["queue_depth"] = 6000
    dog.check_once()
    dog.check_once()
    read.values["queue_depth"] = 10
    dog.check_once()
    dog.check_once()
    assert [(n, a["level"]) for n, a in events.items] == [
        ("alert_triggered", "warn"),
        ("alert_triggered", "critical"),
        ("alert_resolved", "critical"),
    ]
    assert events.items[1][1]["previous_level"] == "warn"
    assert events.items[2][1]["duration_s"] >= 0
    assert dog.slo_breaches == {"queue_depth": 3}


def test_new_drops_failures_and_spooling_alert_until_a_quiet_interval(meter: Any) -> None:
    """Counters that grew since the last check raise alerts; a check with no growth resolves them."""
    read, events = Figures(dropped_logs=0, export_failed=0, spool_writes=0), Events()
    # The spool's depth and the bus choice are injected: the process-wide publisher of other
    # tests must not decide whether the spooling alert may resolve.
    dog = PipelineWatchdog(
        read_metrics=read,
        emit=events,
        meter_provider=meter[0],
        spool_waiting=lambda: 0,
        bus_chosen=lambda: True,
    )
    dog.check_once()
    read.values.update(dropped_logs=5, export_failed=2, spool_writes=40)
    dog.check_once()
    assert sorted(events.names()) == [
        ("alert_triggered", "export_failed"),
        ("alert_triggered", "records_dropped"),
        ("alert_triggered", "spooling"),
    ]
    dropped = next(a for n, a in events.items if a["alert"] == "records_dropped")
    assert dropped["value"] == 5
    events.items.clear()
    dog.check_once()  # nothing new
    assert sorted(events.names()) == [
        ("alert_resolved", "export_failed"),
        ("alert_resolved", "records_dropped"),
        ("alert_resolved", "spooling"),
    ]


def test_slow_exports_alert_on_latency(meter: Any) -> None:
    """The exporters' latest export duration above latency_warn_s raises export_latency."""
    read, events = (
        Figures(**{"export_latency_ms.logs.ledger": 1500, "export_latency_ms.spans.ledger": 3}),
        Events(),
    )
    dog = PipelineWatchdog(read_metrics=read, emit=events, latency_warn_s=1.0, meter_provider=meter[0])
    figures = dog.check_once()
    assert figures["export_latency_s"] == 1.5
    assert events.names() == [("alert_triggered", "export_latency")]


def test_health_report_has_the_seed_telemetry_shape(meter: Any) -> None:
    """get_health_report() tells healthy/status, the figures, active alerts and SLO breach counts."""
    read = Figures(queue_depth=6000, exported=10, published=5, dropped_count=1)
    dog = PipelineWatchdog(read_metrics=read, emit=Events(), meter_provider=meter[0])
    assert dog.get_health_report()["checks"] == 0
    dog.check_once()
    report = dog.get_health_report()
    assert report["healthy"] is False and report["status"] == "critical"
    assert report["figures"]["exported"] == 15 and report["figures"]["dropped"] == 1
    assert {a["name"] for a in report["active_alerts"]} == {"queue_depth", "records_dropped"}
    assert report["slo_breaches_total"] == 2
    assert report["thresholds"]["queue_warn"] == 1000
    json.dumps(report)  # it is a plain, serialisable document


def test_start_checks_every_interval_on_a_daemon_thread_and_stop_is_idempotent(meter: Any) -> None:
    """start() checks at once and then every interval_s; stop() ends the thread, twice is fine."""
    read = Figures(queue_depth=0)
    dog = PipelineWatchdog(interval_s=0.02, read_metrics=read, emit=Events(), meter_provider=meter[0])
    dog.start()
    dog.start()
    wait_for(lambda: dog.get_health_report()["checks"] >= 3)
    dog.stop()
    dog.stop()
    checks = dog.get_health_report()["checks"]
    time.sleep(0.1)  # nothing may run after stop(); a short look suffices
    assert dog.get_health_report()["checks"] == checks
    assert not any(t.name == "membrane-watchdog" and t.is_alive() for t in threading.enumerate())


def test_a_failing_reader_does_not_kill_the_thread(meter: Any) -> None:
    """A reading that raises is logged; the next interval checks again."""
    calls = {"n": 0}

    def flaky() -> dict[str, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return {"queue_depth": 0}

    dog = PipelineWatchdog(interval_s=0.02, read_metrics=flaky, emit=Events(), meter_provider=meter[0])
    dog.start()
    try:
        wait_for(lambda: dog.get_health_report()["checks"] >= 2)
    finally:
        dog.stop()


def test_figures_are_otel_metrics(meter: Any) -> None:
    """Queue depth, latency, produced/exported/dropped/spooled/failed and breaches reach a metric reader."""
    provider, reader = meter
    read = Figures(
        **{
            "queue_depth": 1500,
            "queue_depth.logs.ledger": 1200,
            "export_latency_ms.logs.ledger": 250,
            "produced_logs": 100,
            "exported": 80,
            "published": 7,
            "dropped_logs": 20,
            "spool_writes": 3,
            "export_failed": 1,
            "suppressed": 9,
        }
    )
    dog = PipelineWatchdog(read_metrics=read, emit=Events(), meter_provider=provider)
    dog.check_once()
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, dict[str, float]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "membrane_otel"
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    label = ",".join(f"{v}" for v in (p.attributes or {}).values()) or "-"
                    points.setdefault(metric.name, {})[label] = p.value
    assert points["membrane_otel.queue.depth"] == {"logs.ledger": 1200, "bus": 300}
    assert points["membrane_otel.export.latency"] == {"logs.ledger": 0.25}
    assert points["membrane_otel.translate._records.produced"] == {"logs": 100}
    assert points["membrane_otel.translate._records.exported"] == {"logs": 80, "spans": 0, "bus": 7}
    assert points["membrane_otel.translate._records.dropped"] == {"logs": 20, "spans": 0, "bus": 0}
    assert points["membrane_otel.translate._records.spooled"] == {"bus": 3}
    assert points["membrane_otel.translate._records.failed"] == {"-": 1}
    assert points["membrane_otel.translate._records.suppressed"] == {"bus": 9}
    breached = {"queue_depth": 1, "records_dropped": 1, "export_failed": 1, "spooling": 1}
    assert points["membrane_otel.ops._watchdog.slo_breaches"] == breached
    assert points["membrane_otel.ops._watchdog.alerts.active"] == {"-": 4}


def test_pipeline_figures_sum_the_counters() -> None:
    """Figures combine the per-path counters the way the accounting promise reads them."""
    f = pipeline_figures({"exported": 3, "exported_spans": 4, "published": 5, "export_errors.logs.x": 2})
    assert f["exported"] == 12 and f["failed"] == 2 and f["export_latency_s"] == 0.0


def test_bad_thresholds_are_refused() -> None:
    """queue_warn above queue_critical, or a zero interval, is a ValueError at construction."""
    with pytest.raises(ValueError, match="queue_warn"):
        PipelineWatchdog(queue_warn=10, queue_critical=5)
    with pytest.raises(ValueError, match="interval"):
        PipelineWatchdog(interval_s=0)


def test_alerts_land_in_the_ledger_as_events(tmp_path: Path) -> None:
    """With the default emitter, alert_triggered / alert_resolved are ledger lines of a configured app."""
    code = """
import membrane_otel
from membrane_otel.ops._watchdog import PipelineWatchdog
membrane_otel.configure()
values = {"queue_depth": 2000}
dog = PipelineWatchdog(read_metrics=lambda: dict(values))
dog.check_once(); dog.check_once()
values["queue_depth"] = 0
dog.check_once()
membrane_otel.force_flush()
"""
    env = clean_env(tmp_path, OTEL_LOGS_EXPORTER="ledger", OTEL_TRACES_EXPORTER="none")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"].startswith("alert_")]
    assert [(ln["event"], ln["alert"]) for ln in lines] == [
        ("alert_triggered", "queue_depth"),
        ("alert_resolved", "queue_depth"),
    ]
    assert lines[0]["threshold"] == 1000
    assert "pipeline alert_triggered" in done.stderr  # and one readable warning for the user


class _Health(http.server.BaseHTTPRequestHandler):
    ready = {"/ready": 200, "/health": 200}

    def do_GET(self) -> None:
        code = self.ready.get(self.path, 404)
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("H", (_Health,), {"ready": dict(_Health.ready)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_readiness_of_bus_bridge_and_collector(http_server: Any) -> None:
    """A running bus, a bridge answering /ready and a Collector health URL are all ready."""
    base, _ = http_server
    with BusProcess() as bus:
        ready = check_readiness(
            5,
            bus_url=bus.url,
            bridge_url=base,
            collector_health_url=f"{base}/health",
            components=("bus", "bridge", "collector"),
        )
    assert ready == {"bus": True, "bridge": True, "collector": True}


def test_readiness_reports_what_is_down_by_the_deadline(http_server: Any) -> None:
    """A bus nobody runs and a bridge answering 503 are not ready; the call returns by its deadline."""
    base, handler = http_server
    handler.ready["/ready"] = 503
    started = time.monotonic()
    ready = check_readiness(
        1.0,
        bus_url=f"ws://127.0.0.1:{free_port()}/api/ws",
        bridge_url=base,
        read_metrics=dict,
        poll_interval_s=0.1,
        probe_timeout_s=0.5,
    )
    assert ready["bus"] is False and ready["bridge"] is False
    assert "collector" not in ready  # not configured, not asked
    assert time.monotonic() - started < 4


def test_readiness_waits_for_a_bus_that_comes_up(tmp_path: Path) -> None:
    """check_readiness polls: a bus started after the call began is found ready."""
    port = free_port()
    bus = BusProcess(port)
    timer = threading.Timer(0.5, bus.start)
    timer.start()
    try:
        ready = check_readiness(
            15, bus_url=f"ws://127.0.0.1:{port}/api/ws", poll_interval_s=0.1, components=("bus",)
        )
        assert ready == {"bus": True}
    finally:
        timer.join()
        bus.stop()


def test_exporters_are_ready_in_a_configured_app_and_not_after_shutdown(tmp_path: Path) -> None:
    """In a configured process the exporters are ready; once shut down their workers are gone."""
    code = """
import json, membrane_otel
from membrane_otel.ops._watchdog import check_readiness
membrane_otel.configure()
before = check_readiness(2)
membrane_otel.shutdown()
after = check_readiness(0.3, poll_interval_s=0.1)
print(json.dumps([before, after]))
"""
    env = clean_env(tmp_path, OTEL_LOGS_EXPORTER="ledger", OTEL_TRACES_EXPORTER="ledger")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == {"exporters": True}
    assert after == {"exporters": False}


def test_the_process_watchdog_feeds_the_global_meter_from_real_counters(tmp_path: Path) -> None:
    """start_watchdog() in a configured app: its figures reach a metric reader on the global provider."""
    code = """
import json, logging, membrane_otel
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
membrane_otel.configure()
from membrane_otel.ops._watchdog import start_watchdog, stop_watchdog
dog = start_watchdog()
assert start_watchdog() is dog
for i in range(7):
    logging.getLogger("app").warning("w %d", i)
membrane_otel.force_flush()
names = {}
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            names[m.name] = {",".join(map(str, (p.attributes or {}).values())) or "-": p.value for p in m.data.data_points}
stop_watchdog(); stop_watchdog()
print(json.dumps({"interval": dog.interval_s, "metrics": names}))
"""
    env = clean_env(
        tmp_path, OTEL_LOGS_EXPORTER="ledger", OTEL_TRACES_EXPORTER="none", MEMBRANE_WATCHDOG_INTERVAL="7"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["interval"] == 7
    got = report["metrics"]
    assert got["membrane_otel.translate._records.produced"] == {"logs": 7}
    assert got["membrane_otel.translate._records.exported"]["logs"] == 7
    assert got["membrane_otel.queue.depth"]["logs.ledger"] == 0
    assert "logs.ledger" in got["membrane_otel.export.latency"]
