"""The bridge's OTLP adapter: the same span or record read from the SDK and from OTLP (protobuf
or JSON) gives the same neutral record, hence the same ledger line and envelope."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from membrane_otel.bridge._otlp import (
    MalformedRequest,
    decode_logs,
    decode_traces,
    logs_from_request,
    spans_from_request,
)
from membrane_otel.translate._core import log_envelope, log_line, span_line
from membrane_otel.translate._records import log_from_sdk, span_from_sdk

RESOURCE = Resource.create({"service.name": "bridge-test", "deployment.environment": "test"})

ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def sdk_spans() -> list[ReadableSpan]:
    """An HRM parent span with an exception event and error status, and a plain child."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("membrane_otel.spans._hrm")
    with tracer.start_as_current_span(
        "altitude.transition",
        attributes={
            "hrm.layer": "altitude",
            "hrm.operation": "transition",
            "hrm.event_id": "alt_1705180800_a3f2",
            "hrm.input_summary": "goal=ship",
            "hrm.meta.attempt": 2,
            "hrm.meta.ratio": 0.5,
            "hrm.meta.flags": ("a", "b"),
            "task_id": "t-1",
        },
    ) as parent:
        with tracer.start_as_current_span("fetch", attributes={"http.status_code": 200, "ok": True}):
            pass
        try:
            raise KeyError("missing")
        except KeyError as exc:
            parent.record_exception(exc)
            parent.set_status(Status(StatusCode.ERROR, "missing key"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def sdk_logs() -> list[ReadableLogRecord]:
    """An error record with exception/code/membrane attributes, a ledger event, a stimulus."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("orchestration.scripts.my_script")
    tracer_provider = TracerProvider(resource=RESOURCE)
    with tracer_provider.get_tracer("t").start_as_current_span("work"):
        logger.emit(
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body="Failed: 'missing'",
            attributes={
                "exception.type": "KeyError",
                "exception.message": "'missing'",
                "exception.stacktrace": "Traceback (most recent call last):\n  ...\nKeyError: 'missing'",
                "code.function": "main",
                "code.lineno": 42,
                "membrane.fingerprint": "abc123",
                "membrane.dedupe_key": "def456",
                "membrane.script_name": "my_script",
                "membrane.node_id": "code_substrate_orchestration_scripts_my_script_py",
                "membrane.record_id": "0f0e0d0c0b0a090807060504",
            },
        )
    logger.emit(
        severity_number=SeverityNumber.INFO,
        body={"note": "started", "items": [1, 2]},
        attributes={"task_id": "t-1", "persona_id": "p-9", "retries": 0, "ok": True},
        event_name="task_started",
    )
    logger.emit(
        severity_number=SeverityNumber.WARN,
        body="queue depth high",
        event_name="membrane.stimulus",
        attributes={
            "membrane.scope": "organizational",
            "membrane.source": "watchdog",
            "membrane.channel": "signals.metric",
            "membrane.features.urgency": 0.6,
            "membrane.features.novelty": 0.3,
            "membrane.features.trust": 0.9,
            "membrane.target_nodes": ("node_a", "node_b"),
            "membrane.signal_type": "metric",
        },
    )
    provider.shutdown()
    return list(exporter.get_finished_logs())


def to_otlp_json(message: Any) -> bytes:
    """OTLP/JSON as a Collector writes it: camelCase, enums as ints, ids as hex."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ID_FIELDS and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(data)
    return json.dumps(data).encode()


def test_spans_read_from_otlp_equal_spans_read_from_the_sdk() -> None:
    """Every span, through OTLP protobuf and the adapter, is the SpanData the SDK adapter makes."""
    spans = sdk_spans()
    decoded = decode_traces(encode_spans(spans).SerializeToString(), json_body=False)
    assert decoded.rejected == 0
    by_id = {s.span_id: s for s in decoded.records}
    for span in spans:
        expected = span_from_sdk(span)
        assert by_id[expected.span_id] == expected


def test_span_ledger_lines_are_the_same_in_both_modes() -> None:
    """span_line of the OTLP-decoded span equals span_line of the SDK span, HRM fields included."""
    spans = sdk_spans()
    decoded = decode_traces(encode_spans(spans).SerializeToString(), json_body=False)
    lines = sorted((span_line(s) for s in decoded.records), key=lambda ln: ln["otel_span_id"])
    expected = sorted((span_line(span_from_sdk(s)) for s in spans), key=lambda ln: ln["otel_span_id"])
    assert lines == expected
    hrm = next(ln for ln in lines if ln["event"] == "hrm_trace")
    assert hrm["trace_id"] == "alt_1705180800_a3f2"
    assert hrm["status"] == "error"
    assert hrm["metadata"]["flags"] == ["a", "b"]
    assert hrm["metadata"]["error_type"] == "KeyError"


def test_log_records_read_from_otlp_equal_records_read_from_the_sdk() -> None:
    """Errors, ledger events and stimuli give equal LogData, lines and envelopes both ways."""
    records = sdk_logs()
    decoded = decode_logs(encode_logs(records).SerializeToString(), json_body=False)
    assert decoded.rejected == 0
    assert decoded.records == [log_from_sdk(r) for r in records]
    for got, want in zip(decoded.records, (log_from_sdk(r) for r in records), strict=True):
        assert log_line(got) == log_line(want)
        if got.severity_number >= 13:
            assert log_envelope(got).to_json_dict() == log_envelope(want).to_json_dict()


def test_log_fields_map_as_the_sdk_has_them() -> None:
    """Severity, event_name, scope, resource, ids (lowercase hex) and a kvlist body come through."""
    error, event, stimulus = decode_logs(encode_logs(sdk_logs()).SerializeToString(), json_body=False).records
    assert (error.severity_number, error.severity_text) == (17, "ERROR")
    assert (
        error.trace_id is not None and len(error.trace_id) == 32 and error.trace_id == error.trace_id.lower()
    )
    assert error.span_id is not None and len(error.span_id) == 16
    assert error.scope == "orchestration.scripts.my_script"
    assert error.resource["service.name"] == "bridge-test"
    assert event.event_name == "task_started" and event.trace_id is None
    assert event.body == {"note": "started", "items": [1, 2]}
    assert stimulus.attributes["membrane.target_nodes"] == ["node_a", "node_b"]


def test_any_values_become_plain_python() -> None:
    """kvlist → dict, array → list, bytes → hex, unset → None, scalars as they are."""
    req = ExportLogsServiceRequest()
    record = req.resource_logs.add().scope_logs.add().log_records.add()
    record.body.kvlist_value.CopyFrom(
        KeyValueList(
            values=[
                KeyValue(key="raw", value=AnyValue(bytes_value=b"\x01\xab")),
                KeyValue(
                    key="list",
                    value=AnyValue(
                        array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="x")])
                    ),
                ),
                KeyValue(key="none", value=AnyValue()),
                KeyValue(key="f", value=AnyValue(double_value=1.5)),
                KeyValue(key="b", value=AnyValue(bool_value=False)),
            ]
        )
    )
    record.attributes.add(key="empty", value=AnyValue())
    record.attributes.add(
        key="nested",
        value=AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(string_value="v"))])
        ),
    )
    (log,) = logs_from_request(req).records
    assert log.body == {"raw": "01ab", "list": [1, "x"], "none": None, "f": 1.5, "b": False}
    assert log.attributes == {"empty": None, "nested": {"k": "v"}}
    assert log.body is not None and log.event_name is None and log.trace_id is None


