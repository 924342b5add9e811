"""seeds/002: the Layer 2 watchdog over the user's components, the facade, Clarity fields, chaos CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from membrane_otel.ops._components import Layer2Watchdog
from membrane_otel.ops._watchdog import PipelineWatchdog
from membrane_otel.testing import capture
from tests._helpers import clean_env, read_ledger


class Orchestrator:
    def __init__(self) -> None:
        self.queue_depth = 10
        self.workers = 8
        self.dispatched = 0

    def probe(self) -> dict[str, Any]:
        return {"queue_depth": self.queue_depth, "worker_count": self.workers, "dispatched": self.dispatched}


def _watchdog() -> tuple[
    Layer2Watchdog, list[tuple[str, dict[str, Any]]], list[dict[str, Any]], list[float], InMemoryMetricReader
]:
    events: list[tuple[str, dict[str, Any]]] = []
    stories: list[dict[str, Any]] = []
    now = [1000.0]
    reader = InMemoryMetricReader()
    wd = Layer2Watchdog(
        emit=lambda name, attrs: events.append((name, attrs)),
        narrate=lambda **kw: stories.append(kw),
        clock=lambda: now[0],
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    return wd, events, stories, now, reader


def test_alerts_are_raised_once_and_resolved_once() -> None:
    """A queue over critical raises one alert for as long as it holds, and one resolution."""
    wd, events, stories, now, _ = _watchdog()
    orch = Orchestrator()
    wd.register_component(
        "htm_orchestrator", orch.probe, thresholds={"queue_depth": {"warn": 1000, "critical": 5000}}
    )
    asyncio.run(wd.check_once())
    orch.queue_depth = 6000
    for _ in range(3):
        now[0] += 15
        asyncio.run(wd.check_once())
    orch.queue_depth = 20
    for _ in range(2):
        now[0] += 15
        asyncio.run(wd.check_once())
    names = [n for n, _ in events]
    assert names == ["alert_triggered", "alert_resolved"]
    assert events[0][1]["component"] == "htm_orchestrator" and events[0][1]["level"] == "critical"
    assert events[1][1]["duration_s"] == 45.0
    assert [s["what"] for s in stories] == ["raise_alert", "resolve_alert"], "each alert is narrated"
    assert wd.get_health_report()["slo_breaches"] == {"htm_orchestrator": 3}


def test_min_and_rate_thresholds_and_async_probes() -> None:
    """Too few subscriptions (min) and too slow a dispatch rate (min_rate); async probes count."""
    wd, events, _, now, _ = _watchdog()
    orch = Orchestrator()

    async def mesh() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"subscriptions": 3, "event_queue_depth": 45}

    wd.register_component("trigger_mesh", mesh, thresholds={"subscriptions": {"min": 5}})
    wd.register_component("scheduler", orch.probe, thresholds={"dispatched": {"min_rate": 1.0}})
    asyncio.run(wd.check_once())
    now[0] += 15
    orch.dispatched += 5  # 5 in 15 s: 0.33/s < 1/s
    telemetry = asyncio.run(wd.check_once())
    alerts = {(a["component"], a["alert"]) for n, a in events if n == "alert_triggered"}
    assert alerts == {("trigger_mesh", "subscriptions_low"), ("scheduler", "dispatched_rate")}
    assert telemetry["layer"] == "layer2_orchestration"
    assert telemetry["components"]["trigger_mesh"] == {
        "ready": True, "healthy": True, "subscriptions": 3, "event_queue_depth": 45, "slo_breaches": 2,
    }  # fmt: skip


def test_a_failing_probe_is_unhealthy_and_not_ready() -> None:
    """A probe that raises is a critical finding; readiness says False after the timeout."""
    wd, events, _, _, _ = _watchdog()

    def broken() -> dict[str, Any]:
        raise ConnectionError("policy engine down")

    wd.register_component("event_policy", broken)
    wd.register_component("htm_orchestrator", Orchestrator().probe)
    ready = asyncio.run(wd.check_readiness(timeout_seconds=0.2))
    assert ready == {"event_policy": False, "htm_orchestrator": True}
    telemetry = asyncio.run(wd.check_once())
    assert telemetry["components"]["event_policy"]["healthy"] is False
    assert "ConnectionError" in telemetry["components"]["event_policy"]["error"]
    assert events[0][1]["level"] == "critical"


def test_component_figures_are_otel_metrics() -> None:
    """Each thresholded figure is an OTel gauge with a component attribute; breaches a counter."""
    wd, _, _, _, reader = _watchdog()
    wd.register_component("htm_orchestrator", Orchestrator().probe, thresholds={"queue_depth": {"warn": 5}})
    asyncio.run(wd.check_once())
    data = reader.get_metrics_data()
    points = {
        m.name: [(dict(p.attributes or {}), p.value) for p in m.data.data_points]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert points["membrane_otel.component.queue_depth"] == [({"component": "htm_orchestrator"}, 10.0)]
    assert points["membrane_otel.component.slo_breaches"][0][1] == 1


def test_bad_thresholds_are_refused_with_a_clear_message() -> None:
    """A misspelt threshold kind names itself."""
    wd, *_ = _watchdog()
    with pytest.raises(ValueError, match="'maximum'"):
        wd.register_component("x", dict, thresholds={"q": {"maximum": 3}})


def test_spooling_alert_holds_while_the_spool_is_not_empty() -> None:
    """The pipeline's spooling alert resolves when the spool empties, not when spooling pauses."""
    metrics = {"spool_writes": 0}
    waiting = [0]
    events: list[str] = []
    wd = PipelineWatchdog(
        read_metrics=lambda: dict(metrics),
        emit=lambda name, attrs: events.append(name),
        spool_waiting=lambda: waiting[0],
        bus_chosen=lambda: True,
        meter_provider=MeterProvider(),
    )
    wd.check_once()
    metrics["spool_writes"] = 10
    waiting[0] = 10
    wd.check_once()
    wd.check_once()  # nothing new spooled, bus still down: still alerting
    assert events == ["alert_triggered"]
    waiting[0] = 0  # the bus took the spool
    wd.check_once()
    assert events == ["alert_triggered", "alert_resolved"]


