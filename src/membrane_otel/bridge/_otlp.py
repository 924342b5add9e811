"""The bridge's adapter: OTLP export requests → the neutral records of :mod:`membrane_otel.translate._records`.

The second of the two thin adapters (the first reads the SDK's objects in-process). What
comes out must equal what :func:`membrane_otel.translate._records.span_from_sdk` /
:func:`~membrane_otel.translate._records.log_from_sdk` make of the same span or record, so that the one
translation gives the same ledger lines and envelopes in embedded and collector mode:
AnyValue → plain Python (kvlist → dict, array → list, bytes → hex), ids → lowercase hex,
an empty string status message → None, as the SDK has it.

This runs once per record on the bridge's hot path, so it reads protobuf fields directly
(``WhichOneof`` + ``getattr``) and shares one resource dict per resource block instead of
copying it into every record.

OTLP/JSON is protobuf JSON with one twist: trace and span ids are hex strings, where
protobuf JSON expects base64 for ``bytes``. :func:`parse_json` rewrites them before parsing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from membrane_otel.bridge._flat import FlatLogsRequest
from membrane_otel.bridge._later import Scrub, redact_later
from membrane_otel.bridge._limits import ValueBudget
from membrane_otel.bridge._salvage import salvage, salvage_json
from membrane_otel.translate._records import EventData, LogData, SpanData, StatusName

__all__ = [
    "Decoded",
    "MalformedRequest",
    "decode_logs",
    "decode_traces",
    "logs_from_request",
    "parse_json",
    "parse_protobuf",
    "spans_from_request",
]

M = TypeVar("M", bound=Message)

_STATUS: dict[int, StatusName] = {0: "unset", 1: "ok", 2: "error"}
_SCALARS = frozenset(("string_value", "bool_value", "int_value", "double_value"))
DEFAULT_DEPTH = 16  # Limits.max_depth
DEFAULT_VALUES = 200_000  # Limits.max_values


class MalformedRequest(ValueError):
    """The body is not a valid OTLP export request (HTTP 400)."""


@dataclass(slots=True)
class Decoded:
    """Records read from one request, and what could not be read (for ``partial_success``)."""

    records: list[Any] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    # The redactor the records' attributes already went through (None: not redacted yet).
    scrub: Any = None

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5:  # the answer names a few reasons, not thousands
            self.errors.append(why)


# --------------------------------------------------------------------------- values


def _value(v: Any, depth: int, budget: ValueBudget) -> Any:
    """One ``AnyValue`` as plain Python, as :func:`membrane_otel.translate._records._plain` has it.

    ``depth`` is how many more levels of nesting are allowed: a record nested deeper is
    invalid (``ValueError``) and rejected alone.
    """
    kind = v.WhichOneof("value")
    if kind in _SCALARS:
        return getattr(v, kind)
    if kind == "array_value":
        if depth <= 0:
            raise ValueError("attribute value nested too deep (max_depth)")
        values = v.array_value.values
        budget.spend(len(values))
        return [_value(x, depth - 1, budget) for x in values]
    if kind == "kvlist_value":
        if depth <= 0:
            raise ValueError("attribute value nested too deep (max_depth)")
        pairs = v.kvlist_value.values
        budget.spend(len(pairs))
        return {kv.key: _value(kv.value, depth - 1, budget) for kv in pairs}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def _attrs(kvs: Sequence[Any], depth: int, budget: ValueBudget) -> dict[str, Any]:
    budget.spend(len(kvs))
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        # Most attributes are non-empty strings. A oneof reads "" for every case but the one
        # set, so a non-empty string_value *is* the value: one read instead of three.
        text = v.string_value
        if text:
            out[kv.key] = text
            continue
        kind = v.WhichOneof("value")
        out[kv.key] = getattr(v, kind) if kind in _SCALARS else _value(v, depth, budget)
    return out


def _id(raw: bytes, width: int, what: str) -> str:
    """Hex of an id: ``""`` when absent; a wrong length is an invalid record."""
    if not raw:
        return ""
    if len(raw) != width:
        raise ValueError(f"{what} has {len(raw)} bytes, expected {width}")
    return raw.hex()


# --------------------------------------------------------------------------- spans


def spans_from_request(
    req: ExportTraceServiceRequest, max_depth: int = DEFAULT_DEPTH, max_values: int = DEFAULT_VALUES
) -> Decoded:
    """Every span of an export request as :class:`SpanData`; unreadable spans are counted."""
    out = Decoded()
    budget = ValueBudget(max_values)
    append = out.records.append
    for rs in req.resource_spans:
        try:
            resource = _attrs(rs.resource.attributes, max_depth, budget)
        except ValueError as exc:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.reject(f"span {s.name!r}: resource: {exc}")
            continue
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                budget.spend(len(s.events))  # an event without attributes is still an object
                try:
                    status = s.status
                    trace_id = _id(s.trace_id, 16, "trace_id")
                    span_id = _id(s.span_id, 8, "span_id")
                    if not trace_id or not span_id:
                        raise ValueError("span without trace_id or span_id")
                    append(
                        SpanData(
                            name=s.name,
                            trace_id=trace_id,
                            span_id=span_id,
                            parent_span_id=_id(s.parent_span_id, 8, "parent_span_id") or None,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano or s.start_time_unix_nano,
                            status=_STATUS.get(status.code, "unset"),
                            status_message=status.message or None,
                            attributes=_attrs(s.attributes, max_depth, budget),
                            events=[
                                EventData(e.name, e.time_unix_nano, _attrs(e.attributes, max_depth, budget))
                                for e in s.events
                            ],
                            resource=resource,
                            scope=scope,
                        )
                    )
                except ValueError as exc:
                    out.reject(f"span {s.name!r}: {exc}")
    return out


# --------------------------------------------------------------------------- logs


def _resource_or_reject(rl: Any, out: Decoded, max_depth: int, budget: ValueBudget) -> dict[str, Any] | None:
    """A ResourceLogs' resource attributes; None (each of its records rejected) if unreadable."""
    try:
        return _attrs(rl.resource.attributes, max_depth, budget)
    except ValueError as exc:
        for sl in rl.scope_logs:
            for _ in sl.log_records:
                out.reject(f"log record: resource: {exc}")
        return None


