"""A second schema for OTLP logs requests, whose log records keep their attributes as bytes.

Reading a log record's fields out of the OTLP protobuf costs more than parsing it: every
attribute is a ``KeyValue`` and an ``AnyValue`` object, a key and a value string, created
for every record (~14 µs a record of 16 attributes, the bridge's largest single cost). But
the records of one request repeat their attributes (the same service, script, exception,
stack trace) byte for byte. This schema is the OTLP logs request field for field (same
numbers, same wire types), except that ``LogRecord.attributes`` is ``repeated bytes``: one
C parse splits the request, each attribute arrives as its encoded ``KeyValue``, and the
bridge converts (and redacts) each distinct encoding once per request
(:func:`membrane_otel.bridge._otlp.logs_from_flat`).

What is not read here is still checked: each distinct attribute is parsed as a real
``KeyValue`` (UTF-8, nesting), so a bad one costs its record alone; the body, resource and
scope are the real OTLP messages. Fields the bridge does not use are left out (protobuf
keeps them as unknown fields, as a newer client's fields would be).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

__all__ = ["FlatLogsRequest"]

_F = descriptor_pb2.FieldDescriptorProto
_PKG = "membrane_otel.flat"
_COMMON = ".opentelemetry.proto.common.v1."
# message → (field name, number, repeated, type, message type name)
_SCHEMA: dict[str, list[tuple[str, int, bool, int, str | None]]] = {
    "Request": [("resource_logs", 1, True, _F.TYPE_MESSAGE, f".{_PKG}.ResourceLogs")],
    "ResourceLogs": [
        ("resource", 1, False, _F.TYPE_MESSAGE, ".opentelemetry.proto.resource.v1.Resource"),
        ("scope_logs", 2, True, _F.TYPE_MESSAGE, f".{_PKG}.ScopeLogs"),
    ],
    "ScopeLogs": [
        ("scope", 1, False, _F.TYPE_MESSAGE, f"{_COMMON}InstrumentationScope"),
        ("log_records", 2, True, _F.TYPE_MESSAGE, f".{_PKG}.LogRecord"),
    ],
    "LogRecord": [  # opentelemetry/proto/logs/v1/logs.proto, numbers and wire types as there
        ("time_unix_nano", 1, False, _F.TYPE_FIXED64, None),
        ("severity_number", 2, False, _F.TYPE_INT32, None),  # an enum there: the same varint
        ("severity_text", 3, False, _F.TYPE_STRING, None),
        ("body", 5, False, _F.TYPE_MESSAGE, f"{_COMMON}AnyValue"),
        ("attributes", 6, True, _F.TYPE_BYTES, None),  # KeyValue there: the one difference
        ("trace_id", 9, False, _F.TYPE_BYTES, None),
        ("span_id", 10, False, _F.TYPE_BYTES, None),
        ("observed_time_unix_nano", 11, False, _F.TYPE_FIXED64, None),
        ("event_name", 12, False, _F.TYPE_STRING, None),
    ],
}


def _request_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    fd = descriptor_pb2.FileDescriptorProto(
        name="membrane_otel/bridge/flat_logs.proto",
        package=_PKG,
        syntax="proto3",
        dependency=[common_pb2.DESCRIPTOR.name, resource_pb2.DESCRIPTOR.name],
    )
    for name, fields in _SCHEMA.items():
        msg = fd.message_type.add(name=name)
        for field, number, repeated, kind, type_name in fields:
            label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            added = msg.field.add(name=field, number=number, label=label, type=kind)
            if type_name:
                added.type_name = type_name
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.Request"))


FlatLogsRequest: Any = _request_class()
