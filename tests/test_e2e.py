"""End-to-end: the example agent and load producers through the real Collector, Jaeger, bridge and bus.

Everything runs as real processes on 127.0.0.1 free ports: the Go-built Collector and Jaeger
from .tools/ (``make collector jaeger``), ``membrane-otel bridge serve``, ``membrane-otel bus
serve --record``, and programs under ``opentelemetry-instrument``. Each test skips, naming the
binary and the make target, when a binary is missing. Processes are ended by their PID.
"""

from __future__ import annotations

import json
from collections import Counter
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
    return clean_env(
        tmp, OTEL_SERVICE_NAME=SERVICE, OTEL_METRICS_EXPORTER="none", MEMBRANE_TRACE="1", **extra
    )


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
def collector_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The example agent exporting OTLP/gRPC to the Collector → Jaeger, and → bridge → ledger + bus."""
    tmp = tmp_path_factory.mktemp("collector-mode")
    record = tmp / "bus-record.jsonl"
    (port,) = ob.free_ports(1)
    b = eh.Bridge(port, tmp / "bridge-ledger.jsonl")
    with ExitStack() as stack:
        bus_url = stack.enter_context(eh.bus(tmp, record))
        _j, jports = stack.enter_context(ob.jaeger(tmp))
        stack.enter_context(eh.bridge(tmp, b, bus_url=bus_url))
        _c, cports = stack.enter_context(
            ob.collector(tmp, jaeger_otlp=jports.otlp_grpc_endpoint, bridge_url=b.url)
        )
        env = agent_env(
            tmp / "agent",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            **eh.otlp_env(cports, "grpc"),
        )
        run_agent(env)

        def all_spans() -> list[dict[str, Any]] | None:
            spans = ob.jaeger_spans(jports.query_url, SERVICE)
            return spans if len(spans) >= AGENT_SPANS.total() else None

        wait_for(lambda: _complete(read_ledger(b.ledger)), timeout=30)
        wait_for(lambda: eh.read_jsonl(record), timeout=15)
        spans = wait_for(all_spans, timeout=30)
        ledger, envelopes = read_ledger(b.ledger), eh.read_jsonl(record)
    return Run(b.ledger, ledger, envelopes, spans, Path(env["MEMBRANE_LEDGER_PATH"]))


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


def test_embedded_and_collector_mode_write_the_same_ledger_lines(
    embedded_run: Run, collector_run: Run
) -> None:
    """Embedded mode's own ledger and the bridge's ledger hold the same lines, ids and times aside."""
    embedded = eh.normal_lines(embedded_run.ledger)
    collector = eh.normal_lines(collector_run.ledger)
    assert embedded == collector, eh.diff(embedded, collector)


def test_embedded_and_collector_mode_publish_the_same_envelopes(
    embedded_run: Run, collector_run: Run
) -> None:
    """The envelopes the bus recorded from embedded mode equal those the bridge published, ids and times aside."""
    embedded = Counter(eh.normal_envelope(env) for env in embedded_run.envelopes)
    collector = Counter(eh.normal_envelope(env) for env in collector_run.envelopes)
    assert len(embedded_run.envelopes) == 1
    assert embedded == collector, eh.diff(embedded, collector)


def producer_env(tmp: Path, ports: ob.CollectorPorts, service: str, protocol: str) -> dict[str, str]:
    """A load producer's environment: logs over OTLP to the Collector, a queue that never drops."""
    return clean_env(
        tmp,
        OTEL_SERVICE_NAME=service,
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        # Every record must reach the Collector: the in-process queue holds the whole run.
        MEMBRANE_QUEUE_SIZE="50000",
        MEMBRANE_BATCH_SIZE="500",
        # Counts are exact: a watchdog alert (slow export on a loaded machine) is one record more.
        MEMBRANE_WATCHDOG="0",
        **eh.otlp_env(ports, protocol),
    )


