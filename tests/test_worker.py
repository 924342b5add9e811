"""The one background-worker shape: bounded, drops and counts, flush and shutdown on one deadline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from membrane_otel._internal import counters
from membrane_otel._internal.worker import Worker, one_deadline
from tests._helpers import clean_env, read_ledger


def _collecting(name: str) -> tuple[Worker[int], list[int]]:
    seen: list[int] = []

    def handle(batch: list[int], deadline: float | None) -> bool:
        seen.extend(batch)
        return True

    return Worker(name, handle, max_queue=100, batch_size=10, interval_s=60.0), seen


def test_flush_hands_everything_over_in_order() -> None:
    """force_flush returns True once every queued item reached the handler, in order."""
    w, seen = _collecting("t-flush")
    for i in range(55):
        w.put(i)
    assert w.force_flush(5000)
    assert seen == list(range(55))
    assert w.shutdown(5000)


def test_a_full_queue_drops_the_oldest_and_counts() -> None:
    """Past max_queue the oldest items go, counted by name; the newest survive."""
    gate = threading.Event()

    def handle(batch: list[int], deadline: float | None) -> bool:
        gate.wait(5)
        return True

    before = counters.get("dropped.t-drop")
    w: Worker[int] = Worker("t-drop", handle, max_queue=10, batch_size=1000, interval_s=60.0)
    for i in range(25):
        w.put(i)
    assert counters.get("dropped.t-drop") - before == 15
    assert w.depth == 10
    gate.set()
    w.shutdown(5000)


def test_shutdown_is_idempotent_and_late_items_are_counted() -> None:
    """A second shutdown does nothing; a put after shutdown is refused and counted."""
    w, seen = _collecting("t-late")
    w.put(1)
    assert w.shutdown(5000)
    assert w.shutdown(5000)
    before = counters.get("rejected_after_shutdown")
    assert w.put(2) is False
    assert counters.get("rejected_after_shutdown") - before == 1
    assert seen == [1]


def test_a_stuck_handler_is_abandoned_at_the_shared_deadline() -> None:
    """shutdown(timeout) inside one_deadline ends by the shared deadline and hands over what is held."""
    release = threading.Event()
    abandoned: list[int] = []

    def handle(batch: list[int], deadline: float | None) -> bool:
        release.wait(10)
        return True

    w: Worker[int] = Worker(
        "t-stuck", handle, max_queue=100, batch_size=5, interval_s=0.01, abandon=abandoned.extend
    )
    for i in range(20):
        w.put(i)
    time.sleep(0.05)  # let the worker pick up its first batch (and block in it)
    started = time.monotonic()
    with one_deadline(time.monotonic() + 0.3):
        assert w.shutdown(30_000) is False
    assert time.monotonic() - started < 2.0
    assert sorted(abandoned) == list(range(20))  # the in-flight batch and the queue
    release.set()


def test_a_handler_that_raises_is_counted_and_the_worker_lives_on() -> None:
    """An exception in the handler is counted; later items are still handled."""
    seen: list[int] = []

    def handle(batch: list[int], deadline: float | None) -> bool:
        if 0 in batch:
            raise RuntimeError("boom")
        seen.extend(batch)
        return True

    before = counters.get("export_errors.t-raise")
    w: Worker[int] = Worker("t-raise", handle, max_queue=100, batch_size=1, interval_s=60.0)
    w.put(0)
    assert w.force_flush(5000) is False
    w.put(1)
    assert w.force_flush(5000)
    assert seen == [1]
    assert counters.get("export_errors.t-raise") - before == 1
    w.shutdown(5000)


def test_a_forked_child_starts_empty_with_its_own_thread() -> None:
    """After fork the child has a running worker and none of the parent's items."""
    w, seen = _collecting("t-fork")
    w.put(1)
    pid = os.fork()
    if pid == 0:  # the child: leave without running pytest's teardown
        try:
            ok = w.running and w.depth == 0
            w.put(2)
            ok = ok and w.force_flush(5000) and seen == [2]
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert w.force_flush(5000) and seen == [1]
    w.shutdown(5000)


SHUTDOWN_APP = """
import json, logging, sys, time
import membrane_otel
from membrane_otel import setup_l2_logger
membrane_otel.configure()
log = setup_l2_logger("hang", "scripts/hang.py", console=False)
for i in range(50):
    log.error("failure %d", i)
t0 = time.monotonic()
membrane_otel.shutdown(2000)
took = time.monotonic() - t0
print(json.dumps({"took": took, "metrics": membrane_otel.get_metrics()}))
"""


def test_shutdown_spends_one_deadline_across_every_stage(tmp_path: Path) -> None:
    """A bus that accepts TCP and never answers: shutdown(2000) returns in about 2 s, not per stage,
    and the 50 errors are in the ledger, their envelopes spooled or counted."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)  # never accept()ed: the kernel completes TCP handshakes, nobody speaks
        env = clean_env(
            tmp_path,
            MEMBRANE_BUS_URL=f"ws://127.0.0.1:{blackhole.getsockname()[1]}/api/ws",
            OTEL_TRACES_EXPORTER="none",
            MEMBRANE_THROTTLE="0",
        )
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SHUTDOWN_APP)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    m = report["metrics"]
    assert report["took"] < 3.5, report["took"]
    lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert len(lines) == 50, (m, [ln["event"] for ln in read_ledger(tmp_path / "ledger.jsonl")][:60])
    assert m["envelopes"] == 50, m
    assert m["published"] + m["spool_writes"] + m["dropped_count"] >= 1
