"""Chaos scenarios (``seeds/002``'s Layer 2 chaos, adapted to this pipeline).

Each scenario runs a real application process under ``membrane_otel.configure()`` (with the
real reference bus where the membrane is involved) and asserts what the design promises to
keep: every record accounted for, nothing lost that is not counted, the ledger whole and its
chain intact, and the application's own work not held up by telemetry.

Measured figures are printed (``pytest -s`` shows them) so a regression shows as a number.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from membrane_otel.ledger._verify import verify
from tests._bus_helpers import BusProcess, Subscriber, free_port, read_record
from tests._helpers import clean_env, read_ledger

# The bounds these scenarios promise (generous: CI machines are noisy and have 2 cores).
RSS_GROWTH_BOUND_MB = 60  # error storm: 20,000 errors may not grow the process by more
# 20,000 logger.exception calls paced at 2,500/s take 8 s when the machine keeps up. This is a
# stall guard, not a speed figure (those are the benchmarks' storm row: caller latency and
# process CPU against plain OTel, side by side): the shared CI machine has run this very loop
# in 19-22 s on the code of several commits, the same day.
STORM_SECONDS_BOUND = 60
SLOW_EXPORTER_RATIO_BOUND = 3.0  # app loop time with a slow exporter / with a fast one


def run_app(code: str, env: dict[str, str], tmp: Path, timeout: float = 120) -> dict[str, Any]:
    """Run ``code`` as a real process; its last stdout line is a JSON report.

    stderr goes to a file: the console fallback prints every error there, and a pipe nobody
    reads would block the application.
    """
    err_path = tmp / "app.stderr"
    with open(err_path, "w") as err:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=timeout,
        )
    if done.returncode != 0:
        tail = err_path.read_text()[-3000:]
        raise AssertionError(f"app exited {done.returncode}: {tail}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def figures(name: str, **values: Any) -> None:
    print(f"\n[chaos] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


# --------------------------------------------------------------------------- error storm

STORM = """
import json, logging, time
import psutil
import membrane_otel
membrane_otel.configure()
log = logging.getLogger("storm")
N = 10_000
RATE = 2500
# 10,000 distinct call sites: distinct function names, so distinct stack fingerprints.
sites = {}
exec(compile("\\n".join(f"def site_{i}():\\n    raise KeyError('distinct failure {i}')" for i in range(N)),
             "generated_sites.py", "exec"), sites)
def identical():
    raise ValueError("identical failure")
proc = psutil.Process()
rss0 = peak = proc.memory_info().rss
started = time.perf_counter()
def pace(done):
    # RATE errors a second, in bursts of 100: the storm a busy service produces, not a
    # benchmark of how fast one thread can call logging.
    if done % 100 == 0:
        ahead = done / RATE - (time.perf_counter() - started)
        if ahead > 0:
            time.sleep(ahead)
    if done % 1000 == 0:
        global peak
        peak = max(peak, proc.memory_info().rss)
for i in range(N):
    try:
        identical()
    except ValueError:
        log.exception("identical failure")
    pace(i + 1)
for i in range(N):
    try:
        sites[f"site_{i}"]()
    except KeyError:
        log.exception("distinct failure %d", i)
    pace(N + i + 1)
storm_s = time.perf_counter() - started
membrane_otel.force_flush()
peak = max(peak, proc.memory_info().rss)
# The per-type window (15 s, +10 % jitter at most) reopens; one more error goes out and
# carries the count of everything held back since the storm's first envelope.
time.sleep(16.6)
def closing():
    raise RuntimeError("after the storm")
try:
    closing()
except RuntimeError:
    log.exception("after the storm")
