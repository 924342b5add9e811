"""The lossless bus path: success only when every envelope is published or durably spooled; else 503."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from membrane_otel._internal import counters
from membrane_otel.bridge import Bridge
from membrane_otel.bridge._core import BusBehind
from membrane_otel.bridge._otlp import decode_logs
from membrane_otel.bridge._outbox import Outbox
from membrane_otel.ledger._writer import Ledger
from membrane_otel.membrane._bus_wire import WsTransport
from membrane_otel.membrane._publish import MembranePublisher
from membrane_otel.membrane._spool import Spool
from membrane_otel.settings import load_settings
from tests._bus_helpers import BusProcess, read_record, wait_for
from tests.test_bridge import SEED_000_ENVELOPE

GH_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def stimuli(n: int, *, big_at: int | None = None) -> bytes:
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    for i in range(n):
        rec = records.add(
            time_unix_nano=1_700_000_000_000_000_000 + i, severity_number=13, event_name="membrane.stimulus"
        )
        rec.body.string_value = f"stimulus {i} password=hunter2"
        for key, value in (
            ("membrane.source", "test"),
            ("membrane.channel", "signals.test"),
            ("membrane.stimulus_id", f"st-{i:05d}"),
        ):
            rec.attributes.add(key=key).value.string_value = value
        if i == big_at:
            rec.attributes.add(key="membrane.metadata").value.string_value = (
                '{"blob": "' + "x" * 3_000_000 + '"}'
            )
    return req.SerializeToString()


def make_bridge(tmp: Path, bus_url: str, spool_dir: Path | None = None) -> tuple[Bridge, Outbox]:
    settings = load_settings({}, bus_url=bus_url, throttle=False)
    spool = Spool(spool_dir or tmp / "spool", max_bytes=64 * 1024 * 1024)
    outbox = Outbox(WsTransport(bus_url, connect_timeout=1, ack_timeout=5), spool, replay_interval_s=0.1)
    bridge = Bridge(Ledger(tmp / "l.jsonl"), MembranePublisher(settings, outbox, None), outbox=outbox)
    return bridge, outbox


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[BusProcess, Path]]:
    record = tmp_path / "bus-record.jsonl"
    with BusProcess(record=record) as proc:
        yield proc, record


def test_3000_stimuli_in_one_request_all_reach_the_bus_redacted(
    tmp_path: Path, bus: tuple[BusProcess, Path]
) -> None:
    """Every envelope of a large OTLP batch is on the bus when the bridge answers (none lost, no secret)."""
    proc, record = bus
    bridge, outbox = make_bridge(tmp_path, proc.url)
    try:
        out = bridge.accept_logs(decode_logs(stimuli(3000), json_body=False))
        assert out.written == 3000 and not out.envelope_errors
        got = wait_for(
            lambda: len(read_record(record)) >= 3000 and read_record(record), what="3000 envelopes"
        )
        assert sorted(e["metadata"]["stimulus_id"] for e in got) == [f"st-{i:05d}" for i in range(3000)]
        assert not any("hunter2" in e["content"] for e in got)
    finally:
        bridge.shutdown(5000)


def test_10000_ingested_envelopes_all_reach_the_bus(tmp_path: Path, bus: tuple[BusProcess, Path]) -> None:
    """/ingest: every accepted envelope is delivered, with its secret redacted."""
    proc, record = bus
    bridge, _ = make_bridge(tmp_path, proc.url)
    items: list[dict[str, Any]] = []
    for i in range(10_000):
        env = copy.deepcopy(SEED_000_ENVELOPE)
        env["metadata"]["stimulus_id"] = f"in-{i:05d}"
        env["content"] = f"failed with token {GH_TOKEN}"
        items.append(env)
    try:
        assert bridge.accept_envelopes(items).written == 10_000
        got = wait_for(
            lambda: len(read_record(record)) >= 10_000 and read_record(record), timeout=30, what="all"
        )
        assert len({e["metadata"]["stimulus_id"] for e in got}) == 10_000
        assert not any(GH_TOKEN in e["content"] for e in got)
    finally:
        bridge.shutdown(5000)


def test_an_oversized_envelope_is_rejected_alone(tmp_path: Path, bus: tuple[BusProcess, Path]) -> None:
    """One envelope over the size limit is counted with its reason; its neighbours are delivered."""
    proc, record = bus
    bridge, _ = make_bridge(tmp_path, proc.url)
    try:
        out = bridge.accept_logs(decode_logs(stimuli(20, big_at=7), json_body=False))
        assert out.written == 20
        assert len(out.envelope_errors) == 1 and "over the" in out.envelope_errors[0]
        got = wait_for(lambda: len(read_record(record)) >= 19 and read_record(record), what="19 envelopes")
        assert "st-00007" not in {e["metadata"]["stimulus_id"] for e in got}
    finally:
        bridge.shutdown(5000)


def test_with_the_bus_down_envelopes_are_spooled_then_replayed(tmp_path: Path) -> None:
    """Bus down: the request succeeds because the envelopes are on disk; they go out when it is back."""
    record = tmp_path / "bus-record.jsonl"
    with BusProcess(record=record) as proc:
        url = proc.url
    bridge, outbox = make_bridge(tmp_path, url)
    try:
        spooled = counters.get("bridge_envelopes_spooled")
        out = bridge.accept_logs(decode_logs(stimuli(50), json_body=False))
        # (Counted, not listed: the replay thread may hold the batch claimed right now.)
        assert out.written == 50 and counters.get("bridge_envelopes_spooled") - spooled == 50
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        with BusProcess(port=port, record=record):
            wait_for(lambda: len(read_record(record)) >= 50, timeout=20, what="the replay")
            wait_for(lambda: outbox.status()["spool_files"] == 0, what="an empty spool")
    finally:
        bridge.shutdown(5000)


def test_with_the_bus_down_and_the_spool_unwritable_the_answer_is_503_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    """Neither published nor spooled: BusBehind (503 + Retry-After), and the ledger has nothing to skip later."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    bridge, _ = make_bridge(tmp_path, "ws://127.0.0.1:9/api/ws", spool_dir=blocker / "spool")
    try:
        with pytest.raises(BusBehind):
            bridge.accept_logs(decode_logs(stimuli(5), json_body=False))
        assert not (tmp_path / "l.jsonl").exists() or not (tmp_path / "l.jsonl").read_text()
    finally:
        bridge.shutdown(2000)


