"""The bus client against a real bus process: delivery, spooling, replay, crashes, fork, CLI."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from membrane_otel._internal import counters
from membrane_otel.membrane._bus import BusClient, BusUnavailable, flush_spool
from membrane_otel.membrane._spool import Spool
from tests._bus_helpers import (
    CLI,
    BusProcess,
    Subscriber,
    cli_env,
    envelope,
    free_port,
    ids,
    read_record,
    wait_for,
)

# A publish() that touched the network would wait out a connect or ack timeout (≥ 0.5 s
# here). Scheduling on a shared 2-core machine alone can stall a thread for tens of ms, so
# the guard sits between the two: it catches blocking, not a slow scheduler.
PUBLISH_BOUND_S = 0.25


def _expected(n: int, prefix: str = "s", start: int = 0) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(start, start + n)]


def _down_url() -> str:
    return f"ws://127.0.0.1:{free_port()}/api/ws"  # nothing listens there


def _deltas(before: dict[str, int], *names: str) -> tuple[int, ...]:
    now = counters.snapshot()
    return tuple(now.get(n, 0) - before.get(n, 0) for n in names)


@pytest.fixture
def clients() -> Iterator[list[BusClient]]:
    """Every client a test makes is shut down afterwards, even when the test fails."""
    made: list[BusClient] = []
    yield made
    for c in made:
        c.shutdown(5000)


def _client(made: list[BusClient], url: str, spool: Spool, **kw: Any) -> BusClient:
    kw.setdefault("register_atexit", False)
    client = BusClient(url, spool, **kw)
    made.append(client)
    return client


def test_publish_delivers_in_order_and_counts(tmp_path: Path, clients: list[BusClient]) -> None:
    """Published envelopes reach a subscriber in order; `published` and on_published agree."""
    seen: list[str] = []
    before = counters.snapshot()
    with BusProcess() as bus, Subscriber(bus.url) as sub:
        client = _client(clients, bus.url, Spool(tmp_path), on_published=lambda b: seen.extend(ids(b)))
        for i in range(60):
            client.publish(envelope(i))
        assert client.force_flush(5000)
        assert ids(sub.wait_for_count(60)) == _expected(60)
    assert seen == _expected(60)
    assert _deltas(before, "published", "spool_writes", "dropped_count") == (60, 0, 0)


def test_bus_down_from_the_start_then_up_delivers_exactly_once_in_order(
    tmp_path: Path, clients: list[BusClient]
) -> None:
    """Spooled while the bus is down, delivered when it starts: each once, in publish order, spool empty."""
    port = free_port()
    spool = Spool(tmp_path / "spool")
    record = tmp_path / "bus.jsonl"
    before = counters.snapshot()
    client = _client(clients, f"ws://127.0.0.1:{port}/api/ws", spool, flush_interval_ms=100)
    for i in range(200):
        client.publish(envelope(i))
    assert client.force_flush(5000) is False  # nothing listens: spooled, not delivered
    assert spool.status()["envelopes"] == 200
    with BusProcess(port=port, record=record):
        for i in range(200, 300):  # newer envelopes must queue behind the spooled ones
            client.publish(envelope(i))
        wait_for(lambda: len(read_record(record)) >= 300, 20, what="300 envelopes at the bus")
        assert client.force_flush(5000)
    assert ids(read_record(record)) == _expected(300)
    assert spool.status()["files"] == 0 and spool.status()["claimed"] == 0
    assert _deltas(before, "spool_writes", "spool_replayed", "published", "dropped_count") == (
        200,
        200,
        300,
        0,
    )


def test_restarted_app_replays_the_spool_to_a_subscriber(tmp_path: Path, clients: list[BusClient]) -> None:
    """What one run spooled at exit, the next run delivers first, in order, exactly once."""
    spool_dir = tmp_path / "spool"
    first = _client(clients, _down_url(), Spool(spool_dir))
    for i in range(100):
        first.publish(envelope(i))
    first.shutdown(5000)  # bus down: nothing lost, all spooled
    assert Spool(spool_dir).status()["envelopes"] == 100
    with BusProcess() as bus, Subscriber(bus.url) as sub:
        second = _client(clients, bus.url, Spool(spool_dir))
        second.publish(envelope(100))
        got = sub.wait_for_count(101)
        assert second.force_flush(5000)
    assert ids(got) == _expected(101)
    assert Spool(spool_dir).status()["files"] == 0


def test_bus_sigkilled_mid_stream_loses_nothing(tmp_path: Path, clients: list[BusClient]) -> None:
    """5,000 envelopes, the bus SIGKILLed midway and restarted: every id arrives, none lost."""
    n = 5000
    record = tmp_path / "bus.jsonl"
    spool = Spool(tmp_path / "spool")
    acked: list[str] = []
    before = counters.snapshot()
    bus = BusProcess(record=record).start()
    client = _client(
        clients,
        bus.url,
        spool,
        queue_size=n,
        flush_interval_ms=50,
        on_published=lambda b: acked.extend(ids(b)),
    )
    worst = 0.0
    try:
        for i in range(n):
            t0 = time.perf_counter()
            client.publish(envelope(i, "k"))
            worst = max(worst, time.perf_counter() - t0)
            if i % 50 == 49:
                time.sleep(0.005)  # a paced producer: the stream spans the crash
            if i == 2000:
                wait_for(lambda: len(read_record(record)) >= 1000, 20, 0.05, "bus busy before the kill")
                bus.kill()
            if i == 3500:
                bus = BusProcess(port=bus.port, record=record).start()
        wait_for(lambda: len({*ids(read_record(record))}) >= n, 30, 0.1, "all ids at the restarted bus")
        assert client.force_flush(10_000)
    finally:
        client.shutdown(5000)
        bus.stop()
    recorded = ids(read_record(record))
    first_seen = list(dict.fromkeys(recorded))
    wire_duplicates = len(recorded) - len(first_seen)
    spooled, replayed, dropped = _deltas(before, "spool_writes", "spool_replayed", "dropped_count")
    print(f"SIGKILL run: {wire_duplicates} wire duplicates, {spooled} envelopes spooled and replayed")
    assert first_seen == _expected(n, "k")  # complete, and in publish order
    assert wire_duplicates <= 50  # at most the batch in flight at the kill, resent
    assert sorted(acked) == _expected(n, "k")  # each acknowledged exactly once
    assert spool.status()["files"] == 0 and spool.status()["claimed"] == 0
    assert spooled > 0 and replayed == spooled  # the crash really sent envelopes through the spool
    assert dropped == 0
    assert worst < PUBLISH_BOUND_S, f"slowest publish() took {worst * 1000:.1f} ms"


def test_publish_never_waits_while_the_bus_is_down(tmp_path: Path, clients: list[BusClient]) -> None:
    """5,000 publishes with no bus: each returns fast, and every envelope is spooled or counted dropped."""
    before = counters.snapshot()
    client = _client(clients, _down_url(), Spool(tmp_path))
    worst = 0.0
    for i in range(5000):
        t0 = time.perf_counter()
        client.publish(envelope(i))
        worst = max(worst, time.perf_counter() - t0)
    client.shutdown(10_000)
    assert worst < PUBLISH_BOUND_S, f"slowest publish() took {worst * 1000:.1f} ms"
    spooled, dropped = _deltas(before, "spool_writes", "dropped_count")
    assert spooled + dropped == 5000
    assert Spool(tmp_path).status()["envelopes"] == spooled


def test_a_bus_that_never_answers_blocks_nobody(tmp_path: Path, clients: list[BusClient]) -> None:
    """A socket that accepts TCP but never answers the handshake: publish stays fast, shutdown bounded."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)  # never accept()ed: the kernel completes TCP handshakes, nobody speaks
        url = f"ws://127.0.0.1:{blackhole.getsockname()[1]}/api/ws"
        client = _client(clients, url, Spool(tmp_path), connect_timeout=0.5, flush_interval_ms=50)
        worst = 0.0
        for i in range(500):
            t0 = time.perf_counter()
            client.publish(envelope(i))
            worst = max(worst, time.perf_counter() - t0)
            if i % 100 == 99:
                time.sleep(0.1)
        t0 = time.monotonic()
        client.shutdown(3000)
        took = time.monotonic() - t0
    assert worst < PUBLISH_BOUND_S, f"slowest publish() took {worst * 1000:.1f} ms"
    assert took < 4.0
    assert Spool(tmp_path).status()["envelopes"] == 500