def logs_from_request(
    req: ExportLogsServiceRequest, max_depth: int = DEFAULT_DEPTH, max_values: int = DEFAULT_VALUES
) -> Decoded:
    """Every log record of an export request as :class:`LogData`; unreadable ones are counted."""
    out = Decoded()
    budget = ValueBudget(max_values)
    append = out.records.append
    for rl in req.resource_logs:
        resource = _resource_or_reject(rl, out, max_depth, budget)
        if resource is None:
            continue
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for r in sl.log_records:
                # Ids inline (not via _id): this loop is the bridge's hottest code.
                tid, sid = r.trace_id, r.span_id
                if (tid and len(tid) != 16) or (sid and len(sid) != 8):
                    out.reject(f"log record: trace_id/span_id of {len(tid)}/{len(sid)} bytes, expected 16/8")
                    continue
                body = r.body
                text = body.string_value  # as in _attrs: non-empty means it is the value
                try:
                    append(
                        LogData(
                            r.time_unix_nano or r.observed_time_unix_nano,
                            r.severity_number,
                            r.severity_text,
                            text if text else _value(body, max_depth, budget),
                            _attrs(r.attributes, max_depth, budget),
                            r.event_name or None,
                            tid.hex() if tid else None,
                            sid.hex() if sid else None,
                            resource,
                            scope,
                        )
                    )
                except ValueError as exc:
                    out.reject(f"log record: {exc}")
    return out


# Attribute values that one record may share with another (a list or dict is its own).
_SHARED = frozenset((str, int, float, bool, type(None)))