def test_status_codes_map_to_names() -> None:
    """OTLP status codes 0/1/2 become unset/ok/error; an empty message becomes None."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i, code in enumerate((0, 1, 2)):
        s = spans.add(name=f"s{i}", trace_id=bytes(15) + b"\x01", span_id=bytes(7) + bytes([i + 1]))
        s.status.code = code
        s.status.message = "bad" if code == 2 else ""
    decoded = spans_from_request(req)
    assert [(s.status, s.status_message) for s in decoded.records] == [
        ("unset", None),
        ("ok", None),
        ("error", "bad"),
    ]


def test_records_with_invalid_ids_are_rejected_and_the_rest_kept() -> None:
    """A wrong-length id or a span without ids is counted as rejected, with a reason."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    spans.add(name="good", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    spans.add(name="short-trace", trace_id=b"\x01" * 3, span_id=b"\x02" * 8)
    spans.add(name="no-ids")
    decoded = spans_from_request(req)
    assert [s.name for s in decoded.records] == ["good"]
    assert decoded.rejected == 2
    assert "trace_id has 3 bytes" in decoded.errors[0]


def test_otlp_json_with_hex_ids_decodes_like_protobuf() -> None:
    """OTLP/JSON (hex ids, enum ints, camelCase) gives the same records as the protobuf body."""
    spans_req = encode_spans(sdk_spans())
    logs_req = encode_logs(sdk_logs())
    assert (
        decode_traces(to_otlp_json(spans_req), json_body=True).records
        == spans_from_request(spans_req).records
    )
    assert decode_logs(to_otlp_json(logs_req), json_body=True).records == logs_from_request(logs_req).records


