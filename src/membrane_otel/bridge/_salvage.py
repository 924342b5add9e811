"""Reading an OTLP protobuf request record by record, when it does not parse as a whole.

protobuf refuses a whole message for one bad part: a string that is not UTF-8, or values
nested past its recursion limit. The Collector drops a batch answered 400, so one bad
record would cost its neighbours. Here the request is split by its framing only, through
shallow copies of the OTLP messages whose nested fields are plain ``bytes`` (parsing
``bytes`` neither validates nor recurses), and each record is parsed on its own: the good
ones make a new, valid request, the bad ones are reported for ``partial_success``.
OTLP/JSON gets the same treatment from its parsed tree (:func:`salvage_json`).
"""

from __future__ import annotations

import binascii
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["salvage", "salvage_json"]


def _shallow_classes() -> tuple[type[Message], type[Message], type[Message]]:
    """Request{repeated bytes blocks=1}, Block{bytes resource=1; repeated bytes scopes=2},
    Scope{bytes scope=1; repeated bytes records=2}: the same field numbers for logs and traces."""
    fd = descriptor_pb2.FileDescriptorProto(
        name="membrane_otel/bridge/shallow.proto", package="membrane_otel.shallow", syntax="proto3"
    )
    rep, opt = (
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    raw = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    for name, fields in (
        ("Request", [("blocks", 1, rep)]),
        ("Block", [("resource", 1, opt), ("scopes", 2, rep)]),
        ("Scope", [("scope", 1, opt), ("records", 2, rep)]),
    ):
        msg = fd.message_type.add(name=name)
        for fname, number, label in fields:
            msg.field.add(name=fname, number=number, label=label, type=raw)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("membrane_otel.shallow.Request")),
        get(pool.FindMessageTypeByName("membrane_otel.shallow.Block")),
        get(pool.FindMessageTypeByName("membrane_otel.shallow.Scope")),
    )


_Request, _Block, _Scope = _shallow_classes()


def _parse(cls: Any, data: bytes) -> Any:
    msg = cls()
    msg.ParseFromString(data)
    return msg


def salvage(body: bytes, kind: str) -> tuple[Message, list[str]]:
    """The request rebuilt from its readable records, and one reason per unreadable record.

    Raises ``ValueError`` when not even the framing can be read (the body is not OTLP).
    """
    try:
        shallow = _parse(_Request, body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    record_cls: Any = LogRecord if kind == "logs" else Span
    what = "log record" if kind == "logs" else "span"
    out: Any = ExportLogsServiceRequest() if kind == "logs" else ExportTraceServiceRequest()
    blocks = out.resource_logs if kind == "logs" else out.resource_spans
    problems: list[str] = []
    for raw_block in shallow.blocks:
        try:
            block = _parse(_Block, raw_block)
            scopes = [_parse(_Scope, raw) for raw in block.scopes]
            resource = _parse(Resource, block.resource)
        except (DecodeError, RuntimeError, ValueError) as exc:
            problems.append(f"{what}s of an unreadable resource block: {exc}")
            continue
        new_block = blocks.add()
        new_block.resource.CopyFrom(resource)
        for scope in scopes:
            try:
                scope_msg = _parse(InstrumentationScope, scope.scope)
            except (DecodeError, RuntimeError, ValueError) as exc:
                problems.extend(f"{what}: unreadable scope: {exc}" for _ in scope.records)
                continue
            new_scope = new_block.scope_logs.add() if kind == "logs" else new_block.scope_spans.add()
            new_scope.scope.CopyFrom(scope_msg)
            records = new_scope.log_records if kind == "logs" else new_scope.spans
            for raw in scope.records:
                try:
                    records.append(_parse(record_cls, raw))
                except (DecodeError, RuntimeError, ValueError) as exc:
                    problems.append(f"{what}: not valid protobuf (invalid UTF-8 or nested too deep): {exc}")
    return out, problems


# OTLP/JSON field names (lowerCamelCase, as the spec writes them; the proto names are accepted too)
_JSON_LEVELS = {
    "logs": (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")),
    "traces": (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans")),
}
_JSON_ERRORS = (json_format.ParseError, binascii.Error, ValueError, TypeError, AttributeError, RecursionError)


def _items(node: dict[str, Any], names: tuple[str, str]) -> list[dict[str, Any]]:
    """The list under ``names``, each item an object; raises ValueError when the request's
    own shape is wrong there (no record can then be told from another)."""
    value = node.get(names[0], node.get(names[1]))
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"{names[0]} is not a JSON array of objects")
    return value


def _json_message(cls: Any, node: Any) -> Any:
    msg = cls()
    if node is not None:
        json_format.ParseDict(node, msg, ignore_unknown_fields=True)
    return msg


def salvage_json(data: dict[str, Any], kind: str) -> tuple[Message, list[str]]:
    """:func:`salvage` for an OTLP/JSON request (already ``json.loads``-ed): a record whose
    value protobuf refuses (a timestamp that is not a 64-bit integer, a string with a lone
    surrogate, a number where a string belongs) is rejected alone, and so are the records
    under a resource or scope whose own values are refused.

    Raises ``ValueError`` when the request's shape is wrong (a list that is not a list of
    objects): then it is not OTLP at all.
    """
    top, middle, leaf = _JSON_LEVELS[kind]
    record_cls: Any = LogRecord if kind == "logs" else Span
    what = "log record" if kind == "logs" else "span"
    out: Any = ExportLogsServiceRequest() if kind == "logs" else ExportTraceServiceRequest()
    blocks = out.resource_logs if kind == "logs" else out.resource_spans
    problems: list[str] = []
    for raw_block in _items(data, top):
        scopes = _items(raw_block, middle)
        shaped = [(raw_scope, _items(raw_scope, leaf)) for raw_scope in scopes]
        try:
            resource = _json_message(Resource, raw_block.get("resource"))
        except _JSON_ERRORS as exc:
            reason = f"{what}: unreadable resource: {str(exc)[:200]}"
            problems.extend(reason for _, raw_records in shaped for _ in raw_records)
            continue
        new_block = blocks.add()
        new_block.resource.CopyFrom(resource)
        for raw_scope, raw_records in shaped:
            try:
                scope_msg = _json_message(InstrumentationScope, raw_scope.get("scope"))
            except _JSON_ERRORS as exc:
                problems.extend(f"{what}: unreadable scope: {str(exc)[:200]}" for _ in raw_records)
                continue
            new_scope = new_block.scope_logs.add() if kind == "logs" else new_block.scope_spans.add()
            new_scope.scope.CopyFrom(scope_msg)
            records = new_scope.log_records if kind == "logs" else new_scope.spans
            for raw in raw_records:
                try:
                    records.append(_json_message(record_cls, raw))
                except _JSON_ERRORS as exc:
                    problems.append(f"{what}: not a valid OTLP/JSON {what}: {str(exc)[:200]}")
    return out, problems