def _pair(raw: bytes, max_depth: int, scrub: Scrub | None, budget: ValueBudget) -> tuple[str, Any]:
    """One encoded ``KeyValue`` → ``(key, value)``, validated and redacted."""
    try:
        kv = KeyValue.FromString(raw)
    except (DecodeError, RuntimeError) as exc:  # RecursionError is a RuntimeError
        raise ValueError(f"attribute not valid protobuf (invalid UTF-8 or nested too deep): {exc}") from None
    v = kv.value
    value = v.string_value or _value(v, max_depth, budget)  # as _attrs reads it
    return kv.key, value if scrub is None else scrub.pair(kv.key, value)


def logs_from_flat(
    body: bytes, max_depth: int = DEFAULT_DEPTH, scrub: Scrub | None = None, max_values: int = DEFAULT_VALUES
) -> Decoded | None:
    """:func:`logs_from_request` of a protobuf body, read through :mod:`._flat`: each distinct
    encoded attribute of the request is converted (and redacted, with ``scrub``) once.
    None when the body does not parse even so (the caller reads it the slow way)."""
    try:
        req = FlatLogsRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError):
        return None
    out = Decoded(scrub=scrub)
    budget = ValueBudget(max_values)
    append = out.records.append
    pairs: dict[bytes, tuple[str, Any]] = {}  # bounded by the body: its keys are slices of it
    lookup = pairs.get
    # Texts first seen here (most often one per record: its id, its message) are redacted after
    # the loop, together (see redact_later); until then their records hold them as read.
    later: list[bytes] = []
    kept: list[Any] = []  # each appended record's protobuf, for redact_later
    for rl in req.resource_logs:
        resource = _resource_or_reject(rl, out, max_depth, budget)
        if resource is None:
            continue
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for r in sl.log_records:
                tid, sid = r.trace_id, r.span_id
                if (tid and len(tid) != 16) or (sid and len(sid) != 8):
                    out.reject(f"log record: trace_id/span_id of {len(tid)}/{len(sid)} bytes, expected 16/8")
                    continue
                try:
                    attributes = r.attributes
                    budget.spend(len(attributes))  # before any of them is made
                    attrs: dict[str, Any] = {}
                    for raw in attributes:
                        hit = lookup(raw)
                        if hit is None:
                            hit = _pair(raw, max_depth, None, budget)
                            if scrub is not None:
                                if type(hit[1]) is str and scrub.later(*hit):
                                    later.append(raw)
                                else:
                                    hit = (hit[0], scrub.pair(*hit))
                            if type(hit[1]) in _SHARED:  # a list or dict stays the record's own
                                pairs[raw] = hit
                        attrs[hit[0]] = hit[1]
                    value = r.body
                    text = value.string_value
                    append(
                        LogData(
                            r.time_unix_nano or r.observed_time_unix_nano,
                            r.severity_number,
                            r.severity_text,
                            text if text else _value(value, max_depth, budget),
                            attrs,
                            r.event_name or None,
                            tid.hex() if tid else None,
                            sid.hex() if sid else None,
                            resource,
                            scope,
                        )
                    )
                    kept.append(r)
                except ValueError as exc:
                    out.reject(f"log record: {exc}")
    if later and scrub is not None:
        redact_later(out.records, kept, later, pairs, scrub, lambda raw: _pair(raw, max_depth, scrub, budget))
    return out


# --------------------------------------------------------------------------- bodies


def parse_protobuf(body: bytes, message: M) -> M:
    try:
        message.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:  # RecursionError is a RuntimeError
        raise MalformedRequest(f"not a valid {type(message).__name__} protobuf: {exc}") from None
    return message


# JSON keys holding trace/span ids (camelCase as OTLP/JSON writes them, snake_case as
# protobuf JSON also accepts).
_ID_KEYS = frozenset(("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"))
_HEX_LENGTHS = frozenset((16, 32))
_BAD_ID = "AAAA"


