"""End-to-end: the example agent and load producers through the real Collector, Jaeger, bridge and bus.

Everything runs as real processes on 127.0.0.1 free ports: the Go-built Collector and Jaeger
from .tools/ (``make collector jaeger``), ``membrane-otel bridge serve``, ``membrane-otel bus
serve --record``, and programs under ``opentelemetry-instrument``. Each test skips, naming the
binary and the make target, when a binary is missing. Processes are ended by their PID.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import _e2e_helpers as eh
from tests import _otel_binaries as ob
from tests._helpers import EXAMPLE, clean_env, read_ledger, run_instrumented, wait_for

needs_collector = pytest.mark.skipif(
    not ob.OTELCOL.exists(), reason=f"{ob.OTELCOL} is missing: build it with `make collector` (needs Go)"
)
needs_jaeger = pytest.mark.skipif(
    not ob.JAEGER.exists(), reason=f"{ob.JAEGER} is missing: build it with `make jaeger` (needs Go)"
)
pytestmark = [pytest.mark.e2e, needs_collector, needs_jaeger]

SERVICE = "hrm_agent"
# The HRM operations examples/hrm_agent.py traces, each once unless counted otherwise.
AGENT_SPANS = Counter(
    {
        "altitude.transition": 1, "altitude.plan": 1, "altitude.evaluate": 1, "altitude.execute": 1,
        "focus.stance_change": 1, "focus.gate_check": 2, "focus.route": 1, "focus.lane_switch": 1,
        "focus.consent_check": 1,
        "reasoning.classify": 1, "reasoning.route": 1, "reasoning.escalate": 1,
        "learning.pattern_match": 1, "learning.pattern_add": 1, "learning.generalize": 1,
        "learning.pattern_trim": 1,
        "memory.write": 1, "memory.read": 1, "memory.promote": 1, "memory.demote": 1,
        "system.execute": 2,
    }
)  # fmt: skip


def agent_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The example agent's environment: traced (MEMBRANE_TRACE=1), as service hrm_agent."""
    return clean_env(tmp, OTEL_SERVICE_NAME=SERVICE, OTEL_METRICS_EXPORTER="none", MEMBRANE_TRACE="1", **extra)


