"""The disk spool: crash-safe batches, oldest-first claims, a size cap, shared directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from membrane_otel._internal import counters
from membrane_otel.membrane._spool import Spool
from tests._bus_helpers import CLI, cli_env, envelope, ids


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_then_claim_returns_the_batch_and_ack_deletes_it(tmp_path: Path) -> None:
    """A written batch comes back whole from claim_oldest, and ack removes its file."""
    spool = Spool(tmp_path)
    batch = [envelope(i) for i in range(3)]
    spool.write(batch)
    claimed = spool.claim_oldest()
    assert claimed is not None and claimed.envelopes == batch
    spool.ack(claimed)
    assert os.listdir(tmp_path) == []
    assert spool.claim_oldest() is None


def test_claims_come_oldest_first_even_when_the_clock_steps_back(tmp_path: Path) -> None:
    """Replay order is write order, even if the wall clock jumps backwards between writes."""
    clock = FakeClock()
    spool = Spool(tmp_path, clock=clock)
    for i in range(5):
        clock.now += -10.0 if i == 3 else 1.0
        spool.write([envelope(i)])
    order = []
    while (b := spool.claim_oldest()) is not None:
        order += ids(b.envelopes)
        spool.ack(b)
    assert order == [f"s-{i:06d}" for i in range(5)]


def test_release_puts_a_batch_back_at_its_place_in_line(tmp_path: Path) -> None:
    """A released batch is claimed again before any newer one."""
    spool = Spool(tmp_path)
    spool.write([envelope(0)])
    spool.write([envelope(1)])
    first = spool.claim_oldest()
    assert first is not None
    spool.release(first)
    again = spool.claim_oldest()
    assert again is not None and ids(again.envelopes) == ["s-000000"]


def test_a_claimed_batch_is_not_offered_again(tmp_path: Path) -> None:
    """Two claims in a row get two different batches, then none."""
    spool = Spool(tmp_path)
    spool.write([envelope(0)])
    spool.write([envelope(1)])
    a, b = spool.claim_oldest(), spool.claim_oldest()
    assert a is not None and b is not None and a.name != b.name
    assert spool.claim_oldest() is None


def test_claims_of_dead_processes_are_recovered(tmp_path: Path) -> None:
    """A batch claimed by a process that died is put back and replayed."""
    spool = Spool(tmp_path)
    spool.write([envelope(7)])
    (name,) = os.listdir(tmp_path)
    os.rename(tmp_path / name, tmp_path / f"{name}.claimed-{_dead_pid()}")
    batch = spool.claim_oldest()
    assert batch is not None and ids(batch.envelopes) == ["s-000007"]


def test_claims_of_live_processes_are_left_alone(tmp_path: Path) -> None:
    """A batch claimed by a live process (our parent here) is not taken from it."""
    spool = Spool(tmp_path)
    spool.write([envelope(7)])
    (name,) = os.listdir(tmp_path)
    os.rename(tmp_path / name, tmp_path / f"{name}.claimed-{os.getppid()}")
    assert spool.claim_oldest() is None
    assert spool.status()["claimed"] == 1


def test_size_cap_drops_the_oldest_and_counts_envelopes(tmp_path: Path) -> None:
    """Over max_bytes the oldest files go first, and spool_dropped counts their envelopes."""
    one = len(json.dumps([envelope(0), envelope(1)], separators=(",", ":")))
    spool = Spool(tmp_path, max_bytes=int(one * 3.5))
    before = counters.get("spool_dropped")
    for i in range(0, 10, 2):
        spool.write([envelope(i), envelope(i + 1)])
    assert counters.get("spool_dropped") - before == 4
    remaining = []
    while (b := spool.claim_oldest()) is not None:
        remaining += ids(b.envelopes)
        spool.ack(b)
    assert remaining == [f"s-{i:06d}" for i in range(4, 10)]


def test_corrupt_file_is_moved_aside_and_replay_continues(tmp_path: Path) -> None:
    """A file that is not a JSON array of envelopes becomes *.corrupt; the next batch still comes."""
    spool = Spool(tmp_path)
    spool.write([envelope(0)])
    spool.write([envelope(1)])
    oldest = sorted(os.listdir(tmp_path))[0]
    (tmp_path / oldest).write_text('[{"type": "membrane.inj')
    batch = spool.claim_oldest()
    assert batch is not None and ids(batch.envelopes) == ["s-000001"]
    assert (tmp_path / f"{oldest}.corrupt").exists()
    assert spool.status()["corrupt"] == 1


def test_half_written_temp_files_are_invisible_and_cleaned_up(tmp_path: Path) -> None:
    """A writer that died before its rename leaves a temp file no reader sees; it is removed."""
    spool = Spool(tmp_path)
    stale = tmp_path / f".tmp-{_dead_pid()}-abc"
    stale.write_text("[{")
    assert spool.status()["files"] == 0
    assert spool.claim_oldest() is None
    assert not stale.exists()


def test_status_counts_files_envelopes_bytes_and_age(tmp_path: Path) -> None:
    """status() reads the directory: files, envelopes, bytes, and the age of the oldest."""
    clock = FakeClock()
    spool = Spool(tmp_path, clock=clock)
    spool.write([envelope(0), envelope(1)])
    spool.write([envelope(2)])
    clock.now += 42.0
    st = spool.status()
    assert (st["files"], st["envelopes"]) == (2, 3)
    assert st["bytes"] == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert 41.9 < st["oldest_age_s"] < 42.1


def test_counters_count_envelopes_written_and_replayed(tmp_path: Path) -> None:
    """spool_writes and spool_replayed count envelopes, not files."""
    spool = Spool(tmp_path)
    w, r = counters.get("spool_writes"), counters.get("spool_replayed")
    spool.write([envelope(0), envelope(1), envelope(2)])
    batch = spool.claim_oldest()
    assert batch is not None
    spool.ack(batch)
    assert (counters.get("spool_writes") - w, counters.get("spool_replayed") - r) == (3, 3)


_CLAIMER = """
import json, sys
from membrane_otel.membrane._spool import Spool
spool = Spool(sys.argv[1])
got = []
while (b := spool.claim_oldest()) is not None:
    got.append(b.name)
    spool.ack(b)
print(json.dumps(got))
"""


def test_two_processes_sharing_a_spool_never_claim_the_same_file(tmp_path: Path) -> None:
    """Concurrent claimers in two processes split the files between them, none twice."""
    spool = Spool(tmp_path, fsync=False)
    for i in range(400):
        spool.write([envelope(i)])
    names = set(os.listdir(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=30)[0]) for p in procs]
    a, b = (set(r) for r in results)
    assert not a & b
    assert a | b == names
    assert sum(len(r) for r in results) == 400
    assert os.listdir(tmp_path) == []


def test_cli_spool_status_describes_the_spool(tmp_path: Path) -> None:
    """`membrane-otel spool status` prints one line; --json prints the status object."""
    Spool(tmp_path).write([envelope(0), envelope(1)])
    human = subprocess.run(
        [*CLI, "spool", "status", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=30,
    )
    assert human.returncode == 0
    assert human.stdout.startswith(f"spool {tmp_path}: 1 files, 2 envelopes, ")
    as_json = subprocess.run(
        [*CLI, "spool", "status", "--json"],
        capture_output=True,
        text=True,
        env=cli_env(MEMBRANE_SPOOL_DIR=str(tmp_path)),
        timeout=30,
    )
    st = json.loads(as_json.stdout)
    assert (st["dir"], st["files"], st["envelopes"]) == (str(tmp_path), 1, 2)
