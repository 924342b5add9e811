"""Reading an OTLP protobuf request record by record, when it does not parse as a whole.

protobuf refuses a whole message for one bad part: a string that is not UTF-8, or values
nested past its recursion limit. The Collector drops a batch answered 400, so one bad
record would cost its neighbours. Here the request is split by its framing only, through
shallow copies of the OTLP messages whose nested fields are plain ``bytes`` (parsing
``bytes`` neither validates nor recurses), and each record is parsed on its own: the good
ones make a new, valid request, the bad ones are reported for ``partial_success``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["salvage"]


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
