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

grpc-core enforces the rest before our code runs: the message size (after decompression),
the RPCs held at once (``max_concurrent_rpcs × max_body`` of messages), and the connections:
at most ``max_connections`` open (``grpc.max_allowed_incoming_connections``; past it a new
connection is closed on accept: grpc-core cannot evict an idle one as the HTTP server does,
so a flood refuses newcomers, never the clients already connected), a new connection must send
its HTTP/2 preface and SETTINGS within ``first_request_s`` (``grpc.server_handshake_timeout_ms``),
and one with no RPC for ``first_request_s`` is sent GOAWAY and closed
(``grpc.max_connection_idle_ms``; a Collector reconnects on its next batch).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints

from membrane_otel._internal import counters
from membrane_otel._internal.auth import bearer_ok
from membrane_otel.bridge._ingest import Ingest

__all__ = ["GrpcServer", "make_grpc_server"]

_log = logging.getLogger("membrane_otel.bridge.grpc")

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


def _exporter(ingest: Ingest, kind: str) -> Any:
    trusted = bool(ingest.token)  # only an authenticated call reaches here (_Otlp.service)

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        answer = ingest.export(kind, request, encoding=None, as_json=False, trusted=trusted)
        counters.incr(f"bridge_grpc_{answer.status}")
        if answer.response is None:
            context.abort(_CODES.get(answer.status, grpc.StatusCode.INTERNAL), answer.message)
            return b""  # abort raises; this line is never reached
        data: bytes = answer.response.SerializeToString()
        return data

    return export


def _unauthenticated(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    # Never iterates ``requests``: no message is asked of grpc-core, so none is read past
    # the stream's flow-control window, and the abort resets the stream.
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
    return b""  # abort raises; this line is never reached


_REFUSE = grpc.stream_unary_rpc_method_handler(_unauthenticated)


class _Otlp(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpcio is untyped
    """The two Export methods; a call without the token is refused from its metadata alone."""

    def __init__(self, ingest: Ingest) -> None:
        self._token = ingest.token
        self._handlers = {
            f"/{service}/Export": grpc.unary_unary_rpc_method_handler(
                _exporter(ingest, kind), request_deserializer=None, response_serializer=None
            )
            for service, kind in _SERVICES.items()
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._handlers.get(handler_call_details.method)
        if handler is None or not self._token:
            return handler  # an unknown method: grpcio answers UNIMPLEMENTED, reading nothing
        # Exactly one authorization value (a second one is as suspect as a wrong one).
        values = [v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"]
        if len(values) == 1 and isinstance(values[0], str) and bearer_ok(values[0], self._token):
            return handler
        counters.incr("bridge_grpc_401")
        return _REFUSE


def make_grpc_server(ingest: Ingest, host: str = "127.0.0.1", port: int = 8011) -> GrpcServer:
    """Start serving OTLP/gRPC on ``host:port`` (``port=0`` picks a free one)."""
    limits = ingest.limits
    # RPCs held at once (each may hold max_body bytes): the decode slots, and as many again
    # waiting for one. Past it grpc-core answers RESOURCE_EXHAUSTED itself.
    concurrent = limits.max_inflight * 2 + 2
    deadline_ms = max(1, int(limits.first_request_s * 1000))
    server = grpc.server(
        ThreadPoolExecutor(concurrent, thread_name_prefix="bridge-grpc"),
        handlers=[_Otlp(ingest)],
        maximum_concurrent_rpcs=concurrent,
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