def wait_settled(
    entry: tuple[ob.CollectorPorts, str],
    *tiers: tuple[ob.CollectorPorts, str],
    expected: int,
    timeout: float,
) -> None:
    """Until every log record has gone through: nothing is left in flight to be re-delivered.

    ``entry`` (the Collector the producers sent to, and its exporter) must have accepted
    ``expected`` records, the ``tiers`` behind it that many between them, and each of them
    must have had all it accepted acknowledged by the next hop (the bridge answers only
    after its ledger write, so the ledgers are then complete).
    """

    def flow(ports: ob.CollectorPorts, exporter: str) -> tuple[float, float]:
        accepted = eh.collector_metric(ports, "otelcol_receiver_accepted_log_records") or 0.0
        sent = eh.collector_metric(ports, "otelcol_exporter_sent_log_records", exporter=exporter) or 0.0
        return accepted, sent

    def settled() -> bool:
        flows = [flow(*entry), *(flow(*t) for t in tiers)]
        if flows[0][0] != expected or (tiers and sum(a for a, _ in flows[1:]) != expected):
            return False
        return all(accepted == sent for accepted, sent in flows)

    wait_for(settled, timeout=timeout, interval=0.2)


def _stalled(b: eh.Bridge, cports: ob.CollectorPorts, producer: Any, log: Path) -> str:
    """What each hop says, when the ledger did not fill: the producer, the Collector, the bridge."""
    flows = {
        name: eh.collector_metric(cports, name, **labels)
        for name, labels in (
            ("otelcol_receiver_accepted_log_records", {}),
            ("otelcol_exporter_sent_log_records", {"exporter": "otlp_http/bridge"}),
            ("otelcol_exporter_send_failed_log_records", {"exporter": "otlp_http/bridge"}),
        )
    }
    status, ready = ob.http_get(f"{b.url}/ready")
    return (
        f"the ledger holds {len(eh.ledger_ids(b.ledger))} records; producer exit code {producer.poll()}, "
        f"its log ends:\n{log.read_text(errors='replace')[-2000:]}\nCollector: {flows}\n"
        f"bridge /ready ({status}): {ready[:2000]!r}"
    )


def test_bridge_killed_mid_stream_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """SIGKILL the bridge during 20,000 records, restart it: the persistent queue delivers the rest once each."""
    total = 20_000
    (port,) = ob.free_ports(1)
    b = eh.Bridge(port, tmp_path / "ledger.jsonl")
    with ExitStack() as stack:
        bus_url = stack.enter_context(eh.bus(tmp_path, tmp_path / "bus-record.jsonl"))
        _c, cports = stack.enter_context(ob.collector(tmp_path, bridge_url=b.url))
        env = producer_env(tmp_path / "producer", cports, "e2e-load", "grpc")
        log = tmp_path / "producer.log"
        # Realistic error records (~3.5 KB ledger lines with a stack trace): a re-delivered
        # Collector batch must still be recognised by the restarted bridge, which reads the
        # ids of the last 64 MiB of its ledger at start.
        producer = eh.start_producer(
            env, log, count=total, prefix="kill", fingerprints=5, rate=4000, traceback_chars=1500
        )
        stack.callback(eh.kill, producer)
        with eh.bridge(tmp_path, b, bus_url=bus_url) as first:
            try:  # a tenth of a second between looks: each reads the whole ledger
                wait_for(lambda: len(eh.ledger_ids(b.ledger)) >= 3000, timeout=90, interval=0.1)
            except AssertionError:
                raise AssertionError(_stalled(b, cports, producer, log)) from None
            # Kill just after a batch reached the ledger, while the bridge still hands its
            # envelopes to the bus client: the Collector has no answer yet and sends it again.
            eh.wait_growth(b.ledger, timeout=10)
            first.kill()  # SIGKILL, by PID
            first.wait()
            assert producer.poll() is None, "the producer finished before the kill: not mid-stream"
        at_kill = len(eh.ledger_ids(b.ledger))
        eh.wait_exit(producer, log, timeout=120)  # everything handed to the Collector, bridge down
        with eh.bridge(tmp_path, b, bus_url=bus_url):
            # The bridge answers only after its ledger write: once the Collector has had every
            # record acknowledged, the ledger is complete and nothing is left to re-deliver.
            wait_settled((cports, "otlp_http/bridge"), expected=total, timeout=120)
            _status, ready = ob.http_get(f"{b.url}/ready")
            counters = json.loads(ready)["counters"]
    ids = eh.ledger_ids(b.ledger)
    verified = eh.verify_ledger(b.ledger)
    print(f"killed at {at_kill}/{total}; restarted bridge: {counters}")
    assert 0 < at_kill < total
    lost = {f"kill-{i:06d}" for i in range(total)} - set(ids)
    assert not lost, f"lost {len(lost)}: {sorted(lost)[:10]}; bridge {counters}; verify {verified.stdout}"
    doubled = [i for i, n in ids.items() if n > 1]
    assert not doubled, f"duplicated {len(doubled)}: {sorted(doubled)[:10]}; bridge {counters}"
    report = json.loads(verified.stdout)
    assert report["problem"] is None and report["lines"] == total, verified.stdout
    if verified.returncode == 3:
        # The SIGKILL landed inside a batch's write and tore its last line: the one torn
        # line is where the kill was, and the chain goes on after it intact.
        (torn,) = report["torn"]
        assert torn["kind"] == "torn" and torn["line"] == at_kill + 1, verified.stdout
    else:
        assert verified.returncode == 0 and not report["torn"], verified.stdout


