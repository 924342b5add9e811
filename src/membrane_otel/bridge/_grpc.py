"""The bridge's OTLP/gRPC face (``grpcio``): ``LogsService/Export`` and ``TraceService/Export``.

The methods are registered with no request deserializer, so the handler gets the request's
bytes and hands them to the same :class:`~membrane_otel.bridge._ingest.Ingest` as the HTTP
server: one core, one set of limits, one set of answers, mapped to gRPC codes as the OTLP
spec reads them (UNAVAILABLE is retried, INVALID_ARGUMENT and RESOURCE_EXHAUSTED without
RetryInfo are not).

The token is checked before any body byte is read. grpcio asks a generic handler for the
method's handler with only the call's metadata in hand (:class:`_Otlp`.service, on the
server's own thread); a unary-unary handler then makes grpcio receive the whole message
before its behaviour runs, so a call without the token gets a *stream*-unary handler whose
behaviour aborts with UNAUTHENTICATED without ever asking for a message. grpc-core then
holds at most the stream's flow-control window of it, 64 KiB with BDP probing off
(``tests/test_bridge_grpc_hostile.py``
streams 12 MiB with a wrong token and measures the process).

Calls are admitted from their metadata too (:class:`_Admission`): a pool of
``2 × max_inflight + 2`` workers reads and handles one message each; up to four times as many
calls wait for a worker, holding no more than their stream's window; a call past those, or one
that waited longer than the slot wait, is refused UNAVAILABLE unread. grpcio's own limit on
concurrent RPCs is off: it answers RESOURCE_EXHAUSTED with no RetryInfo, which a Collector
does not retry — a busy bridge would have dropped batches. A message not received within the
read deadline loses its call, so a slow sender holds a worker no longer than that.

grpc-core enforces the rest before our code runs: the message size (after decompression) and
the connections:
at most ``max_connections`` open (``grpc.max_allowed_incoming_connections``; past it a new
connection is closed on accept: grpc-core cannot evict an idle one as the HTTP server does,
so a flood refuses newcomers, never the clients already connected), a new connection must send
its HTTP/2 preface and SETTINGS within ``first_request_s`` (``grpc.server_handshake_timeout_ms``),
and one with no RPC for ``first_request_s`` is sent GOAWAY and closed
(``grpc.max_connection_idle_ms``; a Collector reconnects on its next batch).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints

from membrane_otel._internal import counters
from membrane_otel._internal.auth import bearer_ok
from membrane_otel.bridge._ingest import Ingest

__all__ = ["GrpcServer", "make_grpc_server"]

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
_SERVICES = {
    "opentelemetry.proto.collector.logs.v1.LogsService": "logs",
    "opentelemetry.proto.collector.trace.v1.TraceService": "traces",
}


class GrpcServer:
    """A started gRPC server and the port it listens on."""

    def __init__(self, server: grpc.Server, port: int) -> None:
        self.server = server
        self.port = port

    def stop(self, grace_s: float = 2.0) -> None:
        self.server.stop(grace_s).wait(grace_s + 1)


class _Admission:
    """Calls let in to be handled (running, or waiting for a worker), counted from their metadata.

    Every Export is registered *stream*-unary, so grpcio runs its behaviour even for a call
    cancelled while it waited, and the count always comes back down (a unary handler's
    behaviour is skipped then, and a count kept around it would leak).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.held >= self.limit:
                return False
            self.held += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.held -= 1


def _read_one(requests: Iterator[bytes], context: grpc.ServicerContext, deadline_s: float) -> bytes | None:
    """The call's one request message, or None (cancelled, or none sent). A client that has
    not sent its message within ``deadline_s`` loses the call, so it holds no worker for longer."""
    late = threading.Event()

    def too_late() -> None:
        late.set()  # before the cancel: the reader wakes on the cancel and must see why
        context.cancel()

    timer = threading.Timer(deadline_s, too_late)
    timer.daemon = True
    timer.start()
    try:
        return next(requests, None)
    except grpc.RpcError:  # cancelled: by the client, or by the timer
        return None
    finally:
        timer.cancel()
        if late.is_set():
            counters.incr("bridge_grpc_read_deadline")


