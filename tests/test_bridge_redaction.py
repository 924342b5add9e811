"""Redaction on ingest covers every free-text field an OTLP client controls, not only bodies and attributes.

A client that never redacted (a Go or Java service, a hand-made exporter) may put a secret in
any string it sends: the resource (``service.name`` becomes the ledger's ``service`` and the
envelope's provenance), the scope's name and version (the envelope's ``logger``), a log record's
severity text (the ledger's ``level``) and event name (its ``event``), a span's name, status
message, trace state, event names and link attributes. Each carries a different secret here;
none may reach the ledger or the real bus.
"""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from membrane_otel.bridge._otlp import decode_logs, decode_traces
from tests._bus_helpers import BusProcess, read_record, wait_for
from tests.test_bridge_bus_path import make_bridge

# Built by concatenation so that no whole token sits in this file.
SECRETS = {
    "service.name": "svc-" + "ghp_" + "Q1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "resource attribute": "postgres://admin:" + "s3cretPassw0rd@db.internal:5432/app",
    "scope name": "https://user:" + "pa55word-scope@example.com/x",
    "scope version": "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOp",
    "severity text": "password=" + "hunter2-severity",
    "event name": "glpat-" + "xYz1234567890abcdEFGH",
    "span name": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dcXYZ",
    "span status": "Bearer "
    + "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9",
    "trace state": "token=" + "ghp_" + "Z1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r9",
    "span event name": "AIza" + "SyA-1234567890abcdefghijklmnopqrstu",
    "link attribute": "sk-ant-" + "api03-abcdefghijklmnopqrstuvwxyz0123456789",
}


def _secret_part(value: str) -> str:
    """The part of each value that is the secret (a URL keeps its host, a DSN its database)."""
    for secret in ("s3cretPassw0rd", "pa55word-scope"):
        if secret in value:
            return secret
    return value[-14:]


def logs_request() -> bytes:
    req = ExportLogsServiceRequest()
    block = req.resource_logs.add()
    block.resource.attributes.add(key="service.name").value.string_value = SECRETS["service.name"]
    block.resource.attributes.add(key="deploy.note").value.string_value = SECRETS["resource attribute"]
    scope = block.scope_logs.add()
    scope.scope.name = SECRETS["scope name"]
    scope.scope.version = SECRETS["scope version"]
    error = scope.log_records.add(
        time_unix_nano=1_700_000_000_000_000_001, severity_number=17, severity_text=SECRETS["severity text"]
    )
    error.body.string_value = "an error from a client that never redacted"
    stimulus = scope.log_records.add(time_unix_nano=1_700_000_000_000_000_002, event_name="membrane.stimulus")
    stimulus.body.string_value = "a stimulus"
    for key, value in (
        ("membrane.source", "t"),
        ("membrane.channel", "signals.t"),
        ("membrane.stimulus_id", "st-r"),
    ):
        stimulus.attributes.add(key=key).value.string_value = value
    event = scope.log_records.add(time_unix_nano=1_700_000_000_000_000_003, event_name=SECRETS["event name"])
    event.body.string_value = "an event"
    return req.SerializeToString()


def traces_request() -> bytes:
    req = ExportTraceServiceRequest()
    block = req.resource_spans.add()
    block.resource.attributes.add(key="service.name").value.string_value = SECRETS["service.name"]
    scope = block.scope_spans.add()
    scope.scope.name = SECRETS["scope name"]
    span = scope.spans.add(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name=SECRETS["span name"],
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        trace_state=SECRETS["trace state"],
    )
    span.status.code = 2
    span.status.message = SECRETS["span status"]
    span.events.add(name=SECRETS["span event name"], time_unix_nano=1)
    link = span.links.add(trace_id=b"\x03" * 16, span_id=b"\x04" * 8)
    link.attributes.add(key="note").value.string_value = SECRETS["link attribute"]
    return req.SerializeToString()


def test_no_client_chosen_string_carries_a_secret_to_the_ledger_or_the_bus(tmp_path: Path) -> None:
    record = tmp_path / "bus-record.jsonl"
    with BusProcess(record=record) as bus:
        bridge, _ = make_bridge(tmp_path, bus.url)
        try:
            logs = bridge.accept_logs(decode_logs(logs_request(), json_body=False, scrub=bridge.scrubber()))
            spans = bridge.accept_spans(decode_traces(traces_request(), json_body=False))
            assert (logs.written, spans.written) == (3, 1), (logs, spans)
            envelopes = wait_for(
                lambda: len(read_record(record)) >= 2 and read_record(record), what="2 envelopes"
            )
        finally:
            bridge.shutdown(5000)
    ledger = (tmp_path / "l.jsonl").read_text()
    on_bus = json.dumps(envelopes)
    leaks = [
        f"{field} → {where}"
        for field, value in SECRETS.items()
        for where, text in (("ledger", ledger), ("bus", on_bus))
        if _secret_part(value) in text
    ]
    assert not leaks, leaks
    # Redacted, not dropped: the fields are still there, masked.
    assert "<REDACTED>" in ledger and "<REDACTED>" in on_bus
