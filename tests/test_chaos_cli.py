"""``membrane-otel chaos list`` / ``chaos run NAME``: the chaos scenarios runnable by users."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests._helpers import clean_env


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "membrane_otel.cli", "chaos", *args],
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_chaos_list_names_every_scenario(tmp_path: Path) -> None:
    """`chaos list` prints each scenario with what it proves."""
    proc = _cli(tmp_path, "list")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert names == ["error_storm", "queue_flood", "ledger_writers", "bus_outage"]


def test_chaos_run_prints_a_report_and_touches_nothing_of_the_users(tmp_path: Path) -> None:
    """`chaos run` runs real processes in a scratch directory and reports PASS with figures."""
    proc = _cli(tmp_path, "run", "bus_outage", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    (report,) = doc["scenarios"]
    assert doc["ok"] and report["name"] == "bus_outage" and report["figures"]["spooled"] == 50
    assert not (tmp_path / "ledger.jsonl").exists() and not (tmp_path / "spool").exists()
    proc = _cli(tmp_path, "run", "error_storm")
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("PASS  error_storm") and "ledger_kept=2000" in proc.stdout


def test_unknown_scenario_is_one_line(tmp_path: Path) -> None:
    """An unknown name: rc 2, one line pointing at `chaos list`."""
    proc = _cli(tmp_path, "run", "kernel_kill")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "membrane-otel: no chaos scenario 'kernel_kill' (see `membrane-otel chaos list`)"
    )
