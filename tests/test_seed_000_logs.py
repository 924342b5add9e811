"""seeds/000 promises on the README's headline path: stdlib logging under the real wrapper."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests._helpers import INSTRUMENT, clean_env, read_ledger, run_instrumented


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


HUGE = """
import logging
log = logging.getLogger("agent")
# 300 distinct frames (a recursion would be folded by traceback into a few lines).
src = "".join(f"def f{i}():\\n    return f{i + 1}()\\n" for i in range(300))
src += "def f300():\\n    raise LookupError('deep ' + 'x' * 100)\\n"
exec(compile(src, "chain.py", "exec"))
def run_job():
    try:
        f0()
    except LookupError:
        log.exception("job failed: " + "m" * 200_000)
run_job()
"""


def test_limits_and_metadata_hold_on_the_headline_path(tmp_path: Path) -> None:
    """logging.getLogger(...).exception under the wrapper: stack ≤60 lines/16 KB, body ≤64 KB,
    content ≤500, and the envelope names module, function, line, script_path and node_id."""
    (tmp_path / "jobs").mkdir()
    script = tmp_path / "jobs" / "huge_job.py"
    script.write_text(HUGE)
    proc = subprocess.run(
        [str(INSTRUMENT), sys.executable, "jobs/huge_job.py"],
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    stack = line["exception.stacktrace"]
    assert stack.count("\n") <= 61 and len(stack.encode()) <= 16 * 1024 and stack.endswith("...<truncated>")
    assert len(line["message"].encode()) <= 64 * 1024 and line["message"].endswith("...<truncated>")
    assert line["membrane.fingerprint"], "fingerprinted from the whole stack"
    (env,) = [e for e in _spooled(tmp_path / "spool") if e["metadata"]["signal_type"] == "script_error"]
    md = env["metadata"]
    assert len(env["content"]) <= 500
    assert md["stack_trace"].count("\n") <= 61 and len(md["stack_trace"].encode()) <= 16 * 1024
    assert md["module"] == "huge_job" and md["function"] == "run_job" and md["line"] == 12
    assert md["script_path"] == "jobs/huge_job.py"
    assert md["node_id"] == "code_substrate_jobs_huge_job_py"
    assert len(json.dumps(env).encode()) < 64 * 1024 + 20 * 1024


def test_membrane_l2_level_is_honoured_by_setup_l2_logger(tmp_path: Path) -> None:
    """MEMBRANE_L2_LEVEL=WARNING: a warning from setup_l2_logger becomes an envelope; the argument wins."""
    code = (
        "import logging\nfrom membrane_otel import setup_l2_logger, shutdown\n"
        "a = setup_l2_logger('env_level', 'scripts/env_level.py')\n"
        "a.warning('warned via env')\n"
        "b = setup_l2_logger('arg_level', 'scripts/arg_level.py', l2_level=logging.ERROR)\n"
        "b.warning('not an envelope')\n"
        "shutdown()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_env(tmp_path, MEMBRANE_L2_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    contents = [e["content"] for e in _spooled(tmp_path / "spool")]
    assert any("warned via env" in c for c in contents), contents
    assert not any("not an envelope" in c for c in contents)
