"""The bridge's HTTP face: OTLP/HTTP ``/v1/traces`` and ``/v1/logs``, legacy ``/ingest``, probes.

Standard library only (``http.server.ThreadingHTTPServer``): the Collector in front of the
bridge batches and retries, so the bridge needs correctness more than a fast event loop,
and one dependency less is one thing less to break. Answers follow the OTLP/HTTP spec:

* 200 with an ``Export*ServiceResponse`` in the request's encoding, carrying
  ``partial_success`` (rejected count and a message) when some records could not be read;
* 400 malformed body, 401 missing/wrong bearer token, 404 unknown path, 413 body over the
  cap (raw or decompressed), 415 unsupported Content-Type / Content-Encoding, each with a
  ``google.rpc.Status`` body: not retryable, the Collector drops the batch;
* 503 with ``Retry-After`` when the ledger cannot be written, or too many requests are in
  flight: retryable, the Collector keeps the batch in its queue and tries again.

Nothing a client sends stops the server; a bad request costs that request only.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.bridge._body import BadBody, BodyTooLarge, UnsupportedEncoding, decode_content, read_raw
from membrane_otel.bridge._core import Bridge, LedgerUnavailable
from membrane_otel.bridge._otlp import MalformedRequest, decode_logs, decode_traces

__all__ = ["DEFAULT_MAX_BODY", "BridgeHTTPServer", "ServerOptions", "make_server"]

# A Collector batch of 4096 records with stack traces inflates to ~10-30 MiB; a 413 is not
# retried (the batch would be lost), so the cap sits above that. Memory is bounded by
# max_inflight × this (plus the decoded records). Collectors whose batches could be larger
# should bound them (batch send_batch_max_size, or a bytes sizer on the sending queue).
DEFAULT_MAX_BODY = 32 * 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# How much of an unwanted body we read and discard so the connection can stay open.
_DRAIN_LIMIT = 4 * 1024 * 1024
_HANDSHAKE_TIMEOUT = 10.0

_log = logging.getLogger("membrane_otel.bridge.http")
_problems = RateLimitedLogger(_log)


@dataclass(frozen=True, slots=True)
class ServerOptions:
    token: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    retry_after_s: int = 5
    # Requests decoded at once. More would not be faster (decoding holds the GIL) and each
    # may hold max_body bytes, so a few is the right number; the rest wait, then get 503.
    max_inflight: int = 4
    socket_timeout_s: float = 30.0


class _Slots:
    """At most ``n`` requests decoding at once; ``in_use`` says how many are."""

    def __init__(self, n: int) -> None:
        self._sem = threading.BoundedSemaphore(n)
        self._lock = threading.Lock()
        self.in_use = 0

    def acquire(self, timeout: float) -> bool:
        if not self._sem.acquire(timeout=timeout):
            return False
        with self._lock:
            self.in_use += 1
        return True

    def release(self) -> None:
        with self._lock:
            self.in_use -= 1
        self._sem.release()


class _Reply(Exception):
    """Answer the request now with an error status (raised from inside a handler)."""

    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the Collector reuses its connections
    server_version = "membrane-otel-bridge"
    server: BridgeHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.options.socket_timeout_s)  # a stalled client frees its thread

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)

    # -- GET -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/ready":
            ready, detail = self.server.bridge.readiness()
            self._send_json(200 if ready else 503, detail)
        else:
            self._send_json(404, {"error": f"no such path {path!r}"})

    # -- POST ----------------------------------------------------------------------------

    def do_POST(self) -> None:
        self._body_read = False  # one handler serves every request of a keep-alive connection
        path = urlsplit(self.path).path
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        as_json = ctype != PROTOBUF
        try:
            kind = {"/v1/traces": "traces", "/v1/logs": "logs", "/ingest": "ingest"}.get(path)
            if kind is None:
                raise _Reply(404, code_pb2.NOT_FOUND, f"no such path {path!r}")
            if not self._authorized():
                raise _Reply(
                    401,
                    code_pb2.UNAUTHENTICATED,
                    "missing or wrong bearer token",
                    {"WWW-Authenticate": 'Bearer realm="membrane-otel"'},
                )
            if kind == "ingest" and ctype not in (JSON, "", "text/plain"):
                raise _Reply(415, code_pb2.INVALID_ARGUMENT, f"/ingest takes {JSON}, not {ctype!r}")
            if kind != "ingest" and ctype not in (PROTOBUF, JSON):
                raise _Reply(
                    415, code_pb2.INVALID_ARGUMENT, f"Content-Type {ctype!r}: use {PROTOBUF} or {JSON}"
                )
            slots = self.server.inflight
            if not slots.acquire(timeout=self.server.options.socket_timeout_s / 2):
                raise _Reply(
                    503,
                    code_pb2.UNAVAILABLE,
                    "too many requests in flight",
                    {"Retry-After": str(self.server.options.retry_after_s)},
                )
            try:
                body = self._read_body()
                if kind == "ingest":
                    self._ingest(body)
                else:
                    self._otlp(kind, body, as_json)
            finally:
                slots.release()
        except _Reply as reply:
            counters.incr(f"bridge_http_{reply.status}")
            self._discard_body()
            self._send_status(reply, as_json)
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client went away or stalled; nobody to answer
        except Exception as exc:  # a bug must cost one request, not the server
            counters.incr("bridge_http_500")
            _problems.error("bridge: unexpected error on %s: %r", path, exc)
            self._discard_body()
            self._send_status(_Reply(500, code_pb2.INTERNAL, "internal error"), as_json)

    def _authorized(self) -> bool:
        token = self.server.options.token
        if not token:
            return True
        scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            credential = ""
        # Constant time: the comparison must not tell an attacker how much of a guess was right.
        return hmac.compare_digest(credential.strip().encode(), token.encode())

    def _read_body(self) -> bytes:
        cap = self.server.options.max_body
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        try:
            raw = read_raw(self.rfile, self.headers.get("Content-Length"), chunked, cap)
            self._body_read = True
            return decode_content(raw, self.headers.get("Content-Encoding"), cap)
        except BodyTooLarge as exc:
            if chunked:  # part of it is read; the rest cannot be skipped reliably
                self._body_read = True
                self.close_connection = True
            raise _Reply(413, code_pb2.RESOURCE_EXHAUSTED, str(exc)) from None
        except UnsupportedEncoding as exc:
            raise _Reply(415, code_pb2.INVALID_ARGUMENT, str(exc)) from None
        except BadBody as exc:
            self._body_read = True  # whatever it was, it is not a body we can skip past reliably
            self.close_connection = True
            raise _Reply(400, code_pb2.INVALID_ARGUMENT, str(exc)) from None

    def _otlp(self, kind: str, body: bytes, as_json: bool) -> None:
        bridge = self.server.bridge
        try:
            decoded = (
                decode_traces(body, json_body=as_json)
                if kind == "traces"
                else decode_logs(body, json_body=as_json)
            )
        except MalformedRequest as exc:
            raise _Reply(400, code_pb2.INVALID_ARGUMENT, str(exc)) from None
        try:
            out = bridge.accept_spans(decoded) if kind == "traces" else bridge.accept_logs(decoded)
        except LedgerUnavailable as exc:
            raise _Reply(
                503, code_pb2.UNAVAILABLE, str(exc), {"Retry-After": str(self.server.options.retry_after_s)}
            ) from None
        response: Message
        if kind == "traces":
            response = ExportTraceServiceResponse()
            if out.rejected:
                response.partial_success.rejected_spans = out.rejected
                response.partial_success.error_message = out.message
        else:
            response = ExportLogsServiceResponse()
            if out.rejected:
                response.partial_success.rejected_log_records = out.rejected
                response.partial_success.error_message = out.message
        counters.incr("bridge_http_200")
        self._send_message(200, response, as_json)

    def _ingest(self, body: bytes) -> None:
        try:
            data = json.loads(body) if body.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Reply(400, code_pb2.INVALID_ARGUMENT, f"not valid JSON: {exc}") from None
        items = data if isinstance(data, list) else [data] if isinstance(data, dict) else None
        if items is None:
            raise _Reply(400, code_pb2.INVALID_ARGUMENT, "expected a JSON array of membrane.inject envelopes")
        try:
            out = self.server.bridge.accept_envelopes(items)
        except LedgerUnavailable as exc:
            raise _Reply(
                503, code_pb2.UNAVAILABLE, str(exc), {"Retry-After": str(self.server.options.retry_after_s)}
            ) from None
        accepted = out.received - out.rejected
        status = 400 if out.received and not accepted else 200
        counters.incr(f"bridge_http_{status}")
        self._send_json(
            status,
            {
                "accepted": accepted,
                "written": out.written,
                "duplicates": accepted - out.written,
                "rejected": out.rejected,
                "errors": out.errors,
            },
        )

    # -- answers -------------------------------------------------------------------------

    def _discard_body(self) -> None:
        """Read and drop an unread body (bounded), so a keep-alive connection stays usable."""
        if getattr(self, "_body_read", False) or self.close_connection:
            return
        self._body_read = True
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        try:
            read_raw(self.rfile, self.headers.get("Content-Length"), chunked, _DRAIN_LIMIT)
        except (BadBody, BodyTooLarge, OSError):
            self.close_connection = True  # too much, or broken: answer, then hang up

    def _send_status(self, reply: _Reply, as_json: bool) -> None:
        status = status_pb2.Status(code=reply.code, message=reply.message)
        self._send_message(reply.status, status, as_json, reply.headers)

    def _send_message(
        self, status: int, message: Message, as_json: bool, headers: dict[str, str] | None = None
    ) -> None:
        if as_json:
            body = json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()
            self._send(status, body, JSON, headers)
        else:
            self._send(status, message.SerializeToString(), PROTOBUF, headers)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":"), default=str).encode(), JSON)

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


class BridgeHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server around one :class:`~membrane_otel.bridge._core.Bridge`."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        bridge: Bridge,
        options: ServerOptions,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.bridge = bridge
        self.options = options
        self.ssl_context = ssl_context
        self.inflight = _Slots(options.max_inflight)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host!s}:{port}"

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs here, on the connection's own thread, so a slow or bogus
        # client cannot hold up the accept loop.
        try:
            request.settimeout(_HANDSHAKE_TIMEOUT)
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            counters.incr("bridge_tls_failed")
            _log.debug("TLS handshake with %s failed: %r", client_address, exc)
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        _problems.error("bridge: connection from %s failed", client_address)


def make_server(
    bridge: Bridge,
    host: str = "127.0.0.1",
    port: int = 8010,
    options: ServerOptions | None = None,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> BridgeHTTPServer:
    """A bound (not yet serving) bridge server; ``port=0`` picks a free port."""
    context = tls_context(certfile, keyfile) if certfile else None
    return BridgeHTTPServer((host, port), bridge, options or ServerOptions(), context)


def tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server TLS context; raises ``OSError`` (``ssl.SSLError``) if the files cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


def serve_in_thread(server: BridgeHTTPServer) -> Callable[[], None]:
    """Serve on a daemon thread; returns a function that stops it (tests, embedding)."""
    thread = threading.Thread(target=server.serve_forever, name="membrane-bridge", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(10)

    return stop