membrane_otel.force_flush()
print(json.dumps({"storm_s": storm_s, "rss_growth_mb": (peak - rss0) / 1e6, "metrics": membrane_otel.get_metrics()}))
"""


@pytest.mark.slow
def test_error_storm_is_throttled_counted_and_fully_ledgered(tmp_path: Path) -> None:
    """20,000 errors at 2,500/s: bounded memory, the membrane gets the throttled stream whose
    held_back sums to every suppressed record, and the ledger keeps all 20,001 lines, chain intact."""
    record = tmp_path / "bus.jsonl"
    with BusProcess(record=record) as bus, Subscriber(bus.url) as sub:
        # The watchdog off: its own alert records (a queue over 1,000 in a storm) would be counted
        # as produced logs beside the app's 20,001; its alerts are tested in test_watchdog.py.
        env = clean_env(
            tmp_path, MEMBRANE_BUS_URL=bus.url, OTEL_TRACES_EXPORTER="none", MEMBRANE_WATCHDOG="0"
        )
        report = run_app(STORM, env, tmp_path, timeout=150)
        m = report["metrics"]
        made = 20_001
        received = sub.wait_for_count(m["published"], timeout=15)
    figures(
        "error storm",
        storm_s=round(report["storm_s"], 2),
        achieved_per_s=round(20_000 / report["storm_s"]),
        rss_growth_mb=round(report["rss_growth_mb"], 1),
        envelopes=m["envelopes"],
        published=m["published"],
        suppressed=m["suppressed"],
        held_back=[e["metadata"].get("held_back") for e in received],
    )
    assert report["rss_growth_mb"] < RSS_GROWTH_BOUND_MB
    assert report["storm_s"] < STORM_SECONDS_BOUND
    lines = read_ledger(tmp_path / "ledger.jsonl")
    errors = [ln for ln in lines if ln["event"] == "script_error"]
    # Whatever happens, each record is in the ledger or counted as dropped from its queue.
    assert len(errors) + m.get("dropped.logs.ledger", 0) == made
    # Every record produced reached the ledger; nothing dropped from a queue.
    assert m["produced_logs"] == made
    assert m["dropped_logs"] == 0 and m["export_failed"] == 0
    assert m["exported"] == made
    # The membrane path: each record became an envelope that was either delivered or suppressed.
    assert m["envelopes"] == made
    assert m["published"] + m["suppressed"] + m["dropped_count"] + m["rejected"] == made
    assert m["dropped_count"] == 0 and m["rejected"] == 0
    assert 2 <= m["published"] <= 10  # throttled: a handful out of 20,001
    # ...and the held-back counts the delivered envelopes carry add up to every suppressed one.
    assert len({e["metadata"]["stimulus_id"] for e in received}) == m["published"]
    assert sum(int(e["metadata"].get("held_back") or 0) for e in received) == m["suppressed"]
    assert len(read_record(record)) == m["published"]
    # The ledger keeps every record (the throttle applies to the membrane only).
    assert len(errors) == made
    assert len({ln["record_id"] for ln in errors}) == made
    assert sum(ln.get("message") == "identical failure" for ln in errors) == 10_000
    assert len({ln.get("membrane.fingerprint") for ln in errors}) >= 10_001  # distinct sites, distinct prints
    assert verify(tmp_path / "ledger.jsonl").ok


# --------------------------------------------------------------------------- bus down and up

FLAPPING = """
import json, logging, time
import membrane_otel
from membrane_otel.membrane._spool import Spool
settings = membrane_otel.configure()
log = logging.getLogger("flap")
N = 3000
started = time.perf_counter()
for i in range(N):
    log.error("order %d failed", i)
    if i % 50 == 49:
        time.sleep(0.12)  # a steady stream over ~7 s, while the bus is killed and restarted
app_s = time.perf_counter() - started
# Wait until everything spooled while the bus was down has been replayed.
spool = Spool(settings.spool_dir)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    membrane_otel.force_flush(2000)
    st = spool.status()
    if st["envelopes"] == 0 and st["claimed"] == 0:
        break
    time.sleep(0.2)