def test_full_queue_drops_the_oldest_and_counts(tmp_path: Path, clients: list[BusClient]) -> None:
    """Past queue_size the oldest envelopes go, counted in dropped_count; the newest survive."""
    before = counters.snapshot()
    client = _client(
        clients, _down_url(), Spool(tmp_path), queue_size=10, batch_size=1000, flush_interval_ms=60_000
    )
    for i in range(100):
        client.publish(envelope(i))
    assert client.queue_depth == 10
    client.shutdown(5000)
    assert _deltas(before, "dropped_count") == (90,)
    batch = Spool(tmp_path).claim_oldest()
    assert batch is not None and ids(batch.envelopes) == _expected(10, start=90)


def test_shutdown_is_idempotent_and_later_publishes_are_counted(
    tmp_path: Path, clients: list[BusClient]
) -> None:
    """A second shutdown does nothing; a publish after shutdown is dropped and counted."""
    client = _client(clients, _down_url(), Spool(tmp_path))
    client.publish(envelope(0))
    client.shutdown(5000)
    client.shutdown(5000)
    before = counters.snapshot()
    client.publish(envelope(1))
    assert _deltas(before, "dropped_count") == (1,)
    assert Spool(tmp_path).status()["envelopes"] == 1


def test_envelopes_without_an_id_are_rejected_at_publish(tmp_path: Path, clients: list[BusClient]) -> None:
    """No metadata.stimulus_id: counted in bus_rejected, never queued or spooled."""
    before = counters.snapshot()
    client = _client(clients, _down_url(), Spool(tmp_path))
    client.publish({"type": "membrane.inject", "metadata": {}})
    client.publish({"type": "membrane.inject"})
    client.shutdown(5000)
    assert _deltas(before, "bus_rejected", "spool_writes") == (2, 0)