def _exporter(ingest: Ingest, kind: str, admission: _Admission) -> Any:
    trusted = bool(ingest.token)  # only an authenticated call reaches here (_Otlp.service)
    limits = ingest.limits

    def export(requests: Iterator[bytes], context: grpc.ServicerContext, admitted_at: float) -> bytes:
        try:
            if time.monotonic() - admitted_at > limits.slot_wait_s:
                # Waited too long for a worker: retried by the client, its message never read.
                counters.incr("bridge_grpc_503")
                context.abort(grpc.StatusCode.UNAVAILABLE, "too many requests in flight")
            request = _read_one(requests, context, limits.read_deadline_s)
            if request is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Export takes one request message")
                return b""  # abort raises (or the call is gone); never handled
            answer = ingest.export(kind, request, encoding=None, as_json=False, trusted=trusted)
            counters.incr(f"bridge_grpc_{answer.status}")
            if answer.response is None:
                context.abort(_CODES.get(answer.status, grpc.StatusCode.INTERNAL), answer.message)
                return b""  # abort raises; this line is never reached
            data: bytes = answer.response.SerializeToString()
            return data
        finally:
            admission.give()

    return export


def _refusal(code: grpc.StatusCode, details: str) -> Any:
    def refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        # Never iterates ``requests``: no message is asked of grpc-core, so none is read past
        # the stream's flow-control window, and the abort resets the stream.
        context.abort(code, details)
        return b""  # abort raises; this line is never reached

    return grpc.stream_unary_rpc_method_handler(refuse)


_REFUSE = _refusal(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
# UNAVAILABLE, not grpcio's own RESOURCE_EXHAUSTED past maximum_concurrent_rpcs: the Collector
# retries the first and drops the batch on the second (no RetryInfo).
_BUSY = _refusal(grpc.StatusCode.UNAVAILABLE, "too many requests in flight")


class _Otlp(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpcio is untyped
    """The two Export methods; a call without the token, or past the calls admitted, is
    refused from its metadata alone."""

    def __init__(self, ingest: Ingest, admission: _Admission) -> None:
        self._token = ingest.token
        self._admission = admission
        self._behaviours = {
            f"/{service}/Export": _exporter(ingest, kind, admission) for service, kind in _SERVICES.items()
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        behaviour = self._behaviours.get(handler_call_details.method)
        if behaviour is None:
            return None  # an unknown method: grpcio answers UNIMPLEMENTED, reading nothing
        if self._token:
            # Exactly one authorization value (a second one is as suspect as a wrong one).
            values = [v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"]
            if not (len(values) == 1 and isinstance(values[0], str) and bearer_ok(values[0], self._token)):
                counters.incr("bridge_grpc_401")
                return _REFUSE
        if not self._admission.take():
            counters.incr("bridge_grpc_503")
            return _BUSY
        return grpc.stream_unary_rpc_method_handler(
            functools.partial(behaviour, admitted_at=time.monotonic())
        )


def make_grpc_server(ingest: Ingest, host: str = "127.0.0.1", port: int = 8011) -> GrpcServer:
    """Start serving OTLP/gRPC on ``host:port`` (``port=0`` picks a free one)."""
    limits = ingest.limits
    # Workers, each reading one message (≤ max_body) and handling it: the decode slots, and as
    # many again waiting for one. Calls admitted beyond them wait for a worker holding no more
    # than their stream's window (64 KiB); past 4× that, a call is refused UNAVAILABLE at once.
    concurrent = limits.max_inflight * 2 + 2
    deadline_ms = max(1, int(limits.first_request_s * 1000))
    server = grpc.server(
        ThreadPoolExecutor(concurrent, thread_name_prefix="bridge-grpc"),
        handlers=[_Otlp(ingest, _Admission(4 * concurrent))],
        maximum_concurrent_rpcs=None,  # admission is ours: grpcio's limit answers RESOURCE_EXHAUSTED
        options=[
            ("grpc.so_reuseport", 0),  # a second bridge on the same port must fail, not share it
            ("grpc.max_receive_message_length", limits.max_body),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.max_concurrent_streams", concurrent),
            # Open connections, counted from accept (handshaking ones included); past it a new
            # one is closed at once.
            ("grpc.max_allowed_incoming_connections", limits.max_connections),
            # The preface and SETTINGS must be in by then: a raw socket that sends nothing is closed.
            ("grpc.server_handshake_timeout_ms", deadline_ms),
            # No RPC for that long: GOAWAY and close (a preface sent, then silence).
            ("grpc.max_connection_idle_ms", deadline_ms),
            ("grpc.http2.max_pings_without_data", 0),
            # No BDP probing: with it grpc-core opens every stream and connection to a 4 MiB
            # flow-control window from the first SETTINGS, which a refused call could fill
            # before its abort lands; without it the window is 64 KiB, and a message being
            # read still gets the window it needs (no throughput lost on this machine:
            # 12 MiB Exports at ~500 MiB/s either way).
            ("grpc.http2.bdp_probe", 0),
        ],
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} for OTLP/gRPC")
    server.start()
    return GrpcServer(server, bound)
