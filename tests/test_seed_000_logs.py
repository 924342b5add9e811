"""seeds/000 promises on the README's headline path: stdlib logging under the real wrapper."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests._helpers import clean_env, read_ledger, run_instrumented


def _spooled(spool: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in sorted(spool.glob("*.json")) if spool.exists() else []:
        out.extend(json.loads(f.read_text()))
    return out


STORM = """
import logging
log = logging.getLogger("storm")
def fail():
    raise KeyError("citizen 17")
for _ in range(5):
    try:
        fail()
    except KeyError:
        log.exception("bootstrap failed")
log.critical("disk full")
"""


def test_held_back_counts_go_out_in_a_summary_at_exit(tmp_path: Path) -> None:
    """Five identical errors: one envelope out, and a throttle_summary carrying the other four."""
    script = tmp_path / "storm.py"
    script.write_text(STORM)
    proc = run_instrumented(script, clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    envs = _spooled(tmp_path / "spool")
    errors = [e for e in envs if e["metadata"]["signal_type"] == "script_error" and e["severity"] == "error"]
    assert len(errors) == 1
    summary = [e for e in envs if e["metadata"]["signal_type"] == "throttle_summary"]
    assert len(summary) == 1, envs
    assert summary[0]["metadata"]["held_back"] == 4
    assert summary[0]["metadata"]["held_back_by_type"] == {"script_error": 4}


def test_critical_is_not_held_back_by_an_error_window(tmp_path: Path) -> None:
    """The CRITICAL after an ERROR storm goes out at once, inside the ERROR's 15 s type window."""
    script = tmp_path / "storm.py"
    script.write_text(STORM)
    run_instrumented(script, clean_env(tmp_path))
    envs = _spooled(tmp_path / "spool")
    critical = [e for e in envs if e["severity"] == "critical"]
    assert len(critical) == 1 and "disk full" in critical[0]["content"]


def test_debug_verification_lines(tmp_path: Path) -> None:
    """At DEBUG the seed's greps work: FingerprintRateLimit … cooling down, Published membrane.inject."""
    script = tmp_path / "storm.py"
    script.write_text(
        "import logging\n"
        "logging.getLogger('membrane_otel').setLevel(logging.DEBUG)\n"
        "logging.getLogger('membrane_otel.membrane._bus').setLevel(logging.WARNING)\n" + STORM
    )
    from tests._bus_helpers import BusProcess

    with BusProcess() as bus:
        proc = run_instrumented(script, clean_env(tmp_path, MEMBRANE_BUS_URL=bus.url))
    assert proc.returncode == 0, proc.stderr
    assert "FingerprintRateLimit: script_error" in proc.stderr and "cooling down" in proc.stderr, proc.stderr
    assert "Published membrane.inject sid=script_log_" in proc.stderr, proc.stderr


def test_no_bus_url_says_once_at_info_where_envelopes_are_kept(tmp_path: Path) -> None:
    """With no MEMBRANE_BUS_URL an error run prints no bus warning; at INFO, one line says where."""
    script = tmp_path / "err.py"
    script.write_text("import logging\nlogging.getLogger('a').error('one error')\n")
    env = clean_env(tmp_path)
    del env["MEMBRANE_BUS_URL"]
    proc = run_instrumented(script, env)
    assert "unreachable" not in proc.stderr and "membrane-otel: WARNING" not in proc.stderr, proc.stderr
    assert proc.stderr.count("one error") == 1
    verbose = tmp_path / "verbose.py"
    verbose.write_text(
        "import logging\nlogging.getLogger('membrane_otel').setLevel(logging.INFO)\n"
        "for i in range(3):\n    logging.getLogger('a').error('err %d', i)\n"
    )
    proc = run_instrumented(verbose, env)
    assert proc.stderr.count("envelopes are kept in") == 1, proc.stderr
    assert "unreachable" not in proc.stderr


def test_explicit_bus_url_still_warns(tmp_path: Path) -> None:
    """A bus the user chose and that is down is still a warning (it names the URL)."""
    script = tmp_path / "err.py"
    script.write_text("import logging\nlogging.getLogger('a').error('one error')\n")
    proc = run_instrumented(script, clean_env(tmp_path))
    assert "ws://127.0.0.1:9/api/ws" in proc.stderr and "unreachable" in proc.stderr


def test_ledger_level_names_are_the_seeds(tmp_path: Path) -> None:
    """Ledger lines say CRITICAL and WARNING, never FATAL or WARN."""
    script = tmp_path / "levels.py"
    script.write_text(
        "import logging\nfrom membrane_otel import emit_alert\n"
        "logging.getLogger('a').critical('crit')\nlogging.getLogger('a').warning('warn')\n"
        "emit_alert('warning', 'an alert')\n"
    )
    proc = run_instrumented(script, clean_env(tmp_path, MEMBRANE_L2_LEVEL="WARNING"))
    assert proc.returncode == 0, proc.stderr
    lines = read_ledger(tmp_path / "ledger.jsonl")
    levels = {ln.get("level") for ln in lines if ln["event"] in ("script_error", "log")}
    assert "CRITICAL" in levels and "WARNING" in levels, levels
    assert not levels & {"FATAL", "WARN"}, levels