def test_ready_turns_false_when_the_spool_falls_behind(tmp_path: Path) -> None:
    """Bus down and the spool past half its cap: /ready says not ready (a balancer sends elsewhere)."""
    settings = load_settings({}, bus_url="ws://127.0.0.1:9/api/ws", throttle=False)
    # No transport: nothing replays, so the backlog stays put while it is looked at.
    outbox = Outbox(None, Spool(tmp_path / "spool", max_bytes=200_000))
    bridge = Bridge(Ledger(tmp_path / "l.jsonl"), MembranePublisher(settings, outbox, None), outbox=outbox)
    try:
        assert bridge.readiness()[0] is True
        bridge.accept_logs(decode_logs(stimuli(300), json_body=False))
        ready, detail = bridge.readiness()
        assert ready is False and detail["bus"]["behind"] is True and detail["bus"]["spool_files"] >= 1
    finally:
        bridge.shutdown(2000)


def test_ready_counts_a_batch_claimed_for_replay_but_not_yet_acked(tmp_path: Path) -> None:
    """A replay stuck on a bus that reads but never acks holds its batch claimed: /ready still sees it.

    The spool's files, bytes and age used to count waiting batches only, so a backlog of one
    batch in flight to a stalled bus looked like an empty spool and the bridge stayed ready.
    """
    from websockets.sync.server import ServerConnection, serve

    reads = threading.Event()

    def never_acks(ws: ServerConnection) -> None:
        for _ in ws:  # reads every frame, answers none
            reads.set()

    settings = load_settings({}, bus_url="ws://127.0.0.1:9/api/ws", throttle=False)
    spool = Spool(tmp_path / "spool", max_bytes=200_000)
    envelope = copy.deepcopy(SEED_000_ENVELOPE)
    envelope["content"] = "x" * 2_000
    spool.write([envelope] * 60)  # ~130 KB: past half the cap
    with serve(never_acks, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/api/ws"
        transport = WsTransport(url, connect_timeout=2, ack_timeout=60)
        outbox = Outbox(transport, spool, send_timeout_s=60, replay_interval_s=0.05)
        bridge = Bridge(
            Ledger(tmp_path / "l.jsonl"), MembranePublisher(settings, outbox, None), outbox=outbox
        )
        try:
            wait_for(
                lambda: reads.is_set() and spool.status()["claimed"] == 1, what="the replay stuck in flight"
            )
            ready, detail = bridge.readiness()
            assert detail["bus"]["spool_bytes"] > 100_000, detail["bus"]
            assert detail["bus"]["spool_files"] == 1 and detail["bus"]["spool_oldest_age_s"] is not None
            assert ready is False and detail["bus"]["behind"] is True
        finally:
            server.shutdown()
            transport.close()
            bridge.shutdown(2000)


def test_a_batch_claimed_for_replay_counts_towards_a_full_spool(tmp_path: Path) -> None:
    """A claimed batch still holds its disk. Counting only waiting batches, the outbox spooled past
    the cap, and the spool made room by dropping its oldest waiting batch — envelopes already
    answered 200. Now the outbox says it is behind (503, retried) and the accepted batch stays."""
    spool = Spool(tmp_path / "spool", max_bytes=200_000)
    envelope = copy.deepcopy(SEED_000_ENVELOPE)
    envelope["content"] = "x" * 2_000
    spool.write([envelope] * 45)  # ~120 KB (2.7 KB an envelope), about to be claimed by a replay
    spool.write([envelope] * 16)  # ~43 KB accepted earlier, waiting: 163 KB, past the 80 % mark
    claimed = spool.claim_oldest()
    assert claimed is not None and len(claimed.envelopes) == 45
    dropped = counters.get("spool_dropped")
    delivery = Outbox(None, spool).deliver([envelope] * 30)  # ~80 KB: past the cap with the claim
    assert delivery.ok is False and delivery.spooled == 0
    assert spool.status()["envelopes"] == 16
    assert counters.get("spool_dropped") == dropped
