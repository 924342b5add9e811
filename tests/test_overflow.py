"""Ledger events are never dropped: a burst that outgrows the queue overflows to disk, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from membrane_otel._internal import counters
from membrane_otel._internal.disk_buffer import DiskBuffer
from membrane_otel.ledger._verify import verify
from tests._helpers import clean_env, read_ledger

BURST = """
import json, sys
import membrane_otel
from membrane_otel import emit_event
membrane_otel.configure()
tag = sys.argv[1]
for i in range(2_500):
    emit_event("task_started", {"n": i, "proc": tag}, task_id=f"{tag}-{i}")
membrane_otel.shutdown()
print(json.dumps(membrane_otel.get_metrics()))
"""


def test_four_processes_of_2500_event_bursts_lose_nothing(tmp_path: Path) -> None:
    """4 processes x 2,500 emit_event in a loop: exactly 10,000 lines, each process in order, chain intact."""
    env = clean_env(tmp_path, OTEL_TRACES_EXPORTER="none")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(BURST), f"p{k}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for k in range(4)
    ]
    reports = []
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0
        reports.append(json.loads(out.strip().splitlines()[-1]))
    lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "task_started"]
    assert len(lines) == 10_000
    for k in range(4):
        mine = [ln["n"] for ln in lines if ln["proc"] == f"p{k}"]
        assert mine == list(range(2_500))  # the disk buffer drains in order
    assert all(r["dropped_logs"] == 0 for r in reports)
    assert sum(r["exported"] for r in reports) == 10_000
    assert verify(tmp_path / "ledger.jsonl").ok


def _buffer(tmp_path: Path, max_bytes: int = 1 << 20) -> DiskBuffer[dict[str, int]]:
    return DiskBuffer(
        tmp_path / "overflow",
        "t",
        max_bytes=max_bytes,
        encode=lambda d: json.dumps(d).encode(),
        decode=json.loads,
    )


def test_disk_buffer_returns_items_in_order_and_truncates_when_empty(tmp_path: Path) -> None:
    """Items come back oldest first in any slice size; the drained file is empty and private."""
    buf = _buffer(tmp_path)
    for i in range(1000):
        assert buf.push({"i": i})
    got: list[int] = []
    while len(buf):
        got.extend(d["i"] for d in buf.pop(37))
    assert got == list(range(1000))
    assert buf.path.stat().st_size == 0
    assert buf.path.stat().st_mode & 0o777 == 0o600
    buf.push({"i": 1000})
    assert [d["i"] for d in buf.pop(10)] == [1000]


def test_a_full_disk_buffer_drops_counts_and_reports(tmp_path: Path, caplog: object) -> None:
    """Over its byte cap the buffer refuses, counting overflow_dropped and dropped_logs."""
    before = counters.snapshot()
    buf = _buffer(tmp_path, max_bytes=100)
    kept = sum(buf.push({"i": i}) for i in range(50))
    after = counters.snapshot()
    assert 0 < kept < 50
    assert after.get("overflow_dropped", 0) - before.get("overflow_dropped", 0) == 50 - kept
    assert after.get("dropped_logs", 0) - before.get("dropped_logs", 0) == 50 - kept
    assert len(buf) == kept


def test_a_dead_process_file_is_adopted_once(tmp_path: Path) -> None:
    """The overflow file of a process that died is taken over by the next buffer, whole, once."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(child.stdout)
    (tmp_path / "overflow").mkdir(mode=0o700)
    orphan = tmp_path / "overflow" / f"t-{dead_pid}.jsonl"
    orphan.write_bytes(b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(5)))
    first, second = _buffer(tmp_path), _buffer(tmp_path)
    assert first.adopt_orphans() == 5
    assert second.adopt_orphans() == 0
    assert [d["i"] for d in first.pop(10)] == list(range(5))
    assert not orphan.exists()
    assert os.listdir(tmp_path / "overflow") == [first.path.name]


ERROR_BURST = """
import json, logging
import membrane_otel
membrane_otel.configure()
log = logging.getLogger("burst")
for i in range(3_000):
    log.error("distinct failure %d", i)
membrane_otel.shutdown()
print(json.dumps(membrane_otel.get_metrics()))
"""


def test_an_error_burst_past_the_membrane_queue_reaches_the_bus_whole(tmp_path: Path) -> None:
    """3,000 errors in a loop, a 50-record queue, the throttle off: every envelope reaches the
    real bus, in order, none dropped — the membrane queue overflows to disk like the ledger's."""
    from tests._bus_helpers import BusProcess, Subscriber

    with BusProcess() as bus, Subscriber(bus.url) as sub:
        env = clean_env(
            tmp_path,
            OTEL_TRACES_EXPORTER="none",
            MEMBRANE_BUS_URL=bus.url,
            MEMBRANE_QUEUE_SIZE="50",
            MEMBRANE_THROTTLE="0",
            MEMBRANE_WATCHDOG="0",
        )
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(ERROR_BURST)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        m = json.loads(done.stdout.strip().splitlines()[-1])
        received = sub.wait_for_count(3_000, timeout=60)
    assert m["dropped_logs"] == 0 and m["dropped_count"] == 0
    assert m.get("overflow_writes.logs.membrane", 0) > 0  # the burst did outgrow the queue
    bodies = [e["content"] for e in received]
    assert len(bodies) == 3_000
    numbers = [int(str(b).rsplit(" ", 1)[-1]) for b in bodies]
    assert numbers == list(range(3_000))  # the disk buffer drains in order
    assert len([ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln.get("level") == "ERROR"]) == 3_000
