"""setup_l2_logger: the seed's two-line conversion, on OTel log records."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

from membrane_otel import tracer
from membrane_otel.logs._l2logger import setup_l2_logger
from membrane_otel.testing import capture
from tests._helpers import clean_env, read_ledger, run_instrumented


def _logger(name: str, level: int = logging.ERROR) -> tuple[logging.Logger, io.StringIO]:
    logger = setup_l2_logger(name, f"orchestration/scripts/{name}.py", l2_level=level)
    console = io.StringIO()
    for h in logger.handlers:
        if isinstance(h, logging.StreamHandler) and not hasattr(h, "script_name"):
            h.setStream(console)
    return logger, console


def _fail(n: int) -> None:
    raise KeyError(f"citizen {n}")


def test_console_gets_every_level_l2_gets_errors() -> None:
    """INFO goes to the console only; ERROR to the console and an OTel log record."""
    logger, console = _logger("l2_levels")
    with capture() as got:
        logger.info("Starting resurrection...")
        logger.error("Bootstrap failed for %s", "felix")
    assert "Starting resurrection..." in console.getvalue()
    assert "Bootstrap failed for felix" in console.getvalue()
    errors = got.ledger_lines("script_error")
    assert [e["message"] for e in errors] == ["Bootstrap failed for felix"]
    assert not got.ledger_lines("log")


def test_error_record_carries_seed_attributes() -> None:
    """exception.*, fingerprint, dedupe key, node id, source, scope, channel and code.* are set."""
    logger, _ = _logger("resurrect_all_citizens")
    with capture() as got:
        try:
            _fail(17)
        except KeyError:
            logger.exception("Bootstrap failed for 17")
    (line,) = got.ledger_lines("script_error")
    assert line["exception.type"] == "KeyError" and line["exception.message"] == "'citizen 17'"
    assert line["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert "in _fail" in line["exception.stacktrace"]
    assert len(line["membrane.fingerprint"]) == 40 and len(line["membrane.dedupe_key"]) == 40
    assert line["membrane.node_id"] == "code_substrate_orchestration_scripts_resurrect_all_citizens_py"
    assert line["membrane.source"] == "script:resurrect_all_citizens"
    assert line["membrane.channel"] == "signals.script.resurrect_all_citizens"
    assert line["membrane.scope"] == "organizational"
    assert line["code.function"] == "test_error_record_carries_seed_attributes"
    assert line["code.namespace"] == "test_l2logger" and isinstance(line["code.lineno"], int)
    (env,) = got.envelopes
    assert env["features_raw"]["urgency"] == 0.7 and env["metadata"]["error_type"] == "KeyError"


def test_messages_differing_in_ids_share_a_dedupe_key() -> None:
    """'Bootstrap failed for 17' and '… for 18' from one place share fingerprint and key."""
    logger, _ = _logger("dedupe")
    with capture() as got:
        for n in (17, 18):
            try:
                _fail(n)
            except KeyError:
                logger.exception("Bootstrap failed for %d", n)
    a, b = got.ledger_lines("script_error")
    assert a["membrane.fingerprint"] == b["membrane.fingerprint"]
    assert a["membrane.dedupe_key"] == b["membrane.dedupe_key"]


def test_error_without_exception_is_fingerprinted_from_call_site() -> None:
    """logger.error without a traceback still gets a fingerprint, stable for one call site."""
    logger, _ = _logger("callsite")
    with capture() as got:
        for i in range(2):  # distinct messages: identical errors would be coalesced into one line
            logger.error("no traceback here %d", i)
        logger.error("another place")
    a, b, c = got.ledger_lines("script_error")
    assert len(a["membrane.fingerprint"]) == 40
    assert a["membrane.fingerprint"] == b["membrane.fingerprint"]
    assert "exception.type" not in a


def test_record_sits_inside_the_active_span() -> None:
    """An error logged inside an HRM span carries that span's trace and span ids."""
    logger, _ = _logger("inspan")
    tracer.set_enabled(True)
    try:
        with capture() as got:
            with tracer.span("sys", "execute", "x.py") as ctx:
                logger.error("failed inside")
                span_id = format(ctx.span.get_span_context().span_id, "016x")
    finally:
        tracer.set_enabled(None)
    (line,) = got.ledger_lines("script_error")
    assert line["otel_span_id"] == span_id


def test_l2_level_warning_sends_warnings() -> None:
    """l2_level=logging.WARNING sends WARNING records too."""
    logger, _ = _logger("warn_level", logging.WARNING)
    with capture() as got:
        logger.warning("disk almost full")
    assert [ln["level"] for ln in got.ledger_lines()] == ["WARNING"]


def test_stack_trace_is_truncated_at_60_lines() -> None:
    """A deep stack is cut to 60 lines with the truncation marker."""
    logger, _ = _logger("deep")

    # Alternating frames: a plain recursion would be collapsed by "[Previous line repeated]".
    def recurse(n: int) -> None:
        if n == 0:
            raise RuntimeError("bottom")
        other(n - 1)

    def other(n: int) -> None:
        recurse(n)

    with capture() as got:
        try:
            recurse(80)
        except RuntimeError:
            logger.exception("deep failure")
    (line,) = got.ledger_lines("script_error")
    stack = line["exception.stacktrace"]
    assert stack.rstrip().endswith("...<truncated>")
    assert len(stack.splitlines()) <= 61 and len(stack.encode()) <= 16384


def test_calling_twice_does_not_double_handlers() -> None:
    """setup_l2_logger for the same script twice: one console line, one record."""
    _logger("twice")
    logger, console = _logger("twice")
    with capture() as got:
        logger.error("once please")
    assert console.getvalue().count("once please") == 1
    assert len(got.ledger_lines("script_error")) == 1


SCRIPT = """
import logging
from membrane_otel import setup_l2_logger
logging.getLogger().warning("root warning")
logger = setup_l2_logger(script_name="my_script", script_path="orchestration/scripts/my_script.py")
logger.info("Starting script...")
try:
    {{}}["missing"]
except KeyError:
    logger.error("Failed: missing", exc_info=True)
"""


def test_no_double_emission_under_opentelemetry_instrument(tmp_path: Path) -> None:
    """Under the wrapper, an l2 logger's error reaches the ledger exactly once."""
    script = tmp_path / "s.py"
    script.write_text(SCRIPT.replace("{{}}", "{}"))
    proc = run_instrumented(script, clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    errors = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert len(errors) == 1 and errors[0]["membrane.script_name"] == "my_script"
    assert proc.stderr.count("Failed: missing") == 1 and "Starting script..." in proc.stderr


def test_two_line_conversion_works_without_the_wrapper(tmp_path: Path) -> None:
    """Plain `python script.py` with setup_l2_logger: the error still reaches the ledger."""
    script = tmp_path / "s.py"
    script.write_text(SCRIPT.replace("{{}}", "{}"))
    proc = subprocess.run(
        [sys.executable, str(script)], env=clean_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    errors = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert len(errors) == 1 and errors[0]["exception.type"] == "KeyError"
