"""The bridge's fast read of OTLP logs (:mod:`membrane_otel.bridge._flat`) gives what the full read
gives, record for record; a bad attribute costs its record alone; redaction happens as it reads.

The fast read splits a request with a second schema whose attributes are raw ``KeyValue``
bytes and converts each distinct one once per request. These tests hold it to
:func:`~membrane_otel.bridge._otlp.logs_from_request` (the full protobuf read) on every
kind of value, on odd shapes (duplicate keys, unknown fields, several resources and scopes),
and on random requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from membrane_otel.bridge import Bridge
from membrane_otel.bridge._otlp import decode_logs, logs_from_flat, logs_from_request
from membrane_otel.ledger._writer import Ledger
from membrane_otel.logs._redact import Redactor

STACK = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: boom\n'


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _every_kind() -> list[KeyValue]:
    return [
        _kv("s", AnyValue(string_value="text")),
        _kv("empty_s", AnyValue(string_value="")),
        _kv("i", AnyValue(int_value=-42)),
        _kv("big", AnyValue(int_value=2**63 - 1)),
        _kv("f", AnyValue(double_value=1.5)),
        _kv("b", AnyValue(bool_value=True)),
        _kv("raw", AnyValue(bytes_value=b"\x00\xff")),
        _kv("unset", AnyValue()),
        _kv(
            "arr",
            AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="x")])),
        ),
        _kv("kv", AnyValue(kvlist_value=KeyValueList(values=[_kv("k", AnyValue(string_value="v"))]))),
        _kv("exception.stacktrace", AnyValue(string_value=STACK)),
    ]


def _request() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for service in ("svc-a", "svc-b"):
        rl = req.resource_logs.add()
        rl.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
        for scope in ("one", "two"):
            sl = rl.scope_logs.add()
            sl.scope.name = scope
            for i in range(3):
                r = sl.log_records.add()
                r.time_unix_nano = 1_700_000_000_000_000_000 + i
                r.observed_time_unix_nano = 5
                r.severity_number = 17
                r.severity_text = "ERROR"
                r.body.string_value = f"boom {i}" if i else ""
                r.attributes.extend(_every_kind())
                r.attributes.add(key="s", value=AnyValue(string_value="second wins"))  # a duplicate key
                r.dropped_attributes_count = 2  # fields the fast read does not declare
                r.flags = 1
                if i == 1:
                    r.trace_id = bytes(range(16))
                    r.span_id = bytes(range(8))
                    r.event_name = "membrane.stimulus"
                    r.body.CopyFrom(AnyValue(kvlist_value=KeyValueList(values=_every_kind()[:3])))
    return req


def test_the_fast_read_equals_the_full_read() -> None:
    req = _request()
    fast = logs_from_flat(req.SerializeToString())
    assert fast is not None
    full = logs_from_request(req)
    assert fast.records == full.records
    assert (fast.rejected, fast.errors) == (full.rejected, full.errors) == (0, [])
    assert len(fast.records) == 12
    assert fast.records[0].attributes["s"] == "second wins"
    assert fast.records[0].time_ns == 1_700_000_000_000_000_000
    assert fast.records[0].resource == {"service.name": "svc-a"}


def test_records_share_no_mutable_value() -> None:
    """Equal attributes are converted once, but a list or dict is each record's own."""
    one, two = logs_from_flat(_request().SerializeToString()).records[:2]
    assert one.attributes["arr"] == two.attributes["arr"]
    assert one.attributes["arr"] is not two.attributes["arr"]
    assert one.attributes["kv"] is not two.attributes["kv"]
    one.attributes["arr"].append("mine")
    assert two.attributes["arr"] == [1, "x"]


def _invalid_utf8_request() -> bytes:
    """Three records; the middle one has an attribute whose string is not UTF-8."""
    marker = "\u2603" * 3  # replaced below, byte for byte, by invalid UTF-8 of the same length
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(3):
        r = sl.log_records.add()
        r.time_unix_nano = i + 1
        r.body.string_value = f"record {i}"
        r.attributes.add(key="shared", value=AnyValue(string_value="same"))
        if i == 1:
            r.attributes.add(key="bad", value=AnyValue(string_value=marker))
    raw = req.SerializeToString()
    encoded = marker.encode()
    return raw.replace(encoded, b"\xff" * len(encoded))


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, by hand (protobuf will not build what it cannot read)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _nested_request(depth: int) -> bytes:
    """Three records; the middle one has an attribute of arrays nested ``depth`` deep."""
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(depth):
        value = _field(5, _field(1, value))  # AnyValue.array_value → ArrayValue.values
    records = b""
    for i in range(3):
        record = LogRecord(
            time_unix_nano=i + 1, body=AnyValue(string_value=f"record {i}")
        ).SerializeToString()
        if i == 1:
            record += _field(6, _field(1, b"deep") + _field(2, value))  # LogRecord.attributes
        records += _field(2, record)
    return _field(1, _field(2, records))