def _hex_ids_to_base64(node: Any) -> None:
    """Rewrite OTLP/JSON's hex ids as the base64 protobuf JSON expects, in place.

    A hex id is 16 or 32 characters; base64 of the same bytes is 12 or 24, so a value
    that is already base64 (a client speaking plain protobuf JSON) is left alone.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                if len(value) in _HEX_LENGTHS:
                    try:
                        node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                    except ValueError:
                        # Not hex: 3 bytes, an id of the wrong length, so the adapter rejects
                        # this record alone instead of the whole request.
                        node[key] = _BAD_ID
            elif isinstance(value, dict | list):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _hex_ids_to_base64(item)


def parse_json(body: bytes, message: M, kind: str | None = None) -> tuple[M, list[str]]:
    """An OTLP/JSON body into ``message``; unknown fields are ignored, as the spec asks.

    With ``kind`` ("logs"/"traces"), a request that protobuf refuses as a whole is read record
    by record (:func:`~membrane_otel.bridge._salvage.salvage_json`): the readable records come
    back in a new message, with one reason per record left out.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequest(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedRequest("JSON nested too deep") from None
    if not isinstance(data, dict):
        raise MalformedRequest("an OTLP/JSON body must be a JSON object")
    try:
        _hex_ids_to_base64(data)
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, ValueError, TypeError, RecursionError) as exc:
        whole = MalformedRequest(f"not a valid {type(message).__name__}: {str(exc)[:500]}")
        if kind is None:
            raise whole from None
        try:
            salvaged, problems = salvage_json(data, kind)
        except (ValueError, RecursionError):
            raise whole from None
        if not problems:  # the fault is in the request's own shape, not in a record
            raise whole from None
        return cast(M, salvaged), problems  # a new message of the same type
    return message, []


def _salvaged(body: bytes, kind: str, exc: MalformedRequest, read: Callable[[Any], Decoded]) -> Decoded:
    try:
        req, problems = salvage(body, kind)
    except ValueError:
        raise exc from None  # not even the framing holds: the whole body is malformed
    return _with_problems(read(req), problems)


def _with_problems(out: Decoded, problems: list[str]) -> Decoded:
    for problem in problems:
        out.reject(problem)
    return out


def decode_traces(
    body: bytes, *, json_body: bool, max_depth: int = DEFAULT_DEPTH, max_values: int = DEFAULT_VALUES
) -> Decoded:
    req = ExportTraceServiceRequest()
    if json_body:
        req, problems = parse_json(body, req, "traces")
        return _with_problems(spans_from_request(req, max_depth, max_values), problems)
    try:
        parse_protobuf(body, req)
    except MalformedRequest as exc:
        # One unreadable span (invalid UTF-8, nested past protobuf's recursion limit) must
        # not cost its neighbours: split the request by its framing and parse span by span.
        return _salvaged(body, "traces", exc, lambda r: spans_from_request(r, max_depth, max_values))
    return spans_from_request(req, max_depth, max_values)


def decode_logs(
    body: bytes,
    *,
    json_body: bool,
    max_depth: int = DEFAULT_DEPTH,
    scrub: Scrub | None = None,
    max_values: int = DEFAULT_VALUES,
) -> Decoded:
    """A logs request's records; with ``scrub``, protobuf records come back redacted by it
    (``Decoded.scrub`` says so). Past ``max_values`` attribute values: :class:`TooManyValues`."""
    req = ExportLogsServiceRequest()
    if json_body:
        req, problems = parse_json(body, req, "logs")
        return _with_problems(logs_from_request(req, max_depth, max_values), problems)
    flat = logs_from_flat(body, max_depth, scrub, max_values)
    if flat is not None:
        return flat
    try:
        parse_protobuf(body, req)
    except MalformedRequest as exc:
        return _salvaged(body, "logs", exc, lambda r: logs_from_request(r, max_depth, max_values))
    return logs_from_request(req, max_depth, max_values)
