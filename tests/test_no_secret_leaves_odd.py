"""No secret leaves by the paths an application takes without thinking: the odd places.

The companion of ``test_no_secret_leaves.py`` (the issue's FastAPI example): here the secret
sits where a careless program puts it — an exception's note and its chained cause, a
``logging`` ``extra`` dict and ``%`` args dict, bytes, a span's name, status, event and a
list attribute, a warning routed to logging, a script-error stimulus's metadata and a tool
result's payload and provenance, a ledger event's nested payload, an argv kept as a list attribute. Every exit is searched
as in the companion test. (An exception a thread leaves uncaught is printed to stderr by
Python's own ``threading.excepthook``, as without this distro: not one of its exits.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._helpers import INSTRUMENT, clean_env, read_ledger, wait_for
from tests.test_no_secret_leaves import PASSWORD, SECRET, _everything, _leaks, otlp_receiver, run_leaky_app

__all__ = ["otlp_receiver"]  # the fixture, imported for use here

APP = textwrap.dedent(
    """
    import logging, sys, warnings
    import membrane_otel
    from membrane_otel import setup_l2_logger, stimuli
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    SECRET, PASSWORD = sys.argv[1], sys.argv[2]
    logging.captureWarnings(True)
    l2 = setup_l2_logger("odd", __file__)
    log = logging.getLogger("odd.app")

    try:
        try:
            raise KeyError(f"lookup of api_key={SECRET}")
        except KeyError as inner:
            err = ValueError("config broken")
            err.add_note(f"hint: password={PASSWORD}")
            raise err from inner
    except ValueError:
        l2.exception("startup failed")
    log.error("loaded %(cfg)s", {"cfg": {"api_key": SECRET}})
    log.error("dsn", extra={"db": {"url": f"postgres://app:{PASSWORD}@db:5432/x"}, "raw": SECRET.encode()})
    warnings.warn(f"deprecated: pass token={SECRET} differently")

    tracer = trace.get_tracer("odd")
    with tracer.start_as_current_span(f"call with token={SECRET}") as span:
        span.set_attribute("argv", ["--password", PASSWORD, "--token", SECRET])
        span.add_event(f"retry token={SECRET}", {"detail": f"Authorization: Bearer {SECRET}"})
        span.set_status(Status(StatusCode.ERROR, f"denied for password={PASSWORD}"))

    stimuli.emit_script_error(
        "odd", f"worker died: api_key={SECRET}", metadata={"creds": {"password": PASSWORD}, "argv": ["--token", SECRET]}
    )
    stimuli.emit_tool_result(
        "fetch", "req-1", False, {"error": f"401 for Authorization: Bearer {SECRET}", "password": PASSWORD},
        provenance={"called_with": f"https://bot:{PASSWORD}@api.example.com/v1"},
    )
    membrane_otel.emit_event("odd_event", {"nested": [{"token": SECRET}, f"password={PASSWORD}"]})
    membrane_otel.force_flush()
    print("done")
    """
)


@pytest.mark.timeout(120)
def test_secrets_in_odd_places_leave_by_no_exit(
    tmp_path: Path, otlp_receiver: tuple[str, list[tuple[str, bytes]]]
) -> None:
    if not INSTRUMENT.exists():
        pytest.skip("opentelemetry-instrument is missing: pip install -e '.[dev]'")
    endpoint, bodies = otlp_receiver
    proc = run_leaky_app(tmp_path, APP, "odd", endpoint, expect="done")
    wait_for(lambda: any(p.endswith("/v1/logs") for p, _ in bodies), timeout=10)
    outputs = _everything(tmp_path, proc, bodies)
    assert not _leaks(outputs), _leaks(outputs)
    # Every path carried the secrets, redacted: the exits were exercised, not skipped.
    spans = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "span"]
    assert any(
        ln["metadata"].get("argv") == ["--password", "<REDACTED>", "--token", "<REDACTED>"] for ln in spans
    )
    assert b"<REDACTED>" in b"".join(body for path, body in bodies if path.endswith("/v1/traces"))
    assert b"<REDACTED>" in (tmp_path / "bus-record.jsonl").read_bytes()


ENV_APP = textwrap.dedent(
    """
    import sys
    import membrane_otel
    from membrane_otel import stimuli
    from opentelemetry import metrics, trace

    SECRET, PASSWORD = sys.argv[1], sys.argv[2]
    meter = metrics.get_meter("odd.metrics")
    calls = meter.create_counter("calls")
    latency = meter.create_histogram("latency_ms")
    for path in (f"/pay?token={SECRET}", "/health"):
        calls.add(1, {"url": path, "password": PASSWORD, "http.route": "/pay"})
        latency.record(12.5, {"db.statement": f"SELECT 1 -- password={PASSWORD}"})
    with trace.get_tracer("odd").start_as_current_span("work"):
        pass
    stimuli.emit_script_error("odd", "worker died")
    membrane_otel.force_flush()
    metrics.get_meter_provider().force_flush()
    print("done")
    """
)


@pytest.mark.timeout(120)
def test_secrets_in_the_resource_and_in_metrics_leave_by_no_exit(
    tmp_path: Path, otlp_receiver: tuple[str, list[tuple[str, bytes]]]
) -> None:
    """The environment's resource (a DSN with its password, a key) rides on every OTLP batch of
    every signal; metric attributes (a URL with its query, a password) on every metrics batch.
    Both went out verbatim over OTLP: the resource from every exporter, metrics unredacted."""
    if not INSTRUMENT.exists():
        pytest.skip("opentelemetry-instrument is missing: pip install -e '.[dev]'")
    endpoint, bodies = otlp_receiver
    proc = run_leaky_app(
        tmp_path,
        ENV_APP,
        "odd-env",
        endpoint,
        expect="done",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_RESOURCE_ATTRIBUTES=(
            f"deployment.environment=prod,db.dsn=postgres://app:{PASSWORD}@db:5432/x,"
            f"vendor.api_key={SECRET},build.note=token%3D{SECRET}"
        ),
    )
    signals = ("/v1/logs", "/v1/traces", "/v1/metrics")
    wait_for(lambda: all(any(p.endswith(s) for p, _ in bodies) for s in signals), timeout=15)
    outputs = _everything(tmp_path, proc, bodies)
    assert not _leaks(outputs), _leaks(outputs)
    # The resource and the points went out, redacted, on every signal: the exits were exercised.
    for signal in signals:
        sent = b"".join(body for path, body in bodies if path.endswith(signal))
        assert b"deployment.environment" in sent and b"<REDACTED>" in sent, signal
    metrics_sent = b"".join(body for path, body in bodies if path.endswith("/v1/metrics"))
    assert b"/health" in metrics_sent and b"http.route" in metrics_sent


@pytest.mark.timeout(60)
def test_the_console_metrics_exporter_prints_no_secret(tmp_path: Path) -> None:
    """``OTEL_METRICS_EXPORTER=console`` printed every data point's attributes as they were."""
    if not INSTRUMENT.exists():
        pytest.skip("opentelemetry-instrument is missing: pip install -e '.[dev]'")
    app = tmp_path / "app.py"
    app.write_text(ENV_APP)
    env = clean_env(
        tmp_path,
        OTEL_METRICS_EXPORTER="console",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="ledger",
        OTEL_RESOURCE_ATTRIBUTES=f"vendor.api_key={SECRET}",
    )
    proc = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(app), SECRET, PASSWORD],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert "done" in proc.stdout, proc.stderr[-3000:]
    assert '"data_points"' in proc.stdout and "<REDACTED>" in proc.stdout, proc.stdout[-2000:]
    assert not _leaks(_everything(tmp_path, proc, [])), _leaks(_everything(tmp_path, proc, []))