def test_an_attribute_of_invalid_utf8_rejects_its_record_alone() -> None:
    decoded = decode_logs(_invalid_utf8_request(), json_body=False)
    assert [log.body for log in decoded.records] == ["record 0", "record 2"]
    assert decoded.rejected == 1
    assert "invalid UTF-8" in decoded.errors[0]


def test_nesting_past_max_depth_or_protobufs_limit_rejects_its_record_alone() -> None:
    for depth in (17, 150):  # past max_depth (16); past protobuf's own recursion limit (100)
        decoded = decode_logs(_nested_request(depth), json_body=False, max_depth=16)
        assert [log.body for log in decoded.records] == ["record 0", "record 2"], depth
        assert decoded.rejected == 1


def test_attributes_are_redacted_as_they_are_read(tmp_path: Path) -> None:
    bridge = Bridge(Ledger(tmp_path / "ledger.jsonl"), redactor=Redactor())
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(2):  # the second record's attributes come from the per-request memory
        r = sl.log_records.add()
        r.time_unix_nano = i + 1
        r.severity_number = 17
        r.body.string_value = f"login failed password=hunter2 {i}"
        r.attributes.add(key="password", value=AnyValue(string_value="hunter2"))
        r.attributes.add(key="note", value=AnyValue(string_value=f"token {token}"))
    decoded = decode_logs(req.SerializeToString(), json_body=False, scrub=bridge.scrubber())
    assert decoded.scrub is not None
    out = bridge.accept_logs(decoded)
    assert out.written == 2
    text = (tmp_path / "ledger.jsonl").read_text()
    assert "hunter2" not in text and token not in text
    assert text.count("<REDACTED>") >= 6


# -- random requests ------------------------------------------------------------------


def _any_value(depth: int) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.text(max_size=12).map(lambda s: AnyValue(string_value=s)),
        st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda i: AnyValue(int_value=i)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.floats(allow_nan=False).map(lambda f: AnyValue(double_value=f)),
        st.binary(max_size=4).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),
    )
    if depth <= 0:
        return scalars
    inner = _any_value(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
        st.lists(st.tuples(st.text(max_size=4), inner), max_size=3).map(
            lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in kvs]))
        ),
    )


_keys = st.sampled_from(["a", "b", "service.name", "membrane.record_id", "password", "x.y"])
_record: Any = st.tuples(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=0, max_value=24),
    _any_value(2),
    st.lists(st.tuples(_keys, _any_value(2)), max_size=6),
    st.sampled_from([b"", bytes(16), b"\x01" * 15]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_record, min_size=1, max_size=5))
def test_random_requests_read_alike(records: list[Any]) -> None:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for time_ns, severity, body, attrs, trace_id in records:
        r = sl.log_records.add()
        r.time_unix_nano = time_ns
        r.severity_number = severity
        r.body.CopyFrom(body)
        r.attributes.extend(_kv(k, v) for k, v in attrs)
        r.trace_id = trace_id
        # Twice the same record: the second one's attributes come from the memory.
        sl.log_records.append(r)
    fast = logs_from_flat(req.SerializeToString(), max_depth=3)
    assert fast is not None
    full = logs_from_request(req, max_depth=3)
    assert fast.records == full.records
    assert fast.rejected == full.rejected