print(json.dumps({"app_s": app_s, "spool": spool.status(), "metrics": membrane_otel.get_metrics()}))
"""


@pytest.mark.slow
def test_bus_killed_and_restarted_three_times_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL + restart of the bus 3 times mid-stream: every error's envelope reaches the bus (by stimulus_id)."""
    port = free_port()
    record = tmp_path / "bus.jsonl"
    bus = BusProcess(port, record=record).start()
    env = clean_env(tmp_path, MEMBRANE_BUS_URL=bus.url, MEMBRANE_THROTTLE="0", OTEL_TRACES_EXPORTER="none")
    err = open(tmp_path / "app.stderr", "w")  # closed in finally, after the app exits
    app = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FLAPPING)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    kills = 0
    try:
        for _ in range(3):
            time.sleep(1.5)
            bus.kill()
            kills += 1
            time.sleep(0.7)  # down long enough for batches to go to the spool
            bus = BusProcess(port, record=record).start()
        out, _ = app.communicate(timeout=120)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(10)
        err.close()
        bus.stop()
    assert app.returncode == 0, (tmp_path / "app.stderr").read_text()[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    m = report["metrics"]
    lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    # The envelope's stimulus_id ends with the record id's last 12 characters (translate.log_envelope).
    expected = {ln["record_id"][-12:] for ln in lines}
    delivered = [e["metadata"]["stimulus_id"] for e in read_record(record)]
    got = {sid[-12:] for sid in delivered}
    figures(
        "bus flapping",
        kills=kills,
        errors=len(lines),
        delivered_unique=len(got),
        duplicates=len(delivered) - len(set(delivered)),
        spool_writes=m["spool_writes"],
        published=m["published"],
        app_s=round(report["app_s"], 2),
    )
    assert kills == 3
    assert len(lines) == 3000
    assert m["spool_writes"] > 0  # the outages really sent batches to the spool
    assert report["spool"]["envelopes"] == 0 and report["spool"]["claimed"] == 0
    assert m["dropped_count"] == 0 and m.get("bus_rejected", 0) == 0
    assert expected - got == set()  # nothing lost
    assert len(got) == 3000


# --------------------------------------------------------------------------- full queue

FULL_QUEUE = """
import json, logging, time
import membrane_otel
membrane_otel.configure()
log = logging.getLogger("fast")
started = time.perf_counter()
for i in range(20_000):
    log.warning("tick %d", i)
app_s = time.perf_counter() - started
membrane_otel.force_flush()
print(json.dumps({"app_s": app_s, "metrics": membrane_otel.get_metrics()}))
"""


def test_a_full_queue_drops_the_oldest_and_counts_every_one(tmp_path: Path) -> None:
    """A 100-record queue under a fast producer drops, and produced == exported + dropped exactly."""
    # The exporter is woken only by a full batch (1,000, more than the queue holds) or a minute's
    # interval: the queue surely overflows, whatever the machine's speed (warnings drop oldest).
    env = clean_env(
        tmp_path,
        MEMBRANE_QUEUE_SIZE="100",
        MEMBRANE_BATCH_SIZE="1000",
        MEMBRANE_FLUSH_INTERVAL_MS="60000",
        OTEL_LOGS_EXPORTER="ledger",
        OTEL_TRACES_EXPORTER="none",
    )
    report = run_app(FULL_QUEUE, env, tmp_path)
    m = report["metrics"]
    lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "log"]
    figures("full queue", produced=m["produced_logs"], exported=m["exported"], dropped=m["dropped_logs"])
    assert m["produced_logs"] == 20_000
    assert m["dropped_logs"] > 0
    assert m["produced_logs"] == m["exported"] + m["dropped_logs"]
    assert len(lines) == m["exported"]
    # Drop-oldest: the newest record always survives.
    assert lines[-1]["message"] == "tick 19999"
    assert verify(tmp_path / "ledger.jsonl").ok


# --------------------------------------------------------------------------- slow exporter

SLOW_EXPORTER = """
import json, logging, statistics, time
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
import membrane_otel
from membrane_otel._internal.batching import BatchLogProcessor
membrane_otel.configure()

class Exporter(LogRecordExporter):
    name = "chaos"
    def __init__(self):
        self.delay = 0.0
        self.exported = 0
    def export(self, batch):
        if self.delay:
            time.sleep(self.delay)  # a downstream that takes 50 ms per batch
        self.exported += len(batch)
        return LogRecordExportResult.SUCCESS
    def shutdown(self):
        pass
    def force_flush(self, timeout_millis=30000):
        return True

exporter = Exporter()
get_logger_provider().add_log_record_processor(BatchLogProcessor(exporter))
log = logging.getLogger("work")
log.propagate = True

def app_round(n):
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += sum(range(50))  # the application's own work
        log.warning("step %d", i)
    return time.perf_counter() - started

app_round(500)  # warm-up
membrane_otel.force_flush()
times = {"fast": [], "slow": []}
for _ in range(3):
    for kind, delay in (("fast", 0.0), ("slow", 0.05)):
        exporter.delay = delay
        times[kind].append(app_round(4000))
        exporter.delay = 0.0
        membrane_otel.force_flush()
print(json.dumps({"times": times, "exported": exporter.exported, "metrics": membrane_otel.get_metrics()}))
"""


@pytest.mark.slow
def test_a_slow_exporter_does_not_slow_the_application(tmp_path: Path) -> None:
    """The same loop with a 50 ms/batch exporter takes at most 3x the time it takes with a fast one."""
    env = clean_env(tmp_path, OTEL_LOGS_EXPORTER="none", OTEL_TRACES_EXPORTER="none")
    report = run_app(SLOW_EXPORTER, env, tmp_path)
    fast = statistics.median(report["times"]["fast"])
    slow = statistics.median(report["times"]["slow"])
    m = report["metrics"]
    figures(
        "slow exporter",
        fast_s=round(fast, 3),
        slow_s=round(slow, 3),
        ratio=round(slow / fast, 2),
        dropped=m["dropped_logs"],
        exported=report["exported"],
    )
    assert slow / fast <= SLOW_EXPORTER_RATIO_BOUND
    # The slow downstream could not keep up: the queue dropped the oldest, and counted every one.
    assert m["dropped_logs"] > 0
    assert m["produced_logs"] == report["exported"] + m["dropped_logs"]
