"""The distro under the real ``opentelemetry-instrument``, in subprocesses."""

from __future__ import annotations

from pathlib import Path

from tests._helpers import EXAMPLE, clean_env, read_ledger, run_instrumented

APP = """
import logging
from membrane_otel import tracer
log = logging.getLogger("app")
with tracer.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
    with tracer.span("mem", "write", "manager.py", "altitude.session") as inner:
        inner.set_output("written", tokens_saved=45)
    try:
        raise KeyError("missing citizen 17")
    except KeyError:
        log.exception("bootstrap failed for 17")
    ctx.set_output("success")
log.warning("plain warning stays on the console")
print("app stdout kept")
"""


def _app(tmp_path: Path) -> Path:
    script = tmp_path / "app.py"
    script.write_text(APP)
    return script


def test_wrapper_picks_up_the_distro_and_writes_the_ledger(tmp_path: Path) -> None:
    """opentelemetry-instrument with no code change writes spans and the error to the ledger."""
    proc = run_instrumented(_app(tmp_path), clean_env(tmp_path, MEMBRANE_TRACE="1"))
    assert proc.returncode == 0, proc.stderr
    lines = read_ledger(tmp_path / "ledger.jsonl")
    traces = [ln for ln in lines if ln["event"] == "hrm_trace"]
    assert {t["operation"] for t in traces} == {"transition", "write"}
    outer = next(t for t in traces if t["operation"] == "transition")
    inner = next(t for t in traces if t["operation"] == "write")
    assert inner["parent_id"] == outer["trace_id"] and outer["trace_id"].startswith("alt_")
    assert inner["otel_trace_id"] == outer["otel_trace_id"]
    errors = [ln for ln in lines if ln["event"] == "script_error"]
    assert len(errors) == 1, "the error is recorded exactly once"
    assert errors[0]["exception.type"] == "KeyError"
    assert errors[0]["otel_span_id"] == outer["otel_span_id"], "the error sits inside the active span"


def test_console_tree_when_tracing_is_on(tmp_path: Path) -> None:
    """With MEMBRANE_TRACE=1 the seed's span tree is printed."""
    proc = run_instrumented(_app(tmp_path), clean_env(tmp_path, MEMBRANE_TRACE="1"))
    assert "[alt] transition: L3→L2 → success (" in proc.stderr
    assert "  └─[mem] write: altitude.session → written (" in proc.stderr
    assert "[saved 45 tokens]" in proc.stderr