def test_texts_redacted_after_the_read_match_redacting_each_value(tmp_path: Path) -> None:
    """Values first seen in a request are redacted together after the read: every record ends
    with what redacting each of its values alone gives — a secret in a value unique to one
    record, in a value shared by several, under a repeated key (the last wins), in the body."""
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i in range(40):
        r = sl.log_records.add()
        r.time_unix_nano = i + 1
        r.severity_number = 17
        r.body.string_value = f"login failed password=hunter{i}" if i % 9 == 0 else f"failed for {i}"
        r.attributes.add(key="id", value=AnyValue(string_value=f"{i:024x}"))
        r.attributes.add(key="shared", value=AnyValue(string_value=f"token {token}" if i < 20 else "calm"))
        r.attributes.add(
            key="note", value=AnyValue(string_value=f"api_key={i}x9Qz7LmP2" if i == 13 else "ok")
        )
        if i == 21:  # a repeated key: a secret first, a clean value last (the last wins)
            r.attributes.add(key="note", value=AnyValue(string_value=f"Bearer {token}"))
            r.attributes.add(key="note", value=AnyValue(string_value="fine"))
        r.attributes.add(key="password", value=AnyValue(string_value=f"pw{i}"))
    body = req.SerializeToString()
    bridge = Bridge(Ledger(tmp_path / "ledger.jsonl"), redactor=Redactor())
    decoded = logs_from_flat(body, scrub=bridge.scrubber())
    plain = logs_from_flat(body)
    assert decoded is not None and plain is not None and len(decoded.records) == 40
    fresh = bridge.scrubber()
    for got, raw in zip(decoded.records, plain.records, strict=True):
        assert got.attributes == {k: fresh.pair(k, v) for k, v in raw.attributes.items()}
    text = repr([log.attributes for log in decoded.records])
    assert token not in text and "x9Qz7LmP2" not in text and "'pw1'" not in text
    assert decoded.records[21].attributes["note"] == "fine"
    assert decoded.records[5].attributes["id"] == f"{5:024x}"
    assert bridge.accept_logs(decoded).written == 40
    ledger = (tmp_path / "ledger.jsonl").read_text()
    assert "hunter" not in ledger and token not in ledger and "failed for 5" in ledger


def test_structured_bodies_are_redacted_beside_plain_ones(tmp_path: Path) -> None:
    """A request mixing string, kvlist and array bodies: the string ones go through the group
    proof, the others through the redactor as before; nothing is refused, no secret is written."""
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    bodies = [
        AnyValue(string_value="plain 1"),
        AnyValue(kvlist_value=KeyValueList(values=[_kv("password", AnyValue(string_value="hunter2"))])),
        AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="token=ghp_" + "Z" * 36)])),
        AnyValue(string_value="plain 2"),
    ]
    for i, body in enumerate(bodies):
        r = sl.log_records.add(time_unix_nano=i + 1, severity_number=17)
        r.body.CopyFrom(body)
    bridge = Bridge(Ledger(tmp_path / "ledger.jsonl"), redactor=Redactor())
    decoded = decode_logs(req.SerializeToString(), json_body=False, scrub=bridge.scrubber())
    assert bridge.accept_logs(decoded).written == 4
    ledger = (tmp_path / "ledger.jsonl").read_text()
    assert "hunter2" not in ledger and "Z" * 36 not in ledger and "plain 2" in ledger


_TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "password=hunter2",
            "token ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
            "Authorization: Bearer abc.def.ghi",
            "AKIA" + "ABCDEFGHIJKLMNOP",
            "plain",
            "naïve café",
            "",
        ]
    ),
)
_REDACTABLE = st.one_of(_TEXTS.map(lambda s: AnyValue(string_value=s)), _any_value(1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_REDACTABLE, st.lists(st.tuples(_keys, _REDACTABLE), max_size=6)), max_size=40))
def test_random_requests_redact_as_each_value_alone(records: list[Any]) -> None:
    """Redacted as read (new texts proven clean in groups after the read) equals read, then
    each value redacted alone: secrets and clean texts, shared and unique, repeated keys."""
    from membrane_otel.bridge._core import _Scrub

    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for i, (body, attrs) in enumerate(records):
        r = sl.log_records.add(time_unix_nano=i + 1, severity_number=17)
        r.body.CopyFrom(body)
        r.attributes.extend(_kv(k, v) for k, v in attrs)
    raw = req.SerializeToString()
    redactor = Redactor()
    redactor("password=x")  # the rules built, as in a running bridge
    fast = logs_from_flat(raw, max_depth=3, scrub=_Scrub(redactor))
    plain = logs_from_flat(raw, max_depth=3)
    assert fast is not None and plain is not None
    alone = _Scrub(redactor)
    assert [r.attributes for r in fast.records] == [
        {k: alone.pair(k, v) for k, v in r.attributes.items()} for r in plain.records
    ]