def test_envelopes_the_bus_rejects_are_counted_not_spooled(tmp_path: Path, clients: list[BusClient]) -> None:
    """An envelope the bus refuses is counted once and dropped; its batch-mates are delivered."""
    record = tmp_path / "bus.jsonl"
    before = counters.snapshot()
    with BusProcess(record=record) as bus:
        client = _client(clients, bus.url, Spool(tmp_path / "spool"))
        client.publish(envelope(0))
        client.publish(envelope(1, type="membrane.bogus"))
        client.publish(envelope(2))
        assert client.force_flush(5000)
    assert ids(read_record(record)) == ["s-000000", "s-000002"]
    assert _deltas(before, "bus_rejected", "published", "spool_writes") == (1, 2, 0)


def test_refused_token_spools_and_logs_once(
    tmp_path: Path, clients: list[BusClient], caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP 401 from the bus: envelopes go to the spool, and the problem is logged once, not per try."""
    spool = Spool(tmp_path)
    with (
        BusProcess(token="sekrit") as bus,
        caplog.at_level(logging.WARNING, logger="membrane_otel.membrane._bus"),
    ):
        client = _client(clients, bus.url, spool, token="wrong")
        for i in range(3):
            client.publish(envelope(i))
            assert client.force_flush(5000) is False
    lines = [r.getMessage() for r in caplog.records if r.name == "membrane_otel.membrane._bus"]
    assert len(lines) == 1 and "HTTP 401" in lines[0]
    assert spool.status()["envelopes"] == 3


def test_flush_spool_replays_everything_and_raises_when_down(tmp_path: Path) -> None:
    """flush_spool() sends every batch and returns the count; with no bus it raises and keeps the files."""
    spool = Spool(tmp_path / "spool")
    for i in range(0, 30, 10):
        spool.write([envelope(j) for j in range(i, i + 10)])
    with pytest.raises(BusUnavailable):
        flush_spool(_down_url(), spool)
    assert spool.status()["envelopes"] == 30
    record = tmp_path / "bus.jsonl"
    with BusProcess(record=record) as bus:
        assert flush_spool(bus.url, spool) == 30
    assert ids(read_record(record)) == _expected(30)
    assert spool.status()["files"] == 0


def test_cli_spool_flush(tmp_path: Path) -> None:
    """`membrane-otel spool flush` reports what it sent; with the bus down it exits 1 and keeps the spool."""
    spool_dir = tmp_path / "spool"
    Spool(spool_dir).write([envelope(i) for i in range(5)])
    down = subprocess.run(
        [*CLI, "spool", "flush", "--dir", str(spool_dir), "--url", _down_url()],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=30,
    )
    assert down.returncode == 1
    assert "0 of 5 envelopes delivered, 5 still spooled" in down.stderr
    with BusProcess() as bus:
        up = subprocess.run(
            [*CLI, "spool", "flush"],
            capture_output=True,
            text=True,
            timeout=30,
            env=cli_env(MEMBRANE_SPOOL_DIR=str(spool_dir), MEMBRANE_BUS_URL=bus.url),
        )
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"flushed 5 envelopes to {bus.url}; 0 left in {spool_dir}"


def test_two_processes_flushing_one_spool_deliver_each_envelope_once(tmp_path: Path) -> None:
    """Two `spool flush` processes on one directory at once: every envelope reaches the bus exactly once."""
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, fsync=False)
    for f in range(200):
        spool.write([envelope(f * 5 + j) for j in range(5)])
    record = tmp_path / "bus.jsonl"
    with BusProcess(record=record) as bus:
        procs = [
            subprocess.Popen(
                [*CLI, "spool", "flush", "--dir", str(spool_dir), "--url", bus.url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=cli_env(),
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recorded = ids(read_record(record))
    assert sorted(recorded) == _expected(1000)  # none missing, none twice
    assert spool.status()["files"] == 0


def test_forked_child_publishes_on_its_own(tmp_path: Path, clients: list[BusClient]) -> None:
    """After fork the child gets its own flusher and an empty queue: nothing is sent twice."""
    record = tmp_path / "bus.jsonl"
    with BusProcess(record=record) as bus:
        client = _client(
            clients, bus.url, Spool(tmp_path / "spool"), batch_size=1000, flush_interval_ms=60_000
        )
        client.publish(envelope(0, "parent"))
        with warnings.catch_warnings():  # 3.12+ warns about fork with threads; that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: publish, flush, leave without running pytest's teardown
            ok = False
            try:
                client.publish(envelope(0, "child"))
                ok = client.force_flush(5000)
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.force_flush(5000)
    assert sorted(ids(read_record(record))) == ["child-000000", "parent-000000"]


def test_without_acks_sent_counts_as_delivered(tmp_path: Path, clients: list[BusClient]) -> None:
    """require_ack=False (a bus that never acks): envelopes flow, and unread replies never back up."""
    with BusProcess() as bus, Subscriber(bus.url) as sub:
        client = _client(clients, bus.url, Spool(tmp_path), require_ack=False, batch_size=5)
        for i in range(200):
            client.publish(envelope(i))
        assert client.force_flush(5000)
        assert ids(sub.wait_for_count(200)) == _expected(200)
    assert Spool(tmp_path).status()["files"] == 0


def test_a_frame_too_big_for_the_bus_is_rejected_not_retried(
    tmp_path: Path, clients: list[BusClient]
) -> None:
    """The bus closes on an oversized frame (1009): that envelope is counted rejected, never spooled."""
    before = counters.snapshot()
    record = tmp_path / "bus.jsonl"
    with BusProcess(record=record) as bus:
        client = _client(clients, bus.url, Spool(tmp_path / "spool"), batch_size=1)
        client.publish(envelope(0, content="x" * (17 * 1024 * 1024)))
        client.publish(envelope(1))
        wait_for(lambda: read_record(record), 10, what="the small envelope at the bus")
        client.force_flush(5000)
    assert ids(read_record(record)) == ["s-000001"]
    assert _deltas(before, "bus_rejected", "spool_writes") == (1, 0)
