"""The one translation: records → ledger lines and envelopes."""

from __future__ import annotations

import dataclasses

from membrane_otel.membrane._envelope import Envelope
from membrane_otel.translate._core import (
    log_envelope,
    log_line,
    severity_and_urgency,
    span_line,
    wants_envelope,
)
from membrane_otel.translate._records import LogData, SpanData

SEED_000_METADATA = {
    "stimulus_id",
    "origin",
    "timestamp_ms",
    "signal_type",
    "dedupe_key",
    "stack_fingerprint",
    "script_name",
    "script_path",
    "module",
    "function",
    "line",
    "level",
    "error_type",
    "stack_trace",
}


def _error_log(**attrs: object) -> LogData:
    base = {
        "membrane.l2": True,
        "membrane.script_name": "my_script",
        "membrane.script_path": "orchestration/scripts/my_script.py",
        "membrane.node_id": "code_substrate_orchestration_scripts_my_script_py",
        "membrane.source": "script:my_script",
        "membrane.channel": "signals.script.my_script",
        "membrane.scope": "organizational",
        "membrane.fingerprint": "f" * 40,
        "membrane.dedupe_key": "d" * 40,
        "membrane.record_id": "r1",
        "code.function": "my_function",
        "code.lineno": 42,
        "code.namespace": "my_module",
        "exception.type": "KeyError",
        "exception.message": "'x'",
        "exception.stacktrace": "Traceback (most recent call last):\n...",
    }
    base.update(attrs)
    return LogData(
        time_ns=1_234_567_890_000_000_000,
        severity_number=17,
        severity_text="ERROR",
        body="Error message",
        attributes=base,
        event_name=None,
        trace_id="a" * 32,
        span_id="b" * 16,
        resource={"service.name": "svc"},
        scope="my_script",
    )


def test_error_envelope_has_every_seed_000_field() -> None:
    """An error record becomes the seeds/000 envelope, field for field, plus OTel ids."""
    env = log_envelope(_error_log()).to_json_dict()
    assert env["type"] == "membrane.inject"
    assert env["channel"] == "signals.script.my_script"
    assert env["content"] == "my_script: Error message"
    assert env["severity"] == "error"
    assert env["features_raw"] == {"urgency": 0.7, "novelty": 0.25, "trust": 0.9}
    md = env["metadata"]
    assert SEED_000_METADATA <= set(md)
    assert md["origin"] == "script_logger" and md["timestamp_ms"] == 1_234_567_890_000
    assert md["signal_type"] == "script_error" and md["level"] == "ERROR" and md["line"] == 42
    assert md["otel_trace_id"] == "a" * 32 and md["otel_span_id"] == "b" * 16
    assert md["node_id"] == "code_substrate_orchestration_scripts_my_script_py"
    assert "citizen_id" not in env


def test_legacy_switch_emits_top_level_citizen_id() -> None:
    """The compatibility form of seeds/000 carries citizen_id = the node id."""
    env = log_envelope(_error_log()).to_json_dict(legacy=True)
    assert env["citizen_id"] == "code_substrate_orchestration_scripts_my_script_py"
    assert list(env)[:2] == ["type", "citizen_id"]


def test_severity_to_urgency_mapping() -> None:
    """INFO 0.2, WARNING 0.4, ERROR 0.7, CRITICAL 0.95."""
    assert severity_and_urgency(9) == ("info", 0.2)
    assert severity_and_urgency(13) == ("warn", 0.4)
    assert severity_and_urgency(17) == ("error", 0.7)
    assert severity_and_urgency(21) == ("critical", 0.95)


def test_content_is_capped_at_500() -> None:
    """A long message makes content of at most 500 characters."""
    env = log_envelope(_error_log(), default_scope="organizational")
    long = _error_log()
    long.body = "x" * 5000
    assert len(log_envelope(long).content) == 500 and env.content


def test_only_membrane_records_become_envelopes() -> None:
    """Errors at or above L2 and stimuli become envelopes; info logs and ledger events do not."""
    info = _error_log()
    info.severity_number = 9
    info.attributes = {}
    event = _error_log()
    event.event_name = "task_started"
    assert wants_envelope(_error_log(), 17)
    assert not wants_envelope(info, 17)
    assert not wants_envelope(event, 17)