def test_otlp_json_as_written_by_hand_decodes() -> None:
    """The spec's JSON shape: string intValue, severityNumber int, hex ids, unknown fields ignored."""
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": "lib"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "body": {"stringValue": "boom"},
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                                "someFutureField": {"x": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    (log,) = decode_logs(json.dumps(body).encode(), json_body=True).records
    assert log.trace_id == "5b8efff798038103d269b633813fc60c"
    assert log.span_id == "eee19b7ec3c1b174"
    assert (log.time_ns, log.severity_number, log.body, log.attributes) == (
        1_700_000_000_000_000_000,
        17,
        "boom",
        {"n": 7},
    )
    assert log.resource == {"service.name": "svc"} and log.scope == "lib"


@pytest.mark.parametrize(
    ("body", "json_body"),
    [
        (b"\xff\xff\xff\xff", False),
        (b"{not json", True),
        (b"[1, 2]", True),
        (b'{"resourceLogs": 5}', True),
        (b'{"resourceLogs": [5]}', True),
        (b'{"resourceLogs": [{"scopeLogs": {"logRecords": []}}]}', True),
    ],
)
def test_malformed_bodies_raise_malformed_request(body: bytes, json_body: bool) -> None:
    """Garbage protobuf, bad JSON and wrong shapes are MalformedRequest (HTTP 400)."""
    with pytest.raises(MalformedRequest):
        decode_logs(body, json_body=json_body)


def test_a_json_record_with_an_unreadable_value_is_rejected_alone() -> None:
    """A timestamp that is not a number costs its record (partial_success), not the request."""
    body = (
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": ['
        b'{"timeUnixNano": "soon"}, {"timeUnixNano": "5", "body": {"stringValue": "ok"}}]}]}]}'
    )
    decoded = decode_logs(body, json_body=True)
    assert decoded.rejected == 1 and [r.body for r in decoded.records] == ["ok"]
    assert "not a valid OTLP/JSON log record" in decoded.errors[0]


@pytest.mark.parametrize("bad_id", ["zz", "g" * 32])
def test_an_id_of_the_wrong_length_or_not_hex_in_json_rejects_only_that_record(bad_id: str) -> None:
    """A JSON id that is neither 16/32 hex nor the right bytes costs its record, not the batch."""
    body = (
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "'
        + bad_id.encode()
        + b'"}, {"body": {"stringValue": "ok"}}]}]}]}'
    )
    decoded = decode_logs(body, json_body=True)
    assert decoded.rejected == 1
    assert [r.body for r in decoded.records] == ["ok"]
