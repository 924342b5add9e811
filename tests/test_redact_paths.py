"""Each exit's redaction in-process: span translation, the console tree, the otlp wrappers and
their routing, the redacting formatter, the log processor's count. (The whole user path, as a
subprocess with every output searched, is tests/test_no_secret_leaves.py.)"""

from __future__ import annotations

import io
import logging
import os

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from membrane_otel._internal.console_fallback import ConsoleWhenAlone
from membrane_otel.logs._redact_format import RedactingFormatter
from membrane_otel.logs._redact_otlp import RedactingSpanExporter, route_otlp_through_redaction
from membrane_otel.spans._console_tree import ConsoleTreeSpanExporter
from membrane_otel.translate._core import span_line
from membrane_otel.translate._records import span_from_sdk

SECRET = "sk_live_" + "Zq0123456789abcdefXYZ"
BODY = SECRET[len("sk_live_") :]


def _third_party_span(*exporters: InMemorySpanExporter | RedactingSpanExporter) -> None:
    provider = TracerProvider()
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.httpx")
    with tracer.start_as_current_span(f"GET /pay?token={SECRET}") as span:
        span.set_attribute("http.url", f"https://shop.example.com/pay?token={SECRET}")
        span.set_attribute("url.query", f"token={SECRET}")
        span.set_attribute("db.statement", "ALTER USER app IDENTIFIED BY 'Hunter2pw'")
        span.set_attribute("http.request.header.authorization", ["Bearer " + SECRET])
        span.add_event("exception", {"exception.message": f"refused api_key={SECRET}"})
        span.set_status(StatusCode.ERROR, f"declined token={SECRET}")


def _finished() -> list:
    memory = InMemorySpanExporter()
    _third_party_span(memory)
    return list(memory.get_finished_spans())


def test_every_span_is_redacted_at_translation() -> None:
    """A third-party span's http.url, url.query, db.statement, headers, events and status."""
    line = span_line(span_from_sdk(_finished()[0]))
    text = str(line)
    assert BODY not in text and "Hunter2pw" not in text
    md = line["metadata"]
    assert md["url.query"] == "token=<REDACTED>"
    assert md["http.request.header.authorization"] == ["<REDACTED>"]
    assert md["membrane.redacted_count"] >= 5


def test_the_console_tree_prints_no_secret() -> None:
    """The span tree (``console`` under this distro) shows redacted names, errors and attributes."""
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(stream=out, level="debug")
    exporter.export(_finished())
    exporter.force_flush()
    exporter.shutdown()
    assert out.getvalue() and BODY not in out.getvalue()


def test_the_otlp_wrapper_hands_on_a_redacted_copy() -> None:
    """What the wrapped exporter receives is redacted; the span the app ended is unchanged."""
    inner, raw = InMemorySpanExporter(), InMemorySpanExporter()
    _third_party_span(RedactingSpanExporter(inner), raw)
    (sent,) = inner.get_finished_spans()
    everything = str(
        (
            sent.name,
            dict(sent.attributes or {}),
            [dict(e.attributes or {}) for e in sent.events],
            sent.status.description,
        )
    )
    assert BODY not in everything and "Hunter2pw" not in everything
    assert sent.attributes is not None and sent.attributes["membrane.redacted_count"] >= 5
    (original,) = raw.get_finished_spans()
    assert sent.context == original.context and sent.start_time == original.start_time
    assert original.attributes is not None and original.attributes["url.query"] == f"token={SECRET}"


def test_a_clean_span_passes_the_wrapper_as_is() -> None:
    """No copy is made when there is nothing to redact."""
    inner, raw = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(inner)))
    provider.add_span_processor(SimpleSpanProcessor(raw))
    with provider.get_tracer("t").start_as_current_span("clean") as span:
        span.set_attribute("http.route", "/items/{id}")
    assert inner.get_finished_spans()[0] is raw.get_finished_spans()[0]


@pytest.mark.parametrize(
    ("names", "protocol", "expected"),
    [
        ("otlp", None, "membrane_otlp_grpc"),
        ("ledger,otlp", "http/protobuf", "ledger,membrane_otlp_http"),
        ("otlp_proto_http,console", None, "membrane_otlp_http,console"),
        ("ledger", None, "ledger"),
    ],
)
def test_otlp_is_routed_through_redaction(
    monkeypatch: pytest.MonkeyPatch, names: str, protocol: str | None, expected: str
) -> None:
    """``otlp`` (any protocol, as the SDK resolves it) names the redacting wrapper."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", names)
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", names)
    if protocol:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    else:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)
    route_otlp_through_redaction()
    assert os.environ["OTEL_TRACES_EXPORTER"] == expected
    assert os.environ["OTEL_LOGS_EXPORTER"] == expected


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord(
        "app", logging.ERROR, __file__, 1, msg, args, (type(exc), exc, exc.__traceback__) if exc else None
    )


def test_the_redacting_formatter_covers_message_exception_and_stack() -> None:
    """Message arguments, the exception's text and the traceback are all redacted."""
    try:
        raise ConnectionError(f"refused api_key={SECRET}")
    except ConnectionError as caught:
        exc = caught
    text = RedactingFormatter("%(levelname)s %(message)s").format(_record("charge token=%s", SECRET, exc=exc))
    assert BODY not in text
    assert "charge token=<REDACTED>" in text and "ConnectionError: refused api_key=<REDACTED>" in text


def test_the_console_fallback_prints_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """What the fallback hands to logging.lastResort (no app handler) is redacted, traceback too;
    the record the OTel handler goes on with is untouched."""
    try:
        raise ConnectionError(f"refused api_key={SECRET}")
    except ConnectionError as caught:
        record = _record("payment failed for token=%s", SECRET, exc=caught)
    record.name = "redact_paths_alone"
    # A logger with no handler that does not propagate (pytest's own handlers sit on the root).
    logging.getLogger(record.name).propagate = False
    assert ConsoleWhenAlone().filter(record) is True
    err = capsys.readouterr().err
    assert err.startswith("payment failed for token=<REDACTED>\n")
    assert "ConnectionError: refused api_key=<REDACTED>" in err and BODY not in err
    assert record.getMessage() == f"payment failed for token={SECRET}"


def test_setup_l2_logger_console_prints_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """The L2 logger's console line, exception message and traceback are redacted on stderr."""
    from membrane_otel import setup_l2_logger

    log = setup_l2_logger("redact_paths_l2", __file__)
    try:
        raise ConnectionError(f"search backend refused api_key={SECRET}")
    except ConnectionError:
        log.exception("tool failed with token=%s", SECRET)
    err = capsys.readouterr().err
    assert "tool failed with token=<REDACTED>" in err
    assert "ConnectionError: search backend refused api_key=<REDACTED>" in err
    assert BODY not in err


@pytest.mark.parametrize("group", ["opentelemetry_traces_exporter", "opentelemetry_logs_exporter"])
@pytest.mark.parametrize("name", ["membrane_otlp_grpc", "membrane_otlp_http"])
def test_the_wrapped_otlp_entry_points_build(group: str, name: str) -> None:
    """Each entry point the renamed ``otlp`` resolves to builds the SDK's exporter inside a wrapper."""
    from importlib.metadata import entry_points

    from membrane_otel.logs._redact_otlp import RedactingLogExporter

    (ep,) = [e for e in entry_points(group=group) if e.name == name]
    exporter = ep.load()()
    assert isinstance(exporter, RedactingSpanExporter | RedactingLogExporter)
    exporter.shutdown()