def test_tracing_off_writes_no_spans_but_keeps_errors(tmp_path: Path) -> None:
    """Without MEMBRANE_TRACE there are no HRM spans and no tree, but the error is kept."""
    proc = run_instrumented(_app(tmp_path), clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = read_ledger(tmp_path / "ledger.jsonl")
    assert not [ln for ln in lines if ln["event"] == "hrm_trace"]
    assert [ln for ln in lines if ln["event"] == "script_error"]
    assert "└─" not in proc.stderr


def test_dopejar_alias_turns_tracing_on(tmp_path: Path) -> None:
    """The seed's DOPEJAR_TRACE=1 works like MEMBRANE_TRACE=1."""
    proc = run_instrumented(_app(tmp_path), clean_env(tmp_path, DOPEJAR_TRACE="1"))
    assert "[alt] transition" in proc.stderr


def test_agi_ledger_path_alias(tmp_path: Path) -> None:
    """AGI_LEDGER_PATH chooses the ledger file."""
    env = clean_env(tmp_path, MEMBRANE_TRACE="1", AGI_LEDGER_PATH=str(tmp_path / "agi.jsonl"))
    del env["MEMBRANE_LEDGER_PATH"]
    run_instrumented(_app(tmp_path), env)
    assert read_ledger(tmp_path / "agi.jsonl")


def test_exporter_names_select_outputs(tmp_path: Path) -> None:
    """OTEL_TRACES_EXPORTER=console prints the tree but writes no span lines; none means none."""
    proc = run_instrumented(
        _app(tmp_path), clean_env(tmp_path, MEMBRANE_TRACE="1", OTEL_TRACES_EXPORTER="console")
    )
    assert "[alt] transition" in proc.stderr
    assert not [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "hrm_trace"]
    proc = run_instrumented(
        _app(tmp_path), clean_env(tmp_path, MEMBRANE_TRACE="1", OTEL_TRACES_EXPORTER="none")
    )
    assert proc.returncode == 0 and "└─" not in proc.stderr


def test_bad_env_value_stops_start_up_with_one_line(tmp_path: Path) -> None:
    """A bad MEMBRANE_* value: exit 2 and one line naming the variable, no traceback."""
    proc = run_instrumented(_app(tmp_path), clean_env(tmp_path, MEMBRANE_L2_LEVEL="LOUD"))
    assert proc.returncode == 2
    assert "membrane-otel: MEMBRANE_L2_LEVEL='LOUD' is not valid" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "app stdout kept" not in proc.stdout


def test_a_misspelt_env_name_gets_one_line_and_the_app_runs(tmp_path: Path) -> None:
    """MEMBRANE_FLUSH_INTERVAL (for …_MS) used to be ignored without a word: now one line each,
    naming it and the setting it is close to; the Collector configs' variables are not ours to judge."""
    env = clean_env(
        tmp_path,
        MEMBRANE_FLUSH_INTERVAL="5",
        MEMBRANE_LEDGERPATH="x.jsonl",
        MEMBRANE_COLLECTOR_GRPC_ENDPOINT="x",
    )
    proc = run_instrumented(_app(tmp_path), env)
    assert proc.returncode == 0 and "app stdout kept" in proc.stdout
    ours = [ln for ln in proc.stderr.splitlines() if "is not a membrane-otel setting" in ln]
    assert ours == [
        "membrane-otel: MEMBRANE_FLUSH_INTERVAL is not a membrane-otel setting, ignored; "
        "did you mean MEMBRANE_FLUSH_INTERVAL_MS?",
        "membrane-otel: MEMBRANE_LEDGERPATH is not a membrane-otel setting, ignored; did you mean MEMBRANE_LEDGER_PATH?",
    ]


def test_sdk_disabled_turns_everything_off(tmp_path: Path) -> None:
    """OTEL_SDK_DISABLED=true: the app runs, nothing is written or printed by us."""
    proc = run_instrumented(_app(tmp_path), clean_env(tmp_path, MEMBRANE_TRACE="1", OTEL_SDK_DISABLED="true"))
    assert proc.returncode == 0, proc.stderr
    assert "app stdout kept" in proc.stdout
    assert not (tmp_path / "ledger.jsonl").exists()
    assert "└─" not in proc.stderr and "[alt]" not in proc.stderr


def test_app_console_output_is_kept(tmp_path: Path) -> None:
    """The app's own console output (stdout and logging's last-resort stderr) is unchanged."""
    proc = run_instrumented(_app(tmp_path), clean_env(tmp_path))
    assert "app stdout kept" in proc.stdout
    assert proc.stderr.count("plain warning stays on the console") == 1
    assert proc.stderr.count("bootstrap failed for 17") == 1


def test_basic_config_of_the_app_is_respected(tmp_path: Path) -> None:
    """An app that calls basicConfig gets its own format, printed once."""
    script = tmp_path / "bc.py"
    script.write_text(
        "import logging\nlogging.basicConfig(level=logging.INFO, format='APP %(levelname)s %(message)s')\n"
        "logging.getLogger('x').info('hello info')\n"
    )
    proc = run_instrumented(script, clean_env(tmp_path))
    assert proc.stderr.count("APP INFO hello info") == 1, proc.stderr


def test_example_agent_exercises_every_layer(tmp_path: Path) -> None:
    """The example agent's ledger holds all six layers, an error span and a blocked gate."""
    proc = run_instrumented(EXAMPLE, clean_env(tmp_path, MEMBRANE_TRACE="1"))
    assert proc.returncode == 0, proc.stderr
    lines = read_ledger(tmp_path / "ledger.jsonl")
    traces = [ln for ln in lines if ln["event"] == "hrm_trace"]
    assert {t["hrm_layer"] for t in traces} == {
        "altitude",
        "focus",
        "reasoning",
        "learning",
        "memory",
        "system",
    }
    assert {t["status"] for t in traces} == {"success", "error", "blocked"}
    errors = [ln for ln in lines if ln["event"] == "script_error"]
    assert errors and "sk-live-0000SECRET0000" not in (tmp_path / "ledger.jsonl").read_text()


def test_user_redaction_patterns_from_the_environment(tmp_path: Path) -> None:
    """MEMBRANE_REDACT_PATTERNS adds secrets of the user's own form to redaction."""
    script = tmp_path / "p.py"
    script.write_text("import logging\nlogging.getLogger('a').error('session sess-9f8e7d6c expired')\n")
    proc = run_instrumented(script, clean_env(tmp_path, MEMBRANE_REDACT_PATTERNS='["sess-[0-9a-f]+"]'))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "ledger.jsonl").read_text()
    assert "sess-9f8e7d6c" not in text and "session <REDACTED> expired" in text


def test_demo_command_shows_tree_ledger_and_spool(tmp_path: Path) -> None:
    """`membrane-otel demo` (what `make demo` runs) prints the tree, the ledger and the spool."""
    import subprocess
    import sys

    env = clean_env(tmp_path)
    del env["MEMBRANE_BUS_URL"]
    env["MEMBRANE_BUS_URL"] = "ws://127.0.0.1:9/api/ws"
    proc = subprocess.run(
        [sys.executable, "-m", "membrane_otel.cli", "demo", "--out", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[alt] transition: L3→L2 → success" in proc.stdout + proc.stderr
    assert "1 script_error" in proc.stdout and "chain intact" in proc.stdout
    assert "file(s) of envelopes waiting for the bus" in proc.stdout