def test_ledger_line_is_flat_with_event_first() -> None:
    """A ledger event line: event first, timestamps, ids, payload flattened."""
    rec = LogData(
        time_ns=1_700_000_000_000_000_000,
        severity_number=9,
        severity_text="INFO",
        body=None,
        attributes={"task_id": "demo-001", "goal": "explain", "event": "clash"},
        event_name="task_started",
        trace_id=None,
        span_id=None,
        resource={},
        scope="events",
    )
    line = log_line(rec)
    assert list(line)[:3] == ["event", "ts", "ts_unix"]
    assert line["event"] == "task_started" and line["task_id"] == "demo-001" and line["goal"] == "explain"
    assert line["payload_event"] == "clash", "payload never overwrites the line's own keys"
    assert line["ts"] == "2023-11-14T22:13:20.000Z"


def test_span_line_keeps_the_seed_trace_event_fields() -> None:
    """An HRM span line carries every TraceEvent field by its seed name."""
    span = SpanData(
        name="altitude.transition",
        trace_id="c" * 32,
        span_id="d" * 16,
        parent_span_id=None,
        start_ns=1_705_180_800_000_000_000,
        end_ns=1_705_180_800_005_000_000,
        status="unset",
        status_message=None,
        events=[],
        resource={},
        scope="membrane_otel.spans._hrm",
        attributes={
            "hrm.layer": "altitude",
            "hrm.operation": "transition",
            "hrm.component": "altitude.py",
            "hrm.input_summary": "L3→L2",
            "hrm.output_summary": "success",
            "hrm.event_id": "alt_1705180800_a3f2",
            "hrm.status": "success",
            "hrm.meta.reason": "user requested tactical",
        },
    )
    line = span_line(span)
    for key in (
        "trace_id",
        "parent_id",
        "timestamp",
        "hrm_layer",
        "operation",
        "component",
        "input_summary",
        "output_summary",
        "duration_ms",
        "status",
        "metadata",
    ):
        assert key in line
    assert line["trace_id"] == "alt_1705180800_a3f2" and line["parent_id"] is None
    assert line["duration_ms"] == 5.0 and line["metadata"] == {"reason": "user requested tactical"}
    assert line["otel_trace_id"] == "c" * 32


def test_envelope_model_round_trip() -> None:
    """The wire form validates back into the model."""
    Envelope.model_validate(log_envelope(_error_log()).to_json_dict())


def _line_as_before(log: LogData) -> dict[str, object]:
    """The payload as log_line put it attribute by attribute before its keys were planned per
    shape (issue 13): the plan must give the same keys, values and order."""
    from membrane_otel._internal.tables import RESERVED

    line = log_line(dataclasses.replace(log, attributes={}))  # the line's own keys (none of ID_KEYS here)
    line.pop("service")
    line.pop("record_id")
    skip = {"task_id", "persona_id", "session_id", "membrane.record_id", "membrane.l2"}
    skip |= {"membrane.first_ts_ns", "membrane.last_ts_ns", "membrane.occurrences"}
    for key, value in log.attributes.items():
        if key in skip:
            continue
        if key in line or key == "service":
            line[f"payload_{key}"] = value
        else:
            line[f"payload_{key}" if key in RESERVED else key] = value
    return line


def test_payload_keys_never_overwrite_the_lines_own_or_each_other() -> None:
    odd = {
        "event": 1,
        "payload_event": 2,
        "service": 3,
        "payload_service": 4,
        "seq": 5,
        "level": 6,
        "message": 7,
        "ts": 8,
        "x": 9,
        "record_id": 10,
    }
    for event_name in (None, "task_started"):
        log = _error_log(**odd)
        log.event_name = event_name
        line = log_line(log)
        expected = _line_as_before(log)
        payload = {k: v for k, v in line.items() if k not in ("service", "record_id")}
        assert list(payload.items()) == list(expected.items()), event_name
        assert line["service"] == "svc" and line["record_id"] == "r1"
        assert line["payload_event"] == 2 or line["payload_payload_event"] == 2
        # The same shape again (the plan remembered): the same line.
        assert log_line(log) == line
