"""One core behind both servers: a received body → limits → decode → the bridge → an answer.

The HTTP server (:mod:`._server`) and the gRPC server (:mod:`._grpc`) differ only in how a
body arrives and how an :class:`Answer` is written back; everything that decides the
answer is here, so both speak the same limits and statuses:

* 200 with an ``Export*ServiceResponse``, whose ``partial_success`` counts and names the
  records rejected alone (bad ids, invalid UTF-8, nested past ``max_depth``, …);
* 400 / INVALID_ARGUMENT: the body is not OTLP at all; 413 / RESOURCE_EXHAUSTED: over a
  size, count or nesting limit (neither is retried: the batch can never succeed);
* 503 / UNAVAILABLE + Retry-After: the ledger cannot be written, the bus is behind and the
  spool full, or no decode slot came free in time (retried: the Collector keeps the batch);
* 500 / INTERNAL only for the bridge's own faults.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from google.rpc import code_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from membrane_otel._internal import counters
from membrane_otel._internal.auth import bearer_ok
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.bridge._body import BadBody, BodyTooLarge, UnsupportedEncoding, decode_content
from membrane_otel.bridge._core import Bridge, BusBehind, LedgerUnavailable
from membrane_otel.bridge._limits import (
    Limits,
    TooMany,
    TooManyValues,
    count_records,
    json_objects_over,
    json_values_over,
)
from membrane_otel.bridge._otlp import MalformedRequest, decode_logs, decode_traces

__all__ = ["Answer", "Ingest", "bearer_ok"]

_log = RateLimitedLogger(logging.getLogger("membrane_otel.bridge"))


@dataclass(slots=True)
class Answer:
    status: int  # HTTP status; the gRPC server maps it to a code
    code: int = code_pb2.OK  # google.rpc code, for error bodies and gRPC
    message: str = ""
    response: Message | None = None  # an OTLP Export*ServiceResponse on success
    json_body: Any = None  # /ingest's JSON answer
    headers: dict[str, str] = field(default_factory=dict)


class Ingest:
    """Decode slots, limits and statuses around one :class:`~membrane_otel.bridge._core.Bridge`."""

    def __init__(self, bridge: Bridge, limits: Limits, token: str | None = None) -> None:
        self.bridge = bridge
        self.limits = limits
        self.token = token
        self._slots = threading.BoundedSemaphore(limits.max_inflight)
        self._inflight_lock = threading.Lock()
        self.inflight = 0

    def unavailable(self, why: str) -> Answer:
        return Answer(503, code_pb2.UNAVAILABLE, why, headers={"Retry-After": str(self.limits.retry_after_s)})

    def export(self, kind: str, raw: bytes, *, encoding: str | None, as_json: bool, trusted: bool) -> Answer:
        """One OTLP export request (``kind`` "logs" or "traces"); never raises."""
        try:
            answer = self._export(kind, raw, encoding, as_json, trusted)
        except Exception as exc:  # a bug must cost one request, not the server
            _log.error("bridge: unexpected error on /v1/%s: %r", kind, exc)
            answer = Answer(500, code_pb2.INTERNAL, "internal error")
        counters.incr(f"bridge_http_{answer.status}")
        return answer

    def _export(self, kind: str, raw: bytes, encoding: str | None, as_json: bool, trusted: bool) -> Answer:
        limits = self.limits
        if not self._slots.acquire(timeout=limits.slot_wait_s):
            return self.unavailable("too many requests in flight")
        with self._inflight_lock:
            self.inflight += 1
        try:
            try:
                body = decode_content(raw, encoding, limits.max_body)
                if as_json:
                    if json_objects_over(body, limits.max_json_objects):
                        raise TooMany(f"OTLP/JSON body holds more than {limits.max_json_objects} objects")
                else:
                    count_records(body, limits.max_records)
                depth, values = limits.max_depth, limits.max_values
                if kind == "traces":
                    decoded = decode_traces(body, json_body=as_json, max_depth=depth, max_values=values)
                else:  # redacted as it is read: each distinct attribute once
                    scrub = self.bridge.scrubber()
                    decoded = decode_logs(
                        body, json_body=as_json, max_depth=depth, scrub=scrub, max_values=values
                    )
                del body, raw
                if len(decoded.records) + decoded.rejected > limits.max_records:
                    raise TooMany(f"request holds more than {limits.max_records} records (max_records)")
            except (BodyTooLarge, TooMany, TooManyValues) as exc:
                return Answer(413, code_pb2.RESOURCE_EXHAUSTED, str(exc))
            except UnsupportedEncoding as exc:
                return Answer(415, code_pb2.INVALID_ARGUMENT, str(exc))
            except (BadBody, MalformedRequest) as exc:
                return Answer(400, code_pb2.INVALID_ARGUMENT, str(exc))
            try:
                accept = self.bridge.accept_spans if kind == "traces" else self.bridge.accept_logs
                out = accept(decoded, trusted=trusted)
            except (LedgerUnavailable, BusBehind) as exc:
                return self.unavailable(str(exc))
        finally:
            with self._inflight_lock:
                self.inflight -= 1
            self._slots.release()
        response: Message
        if kind == "traces":
            response = ExportTraceServiceResponse()
            if out.rejected or out.envelope_errors:
                response.partial_success.rejected_spans = out.rejected
                response.partial_success.error_message = out.message
        else:
            response = ExportLogsServiceResponse()
            if out.rejected or out.envelope_errors:
                response.partial_success.rejected_log_records = out.rejected
                response.partial_success.error_message = out.message
        return Answer(200, response=response)

    def ingest(self, raw: bytes, *, encoding: str | None) -> Answer:
        """Legacy ``POST /ingest``: a JSON array of envelopes; never raises."""
        try:
            answer = self._ingest(raw, encoding)
        except Exception as exc:
            _log.error("bridge: unexpected error on /ingest: %r", exc)
            answer = Answer(500, code_pb2.INTERNAL, "internal error")
        counters.incr(f"bridge_http_{answer.status}")
        return answer

    def _ingest(self, raw: bytes, encoding: str | None) -> Answer:
        limits = self.limits
        if not self._slots.acquire(timeout=limits.slot_wait_s):
            return self.unavailable("too many requests in flight")
        try:
            try:
                body = decode_content(raw, encoding, limits.max_body)
                if json_objects_over(body, limits.max_json_objects):
                    raise TooMany(f"body holds more than {limits.max_json_objects} JSON objects")
                if json_values_over(body, limits.max_values):
                    raise TooManyValues(f"body holds more than {limits.max_values} JSON values (max_values)")
                data = json.loads(body) if body.strip() else None
            except (BodyTooLarge, TooMany, TooManyValues) as exc:
                return Answer(413, code_pb2.RESOURCE_EXHAUSTED, str(exc))
            except UnsupportedEncoding as exc:
                return Answer(415, code_pb2.INVALID_ARGUMENT, str(exc))
            except BadBody as exc:
                return Answer(400, code_pb2.INVALID_ARGUMENT, str(exc))
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                return Answer(400, code_pb2.INVALID_ARGUMENT, f"not valid JSON: {str(exc)[:200]}")
            items = data if isinstance(data, list) else [data] if isinstance(data, dict) else None
            if items is None:
                return Answer(
                    400, code_pb2.INVALID_ARGUMENT, "expected a JSON array of membrane.inject envelopes"
                )
            if len(items) > limits.max_records:
                return Answer(413, code_pb2.RESOURCE_EXHAUSTED, f"more than {limits.max_records} envelopes")
            try:
                out = self.bridge.accept_envelopes(items)
            except (LedgerUnavailable, BusBehind) as exc:
                return self.unavailable(str(exc))
        finally:
            self._slots.release()
        accepted = out.received - out.rejected
        status = 400 if out.received and not accepted else 200
        return Answer(
            status,
            code_pb2.OK if status == 200 else code_pb2.INVALID_ARGUMENT,
            json_body={
                "accepted": accepted,
                "written": out.written,
                "duplicates": out.duplicates,
                "rejected": out.rejected,
                "errors": out.errors,
            },
        )
