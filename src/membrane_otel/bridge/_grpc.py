"""The bridge's OTLP/gRPC face (``grpcio``): ``LogsService/Export`` and ``TraceService/Export``.

The methods are registered with no request deserializer, so the handler gets the request's
bytes and hands them to the same :class:`~membrane_otel.bridge._ingest.Ingest` as the HTTP
server: one core, one set of limits, one set of answers, mapped to gRPC codes as the OTLP
spec reads them (UNAVAILABLE is retried, INVALID_ARGUMENT and RESOURCE_EXHAUSTED without
RetryInfo are not). grpc-core itself enforces the message size (after decompression) and
the number of RPCs held at once, so memory is bounded before our code runs:
``max_concurrent_rpcs × max_body``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints

from membrane_otel._internal import counters
from membrane_otel.bridge._ingest import Ingest, bearer_ok

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
    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        token = ingest.token
        if token:
            values = [v for k, v in context.invocation_metadata() if k == "authorization"]
            if len(values) != 1 or not bearer_ok(str(values[0]), token):
                counters.incr("bridge_grpc_401")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        answer = ingest.export(kind, request, encoding=None, as_json=False, trusted=bool(token))
        counters.incr(f"bridge_grpc_{answer.status}")
        if answer.response is None:
            context.abort(_CODES.get(answer.status, grpc.StatusCode.INTERNAL), answer.message)
            return b""  # abort raises; this line is never reached
        data: bytes = answer.response.SerializeToString()
        return data

    return export


def make_grpc_server(ingest: Ingest, host: str = "127.0.0.1", port: int = 8011) -> GrpcServer:
    """Start serving OTLP/gRPC on ``host:port`` (``port=0`` picks a free one)."""
    limits = ingest.limits
    # RPCs held at once (each may hold max_body bytes): the decode slots, and as many again
    # waiting for one. Past it grpc-core answers RESOURCE_EXHAUSTED itself.
    concurrent = limits.max_inflight * 2 + 2
    server = grpc.server(
        ThreadPoolExecutor(concurrent, thread_name_prefix="bridge-grpc"),
        maximum_concurrent_rpcs=concurrent,
        options=[
            ("grpc.so_reuseport", 0),  # a second bridge on the same port must fail, not share it
            ("grpc.max_receive_message_length", limits.max_body),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ("grpc.max_concurrent_streams", concurrent),
            ("grpc.max_connection_idle_ms", 5 * 60 * 1000),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    handlers = [
        grpc.method_handlers_generic_handler(
            service,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    _exporter(ingest, kind), request_deserializer=None, response_serializer=None
                )
            },
        )
        for service, kind in _SERVICES.items()
    ]
    server.add_generic_rpc_handlers(handlers)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} for OTLP/gRPC")
    server.start()
    return GrpcServer(server, bound)