def test_no_spooling_alert_when_no_bus_was_chosen() -> None:
    """With the default bus URL nobody chose, spooling is the normal embedded state: no alert."""
    metrics = {"spool_writes": 0}
    events: list[str] = []
    wd = PipelineWatchdog(
        read_metrics=lambda: dict(metrics),
        emit=lambda name, attrs: events.append(name),
        spool_waiting=lambda: 10,
        bus_chosen=lambda: False,
        meter_provider=MeterProvider(),
    )
    wd.check_once()
    metrics["spool_writes"] = 10
    wd.check_once()
    assert events == []


SEED_WATCHDOG = """
import asyncio, json
from membrane_otel.watchdog import layer2_watchdog, register_component, clarity_5w1h

register_component("htm_orchestrator", lambda: {"queue_depth": 127, "worker_count": 8},
                   thresholds={"queue_depth": {"warn": 1000, "critical": 5000}, "worker_count": {"min": 1}})
register_component("trigger_mesh", lambda: {"subscriptions": 23, "event_queue_depth": 45},
                   thresholds={"subscriptions": {"min": 5}})

async def main():
    await layer2_watchdog.start()
    readiness = await layer2_watchdog.check_readiness(timeout_seconds=30)
    report = layer2_watchdog.get_health_report()
    await clarity_5w1h.log_task_dispatch(
        dispatcher="htm_orchestrator", task_id="task_12345", task_type="execute_sandbox",
        target_worker="worker_3", queue_depth=247, selection_method="least_loaded_worker",
        reasons=["Worker 3 has lowest CPU utilization (23%)", "Dispatch to balance load across workers"])
    await layer2_watchdog.stop()
    print(json.dumps({"readiness": readiness, "report": report}))

asyncio.run(main())
"""


def test_seed_facade_runs_as_written(tmp_path: Path) -> None:
    """The seed's calls: start, check_readiness → {'htm_orchestrator': True, …}, report, await log_task_dispatch."""
    script = tmp_path / "boot.py"
    script.write_text(SEED_WATCHDOG)
    proc = subprocess.run(
        [sys.executable, str(script)], env=clean_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["readiness"] == {"htm_orchestrator": True, "trigger_mesh": True}
    assert out["report"]["layer"] == "layer2_orchestration" and out["report"]["healthy"] is True
    assert out["report"]["components"]["htm_orchestrator"]["queue_depth"] == 127
    (line,) = [
        ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "narrative.dispatch_task"
    ]
    # The Clarity record and the immutable-log entry, on the narrative's ledger line.
    assert line["decision_id"].startswith("decision_") and line["transparency_level"] == "COMPLETE"
    assert line["reasoning_chain"][0].startswith("Worker 3 has lowest CPU")
    assert line["confidence"] == 0.9 and line["risk"] == 0.1
    assert (line["actor"], line["action"], line["resource"], line["result"]) == (
        "htm_orchestrator", "dispatch_task", "worker_3", "dispatched",
    )  # fmt: skip
    assert json.loads(line["metadata"]) == {
        "method": "least_loaded_worker", "queue_depth": 247, "task_id": "task_12345", "task_type": "execute_sandbox",
    }  # fmt: skip


def test_narrative_calls_stay_usable_without_await() -> None:
    """Sync callers still get the 5W1H dict."""
    from membrane_otel import narrative

    with capture():
        record = narrative.log_reroute(
            router="event_policy_engine", task_id="task_789", from_target="worker_5_failed",
            to_target="worker_2_healthy", reroute_reason=["Worker 5 failed health check"], method="failover_routing",
        )  # fmt: skip
    assert record["who"] == "event_policy_engine" and record["where"] == "worker_2_healthy"
