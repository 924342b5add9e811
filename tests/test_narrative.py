"""5W1H narratives: span events on the active trace, ledger lines, and queries over them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from membrane_otel import narrative
from membrane_otel.exporters import LedgerLogExporter
from membrane_otel.ledger._chain import split_hash
from membrane_otel.ledger._reader import read_lines
from membrane_otel.logs._processors import MembraneLogProcessor, configured_value_redactor
from tests._helpers import clean_env, read_ledger


class Rig:
    """A narrator writing through the real processor + ledger exporter, and a tracer to hold spans."""

    def __init__(self, tmp: Path, clock_ns: Any = None) -> None:
        self.ledger = tmp / "ledger.jsonl"
        self.logs = LoggerProvider()
        self.logs.add_log_record_processor(MembraneLogProcessor(configured_value_redactor()))
        self.logs.add_log_record_processor(SimpleLogRecordProcessor(LedgerLogExporter(self.ledger)))
        self.spans = InMemorySpanExporter()
        self.traces = TracerProvider()
        self.traces.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer = self.traces.get_tracer("test")
        kwargs: dict[str, Any] = {"logger_provider": self.logs}
        if clock_ns is not None:
            kwargs["clock_ns"] = clock_ns
        self.n = narrative.Narrator(**kwargs)

    def lines(self) -> list[dict[str, Any]]:
        return list(read_lines(self.ledger))


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_narrate_writes_a_chained_ledger_line_with_5w1h_attributes(rig: Rig) -> None:
    """A narrative becomes one ledger line with narrative.who/what/when/where/why/how and a hash."""
    rig.n.narrate(
        "htm_orchestrator",
        "dispatch_intent_to_worker",
        "worker_3",
        ["lowest CPU (23%)", "last 5 tasks ok"],
        "least_loaded_worker_selection",
        {"intent_id": "int_789", "queue_depth": 247},
    )
    (line,) = rig.lines()
    assert line["event"] == "narrative.dispatch_intent_to_worker"
    assert line["narrative.who"] == "htm_orchestrator"
    assert line["narrative.what"] == "dispatch_intent_to_worker"
    assert line["narrative.where"] == "worker_3"
    assert line["narrative.why"] == ["lowest CPU (23%)", "last 5 tasks ok"]
    assert line["narrative.how"] == "least_loaded_worker_selection"
    assert line["narrative.when"].endswith("Z")
    assert line["narrative.context.intent_id"] == "int_789"
    assert line["narrative.context.queue_depth"] == 247
    assert split_hash(rig.ledger.read_text().splitlines()[0]) is not None


def test_narrative_is_an_event_on_the_active_span_with_the_same_trace_id(rig: Rig) -> None:
    """Inside a span the narrative is a span event, and the ledger line points at that trace."""
    with rig.tracer.start_as_current_span("dispatch") as span:
        rig.n.narrate("router", "reroute_task", "worker_2", ["worker 5 failed"], "failover_routing")
        trace_id = format(span.get_span_context().trace_id, "032x")
    (finished,) = rig.spans.get_finished_spans()
    (event,) = finished.events
    assert event.name == "narrative.reroute_task"
    assert event.attributes is not None
    assert event.attributes["narrative.who"] == "router"
    assert list(event.attributes["narrative.why"]) == ["worker 5 failed"]
    assert rig.lines()[0]["otel_trace_id"] == trace_id


def test_the_seed_specialised_calls_are_queryable_by_actor_and_action(rig: Rig) -> None:
    """log_task_dispatch / log_load_shedding / log_reroute come back from get_narratives."""
    rig.n.log_task_dispatch(
        "htm_orchestrator",
        "task_12345",
        "execute_sandbox",
        "worker_3",
        247,
        "least_loaded_worker",
        ["Worker 3 has lowest CPU utilization (23%)"],
    )
    rig.n.log_load_shedding(
        "htm_orchestrator",
        100,
        1500,
        "priority<5_and_age>10min",
        ["Queue depth exceeded critical threshold (1500/1000)"],
    )
    rig.n.log_reroute(
        "event_policy_engine",
        "task_789",
        "worker_5_failed",
        "worker_2_healthy",
        ["Worker 5 failed health check", "Worker 2 has capacity"],
        "failover_routing",
    )
    by_actor = narrative.get_narratives(actor="htm_orchestrator", ledger_path=rig.ledger)
    assert [n["what"] for n in by_actor] == ["shed_load", "dispatch_task"]
    (shed,) = narrative.get_narratives(action="shed_load", ledger_path=rig.ledger)
    assert shed["context"] == {
        "shed_count": 100,
        "total_load": 1500,
        "shed_criteria": "priority<5_and_age>10min",
    }
    (reroute,) = narrative.get_narratives(action="reroute_task", ledger_path=rig.ledger)
    assert reroute["where"] == "worker_2_healthy"
    assert reroute["context"]["from_target"] == "worker_5_failed"
    assert reroute["why"] == ["Worker 5 failed health check", "Worker 2 has capacity"]
    dispatch_line = next(ln for ln in rig.lines() if ln["event"] == "narrative.dispatch_task")
    assert dispatch_line["task_id"] == "task_12345"  # ids are lifted to the ledger's own field


def test_get_narratives_is_newest_first_and_honours_since_and_limit(tmp_path: Path) -> None:
    """Results are sorted newest first; since cuts older ones, limit keeps the newest N."""
    now = datetime.now()
    stamps = iter(int((now - timedelta(hours=h)).timestamp() * 1e9) for h in (3, 2, 1, 0))
    rig = Rig(tmp_path, clock_ns=lambda: next(stamps))
    for i in range(4):
        rig.n.narrate("a", "act", f"w{i}", [], "m")
    everything = narrative.get_narratives(ledger_path=rig.ledger)
    assert [n["where"] for n in everything] == ["w3", "w2", "w1", "w0"]
    recent = narrative.get_narratives(since=now - timedelta(minutes=90), ledger_path=rig.ledger)
    assert [n["where"] for n in recent] == ["w3", "w2"]
    assert [n["where"] for n in narrative.get_narratives(limit=1, ledger_path=rig.ledger)] == ["w3"]


def test_secrets_are_redacted_in_the_span_event_and_the_ledger(rig: Rig) -> None:
    """A token in a reason or the context never reaches the span or the ledger."""
    secret = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    with rig.tracer.start_as_current_span("s"):
        rig.n.narrate("a", "act", "w", [f"called with api_key={secret}"], "m", {"password": "hunter2"})
    text = rig.ledger.read_text()
    assert secret not in text and "hunter2" not in text
    (event,) = rig.spans.get_finished_spans()[0].events
    assert secret not in json.dumps(dict(event.attributes or {}), default=str)
    assert "hunter2" not in json.dumps(dict(event.attributes or {}), default=str)


def test_async_twins_record_like_the_sync_calls(tmp_path: Path) -> None:
    """await narrative.alog_task_dispatch(...) records through the default narrator."""
    code = f"""