def run_agent(env: dict[str, str]) -> None:
    result = run_instrumented(EXAMPLE, env, cwd=ob.ROOT, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class Run:
    """What one run of the example agent left behind: ledger lines and envelopes (and spans)."""

    ledger_path: Path
    ledger: list[dict[str, Any]]
    envelopes: list[dict[str, Any]]
    spans: list[dict[str, Any]]
    local_ledger: Path  # the agent's own ledger path (in collector mode: must stay unwritten)


def _complete(ledger: list[dict[str, Any]]) -> bool:
    """Every HRM span and the one script_error of the example agent are in ``ledger``."""
    names = Counter(line["name"] for line in ledger if line["event"] == "hrm_trace")
    return names == AGENT_SPANS and sum(line["event"] == "script_error" for line in ledger) == 1


@pytest.fixture(scope="module")
def collector_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The example agent exporting OTLP/gRPC to the Collector → Jaeger, and → bridge → ledger + bus."""
    tmp = tmp_path_factory.mktemp("collector-mode")
    record = tmp / "bus-record.jsonl"
    (port,) = ob.free_ports(1)
    b = eh.Bridge(port, tmp / "bridge-ledger.jsonl")
    with ExitStack() as stack:
        bus_url = stack.enter_context(eh.bus(tmp, record))
        _j, jports = stack.enter_context(ob.jaeger(tmp))
        stack.enter_context(eh.bridge(tmp, b, bus_url=bus_url))
        _c, cports = stack.enter_context(ob.collector(tmp, jaeger_otlp=jports.otlp_grpc_endpoint, bridge_url=b.url))
        env = agent_env(
            tmp / "agent",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            **eh.otlp_env(cports, "grpc"),
        )
        run_agent(env)
        wait_for(lambda: _complete(read_ledger(b.ledger)), timeout=30)
        wait_for(lambda: eh.read_jsonl(record), timeout=15)
        spans = wait_for(
            lambda: (s := ob.jaeger_spans(jports.query_url, SERVICE)) and len(s) >= AGENT_SPANS.total() and s,
            timeout=30,
        )
        yield Run(b.ledger, read_ledger(b.ledger), eh.read_jsonl(record), spans, Path(env["MEMBRANE_LEDGER_PATH"]))


def test_agent_spans_reach_jaeger_with_hrm_names_and_attributes(collector_run: Run) -> None:
    """Through the Collector, Jaeger's v3 query API holds every HRM span of the agent with its hrm.* attributes."""
    spans = collector_run.spans
    assert Counter(s["name"] for s in spans) == AGENT_SPANS
    assert len({s["traceId"] for s in spans}) == 1  # one request, one trace
    by_name = {s["name"]: s["attrs"] for s in spans}
    root = by_name["altitude.transition"]
    assert root["hrm.layer"] == "altitude" and root["hrm.operation"] == "transition"
    assert root["hrm.input_summary"] == "L3→L2" and root["hrm.status"] == "success"
    assert by_name["memory.write"]["hrm.meta.tokens_saved"] == "45"  # OTLP JSON: int64 as a string
    assert by_name["focus.consent_check"]["hrm.status"] == "blocked"
    failed = [s for s in spans if s["name"] == "system.execute" and s["attrs"]["hrm.status"] == "error"]
    assert len(failed) == 1 and failed[0]["status"].get("code") == 2  # STATUS_CODE_ERROR
    assert all(s["attrs"]["hrm.layer"] and s["attrs"]["hrm.event_id"] for s in spans)


def test_agent_ledger_lines_come_out_of_the_bridge(collector_run: Run) -> None:
    """The bridge's ledger has every HRM span and the script_error; the agent itself wrote no ledger."""
    ledger = collector_run.ledger
    assert _complete(ledger)
    assert len(ledger) == AGENT_SPANS.total() + 1
    (error,) = [line for line in ledger if line["event"] == "script_error"]
    assert error["message"] == "tool flaky_search failed for request 4711"
    assert error["exception.type"] == "ConnectionError"
    assert "sk-live-0000SECRET0000" not in json.dumps(ledger)
    assert {line["service"] for line in ledger} == {SERVICE}
    verified = eh.verify_ledger(collector_run.ledger_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert not collector_run.local_ledger.exists()


def test_agent_envelope_reaches_the_bus_through_the_bridge(collector_run: Run) -> None:
    """The bridge publishes the agent's error envelope to a real reference bus, which records it."""
    (env,) = collector_run.envelopes
    assert env["type"] == "membrane.inject"
    assert env["source"] == "script:hrm_agent" and env["severity"] == "error"
    md = env["metadata"]
    assert md["signal_type"] == "script_error" and md["error_type"] == "ConnectionError"
    assert md["stack_fingerprint"]


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The same agent in embedded mode: default exporters, its own ledger, envelopes to a real bus."""
    tmp = tmp_path_factory.mktemp("embedded-mode")
    record = tmp / "bus-record.jsonl"
    with eh.bus(tmp, record) as bus_url:
        env = agent_env(tmp / "agent", MEMBRANE_BUS_URL=bus_url)
        run_agent(env)
        ledger_path = Path(env["MEMBRANE_LEDGER_PATH"])
        # The agent flushed both before it exited; the bus recorded before it acknowledged.
        assert _complete(read_ledger(ledger_path))
        return Run(ledger_path, read_ledger(ledger_path), eh.read_jsonl(record), [], ledger_path)


def test_embedded_and_collector_mode_write_the_same_ledger_lines(embedded_run: Run, collector_run: Run) -> None:
    """Embedded mode's own ledger and the bridge's ledger hold the same lines, ids and times aside."""
    embedded = eh.normal_lines(embedded_run.ledger)
    collector = eh.normal_lines(collector_run.ledger)
    assert embedded == collector, eh.diff(embedded, collector)


def test_embedded_and_collector_mode_publish_the_same_envelopes(embedded_run: Run, collector_run: Run) -> None:
    """The envelopes the bus recorded from embedded mode equal those the bridge published, ids and times aside."""
    embedded = Counter(eh.normal_envelope(env) for env in embedded_run.envelopes)
    collector = Counter(eh.normal_envelope(env) for env in collector_run.envelopes)
    assert len(embedded_run.envelopes) == 1
    assert embedded == collector, eh.diff(embedded, collector)
