"""Error storms: identical errors coalesced before the expensive work, every error accounted for."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from membrane_otel import setup_l2_logger
from membrane_otel._internal import counters
from membrane_otel.testing import capture
from tests._helpers import clean_env, read_ledger


def _fail() -> None:
    raise ValueError("the same failure")


def _quiet(name: str) -> logging.Logger:
    logger = setup_l2_logger(name, f"scripts/{name}.py", console=False)
    return logger


def test_identical_errors_become_one_line_that_counts_them() -> None:
    """500 identical errors: few lines, their occurrences sum to 500, first_ts <= last_ts."""
    logger = _quiet("storm-same")
    before = counters.snapshot()
    with capture() as got:
        for _ in range(500):
            try:
                _fail()
            except ValueError:
                logger.exception("the same failure")
    lines = got.ledger_lines("script_error")
    after = counters.snapshot()
    # Every error is on a line or counted on one (so there is at least one line)...
    assert sum(ln["occurrences"] for ln in lines) == 500
    # ...and coalesced: 500 errors raised back to back fit in a few L2 windows (one, on an idle
    # machine), so at most a tenth become lines of their own (uncoalesced: 500 lines).
    assert len(lines) <= 50, f"{len(lines)} lines for 500 identical errors"
    assert all(ln["first_ts"] <= ln["last_ts"] for ln in lines)
    assert after["l2_errors"] - before.get("l2_errors", 0) == 500
    assert after["coalesced"] - before.get("coalesced", 0) == 500 - len(lines)
    (first, *_) = got.envelopes
    assert first["metadata"]["occurrences"] == lines[0]["occurrences"]


def test_distinct_errors_are_not_coalesced() -> None:
    """Different messages (or call sites) stay separate lines, each with occurrences 1."""
    logger = _quiet("storm-distinct")
    with capture() as got:
        for i in range(20):
            logger.error("failure number %d", i)
    lines = got.ledger_lines("script_error")
    assert len(lines) == 20
    assert {ln["occurrences"] for ln in lines} == {1}
    assert [ln["message"] for ln in lines] == [f"failure number {i}" for i in range(20)]


STORM = """
import json, logging, time
import membrane_otel
from membrane_otel import setup_l2_logger
membrane_otel.configure()
log = setup_l2_logger("storm", "scripts/storm.py", console=False)
def same():
    raise ValueError("same")
sites = {}
exec(compile("\\n".join(f"def site_{i}():\\n    raise KeyError('distinct {i}')" for i in range(500)),
             "generated_sites.py", "exec"), sites)
end = time.perf_counter() + 1.5
n = 0
while time.perf_counter() < end:  # one producer thread at full speed
    try:
        same() if n % 2 else sites[f"site_{n % 500}"]()
    except Exception:
        log.exception("failure %s", "same" if n % 2 else n % 500)
    n += 1
membrane_otel.shutdown()
print(json.dumps({"n": n, "metrics": membrane_otel.get_metrics()}))
"""


def test_a_full_speed_storm_accounts_for_every_error(tmp_path: Path) -> None:
    """One thread logging as fast as it can: every error is a line or a count on one, or counted dropped."""
    env = clean_env(tmp_path, OTEL_TRACES_EXPORTER="none")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(STORM)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    m, n = report["metrics"], report["n"]
    lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert m["l2_errors"] == n
    # Each error: on a ledger line (as one of its occurrences) or counted where it was lost.
    assert sum(ln["occurrences"] for ln in lines) + m["dropped_logs"] + m["rejected"] == n
    # The SDK's conservation still closes over the records that reached it.
    assert m["produced_logs"] == m["exported"] + m["dropped_logs"] - _l2_drops(m) + m["rejected"]


def _l2_drops(m: dict[str, int]) -> int:
    # Drops in the L2 renderer's queue happen before the SDK sees the record.
    return int(m.get("dropped.l2", 0))


SECRET_APP = """
from membrane_otel import setup_l2_logger
log = setup_l2_logger("sec", "scripts/sec.py", console=False)
def fail():
    token = "sess-9f8e7d6c"  # a secret of the user's own form, in the source line of the stack too
    raise RuntimeError(f"login with {token} refused")
for _ in range(3):  # identical: coalesced, still redacted
    try:
        fail()
    except RuntimeError:
        log.exception("session sess-9f8e7d6c expired")
import membrane_otel
membrane_otel.shutdown()
"""


def test_user_patterns_redact_l2_errors_in_message_exception_and_stack(tmp_path: Path) -> None:
    """The L2 path redacts with MEMBRANE_REDACT_PATTERNS itself (the processor skips a second pass)."""
    env = clean_env(tmp_path, MEMBRANE_REDACT_PATTERNS='["sess-[0-9a-f]+"]', OTEL_TRACES_EXPORTER="none")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SECRET_APP)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = (tmp_path / "ledger.jsonl").read_text()
    assert "sess-9f8e7d6c" not in text
    (line,) = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert line["message"] == "session <REDACTED> expired" and line["occurrences"] == 3
    assert "<REDACTED>" in line["exception.message"] and "<REDACTED>" in line["exception.stacktrace"]