import asyncio, json, membrane_otel
from membrane_otel import narrative
membrane_otel.configure()
async def main():
    await narrative.alog_task_dispatch("d", "t1", "k", "w1", 3, "rr", ["r"])
    await narrative.alog_load_shedding("d", 1, 2, "c", "one reason")
    await narrative.alog_reroute("d", "t1", "w1", "w2", ["r"], "failover")
    await narrative.anarrate("d", "custom", "here", ["r"], "how", {{"k": [1, 2]}})
asyncio.run(main())
membrane_otel.force_flush()
print(json.dumps(narrative.get_narratives(actor="d", ledger_path={str(tmp_path / "ledger.jsonl")!r})))
"""
    env = clean_env(tmp_path, OTEL_LOGS_EXPORTER="ledger", OTEL_TRACES_EXPORTER="none")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(n["what"] for n in found) == ["custom", "dispatch_task", "reroute_task", "shed_load"]
    assert next(n for n in found if n["what"] == "custom")["context"] == {"k": [1, 2]}
    assert next(n for n in found if n["what"] == "shed_load")["why"] == ["one reason"]
    assert len(read_ledger(tmp_path / "ledger.jsonl")) == 4


def test_non_narrative_lines_are_not_returned(rig: Rig) -> None:
    """Ledger lines of other events are skipped by get_narratives."""
    from membrane_otel.ledger._writer import ledger_for

    ledger_for(rig.ledger).append_many([{"event": "task_started", "task_id": "x"}])
    rig.n.narrate("a", "act", "w", ["r"], "m")
    assert [n["what"] for n in narrative.get_narratives(ledger_path=rig.ledger)] == ["act"]


def test_missing_actor_or_action_is_a_clear_error(rig: Rig) -> None:
    """who and what are required: an empty one is a ValueError naming it."""
    with pytest.raises(ValueError, match="who"):
        rig.n.narrate("", "act", "w", [], "m")
    with pytest.raises(ValueError, match="what"):
        rig.n.narrate("a", "", "w", [], "m")


def test_event_names_are_sanitised() -> None:
    """An action with spaces or slashes still gives a clean event name."""
    assert narrative.event_name("shed load/now") == "narrative.shed_load_now"
    assert asyncio.iscoroutinefunction(narrative.anarrate)


def test_get_narratives_reads_rotated_ledger_files_too(tmp_path: Path) -> None:
    """Narratives in rotated files of the ledger are found (the whole chain is the immutable log)."""
    from membrane_otel.ledger._reader import ledger_files
    from membrane_otel.ledger._writer import ledger_for

    path = tmp_path / "ledger.jsonl"
    book = ledger_for(path, max_bytes=600)
    for i in range(6):
        book.append_many(
            [{"event": "narrative.act", "ts_unix": 1000.0 + i, "narrative.who": "a", "narrative.what": "act",
              "narrative.where": f"w{i}", "narrative.why": ["r"], "narrative.how": "m"}]
        )  # fmt: skip
    assert len(ledger_files(path)) > 1
    assert [n["where"] for n in narrative.get_narratives(ledger_path=path)] == [
        f"w{i}" for i in range(5, -1, -1)
    ]


def test_the_ledger_cli_queries_narratives_by_actor_and_action(rig: Rig) -> None:
    """`membrane-otel ledger query --actor … --action …` finds the lines narrate() wrote."""
    from tests._bus_helpers import CLI, cli_env

    rig.n.log_task_dispatch("htm", "t1", "k", "w1", 1, "rr", ["r"])
    rig.n.log_load_shedding("htm", 5, 50, "low priority", ["full"])
    rig.n.log_reroute("policy", "t1", "w1", "w2", ["w1 down"], "failover")
    query = ["query", "--ledger", str(rig.ledger), "--json", "--actor", "htm", "--action", "shed_load"]
    done = subprocess.run([*CLI, "ledger", *query], env=cli_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    found = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [(ln["narrative.who"], ln["narrative.what"]) for ln in found] == [("htm", "shed_load")]