def test_gateway_pins_each_fingerprint_to_one_of_two_bridges(tmp_path: Path) -> None:
    """Two services erroring through gateway.yaml → two Collectors → two bridges: each fingerprint on one bridge, all once."""
    per_service, fingerprints = 1500, 12
    b1, b2 = (eh.Bridge(p, tmp_path / f"ledger-{n}.jsonl") for n, p in enumerate(ob.free_ports(2), 1))
    with ExitStack() as stack:
        tiers = []
        for n, b in enumerate((b1, b2), 1):
            stack.enter_context(eh.bridge(tmp_path, b, name=f"bridge-{n}"))
            _c, ports = stack.enter_context(ob.collector(tmp_path, bridge_url=b.url, name=f"otelcol-{n}"))
            tiers.append(ports)
        _g, gateway = stack.enter_context(
            ob.collector(
                tmp_path, config=ob.GATEWAY_CONFIG, backends=[p.grpc_endpoint for p in tiers], name="gateway"
            )
        )
        producers = []
        # One service over OTLP/gRPC, the other over OTLP/HTTP: the gateway takes both.
        for service, protocol in (("svc-a", "grpc"), ("svc-b", "http/protobuf")):
            env = producer_env(tmp_path / service, gateway, service, protocol)
            log = tmp_path / f"{service}.log"
            proc = eh.start_producer(
                env, log, count=per_service, prefix=service, fingerprints=fingerprints, rate=0
            )
            stack.callback(eh.kill, proc)
            producers.append((proc, log))
        for proc, log in producers:
            eh.wait_exit(proc, log, timeout=120)
        wait_settled(
            (gateway, "load_balancing/logs"), *((p, "otlp_http/bridge") for p in tiers),
            expected=2 * per_service, timeout=120,
        )  # fmt: skip
    sent = {
        f"{s}-{i:06d}": f"{s}-fp{i % fingerprints}" for s in ("svc-a", "svc-b") for i in range(per_service)
    }
    landed: dict[str, set[str]] = {}  # fingerprint → the bridges it reached
    ids: Counter[str] = Counter()
    for b in (b1, b2):
        for line in eh.whole_lines(b.ledger):
            ids[line[eh.ID_KEY]] += 1
            assert line["membrane.fingerprint"] == sent[line[eh.ID_KEY]]
            landed.setdefault(line["membrane.fingerprint"], set()).add(b.url)
    assert set(ids) == set(sent)  # nothing lost
    assert ids.most_common(1)[0][1] == 1  # nothing doubled
    assert all(len(bridges) == 1 for bridges in landed.values()), landed
    used = {url for bridges in landed.values() for url in bridges}
    assert used == {b1.url, b2.url}  # both bridges took a share
    print({fp: next(iter(bridges))[-5:] for fp, bridges in sorted(landed.items())})
