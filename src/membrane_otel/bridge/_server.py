"""The bridge's HTTP face on aiohttp: OTLP/HTTP ``/v1/traces`` and ``/v1/logs``, ``/ingest``, probes.

aiohttp rather than uvicorn + starlette or granian: one maintained dependency that parses
HTTP in C (llhttp: negative or overflowing chunk sizes, duplicate Content-Length and bad
framing are refused before we see a request), runs on asyncio (an idle or slow connection
costs a few KiB, not a thread), exposes the raw body stream (so sizes, the read budget and
the read deadline are ours to enforce while reading) and sets TCP_NODELAY, writing headers
and a small body in one send. Decoding runs on a small thread pool, behind the decode
slots of :class:`~membrane_otel.bridge._ingest.Ingest`, taken only once the body is in.

Order of checks on a POST, cheapest first: path (404), token (401, before any body byte is
read), Content-Type (415), announced length (413), then the body, read against the size
cap, the shared read budget (503) and the read deadline (503 too: a body that did not arrive in
time may arrive next time, and OTLP clients retry only 429/502/503/504 — a 408 loses the batch).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from membrane_otel._internal import counters
from membrane_otel.bridge._core import Bridge
from membrane_otel.bridge._ingest import Answer, Ingest, bearer_ok
from membrane_otel.bridge._limits import DEFAULT_MAX_BODY, Limits
from membrane_otel.bridge._metrics import prometheus_text

__all__ = ["DEFAULT_MAX_BODY", "BridgeHTTPServer", "ServerOptions", "make_server", "serve_in_thread"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_KINDS = {"/v1/traces": "traces", "/v1/logs": "logs", "/ingest": "ingest"}

_log = logging.getLogger("membrane_otel.bridge.http")


@dataclass(frozen=True, slots=True)
class ServerOptions(Limits):
    """The limits, plus who may send (a bearer token)."""

    token: str | None = None
    # Kept for callers of the old server: the slot wait (the read deadline is its own limit).
    socket_timeout_s: float | None = None

    @property
    def limits(self) -> Limits:
        values = {f.name: getattr(self, f.name) for f in fields(Limits)}
        if self.socket_timeout_s is not None:
            values["slot_wait_s"] = self.socket_timeout_s / 2
        return Limits(**values)


class _Budget:
    """Bytes of raw bodies held at once, across every request (``Limits.read_budget``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n


class _Refuse(asyncio.Protocol):
    """A connection over the limit: closed at once (the client retries elsewhere or later)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        counters.incr("bridge_connections_refused")
        transport.close()


class _BadFraming(Exception):
    """The body's framing broke (a chunk size that is negative, overflows or is not hex)."""


class _Handler(RequestHandler):
    """aiohttp's connection protocol, failing the body of the request in progress on bad framing.

    aiohttp queues a parse error met in a body as the connection's *next* message (a 400 to
    send once the current handler returns), so a handler already waiting on the body would
    wait until the read deadline: a late 408 for what is a malformed request. Here the error
    also fails the body read at once, and the handler answers 400 and hangs up.
    """

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        request = self._current_request
        if request is None or len(self._messages) <= queued:
            return
        message = self._messages[-1][0]
        if not isinstance(message, RawRequestMessage):  # the parser's error, not a pipelined request
            request.content.set_exception(_BadFraming(getattr(message, "message", "bad HTTP framing")))


class _Server(web.Server):
    """aiohttp's low-level server, with a cap on open connections and a first-request deadline."""

    def __init__(self, handler: Any, owner: BridgeHTTPServer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._owner = owner
        self.transports: dict[RequestHandler, asyncio.Transport] = {}
        self.busy: set[RequestHandler] = set()
        self.served: set[RequestHandler] = set()

    def __call__(self) -> Any:
        if len(self.transports) >= self._owner.limits.max_connections and not self._evict_idle():
            return _Refuse()
        return _Handler(self, loop=self._loop, **self._kwargs)

    def _evict_idle(self) -> bool:
        # The oldest connection with no request in progress makes room: closing an idle
        # keep-alive connection is always allowed, and a flood of idle sockets cannot lock
        # everyone else out.
        for handler, transport in self.transports.items():
            if handler not in self.busy:
                counters.incr("bridge_connections_evicted")
                transport.close()
                self.transports.pop(handler, None)
                return True
        return False

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.transports[handler] = transport
        self._loop.call_later(self._owner.limits.first_request_s, self._first_request_due, handler, transport)

    def _first_request_due(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        if handler in self.transports and handler not in self.served and handler not in self.busy:
            counters.incr("bridge_connections_timed_out")
            transport.close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.transports.pop(handler, None)
        self.served.discard(handler)
        self.busy.discard(handler)
        super().connection_lost(handler, exc)


class BridgeHTTPServer:
    """The bridge's HTTP server: bound on construction, serving in :meth:`serve_forever`."""

    def __init__(
        self,
        address: tuple[str, int],
        bridge: Bridge,
        options: ServerOptions,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.bridge = bridge
        self.options = options
        self.limits = options.limits
        self.ssl_context = ssl_context
        self.ingest = Ingest(bridge, self.limits, options.token)
        self._budget = _Budget(self.limits.read_budget)
        self._pool = ThreadPoolExecutor(self.limits.max_inflight + 2, thread_name_prefix="bridge-decode")
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(512)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._web: _Server | None = None
        self._stopped = threading.Event()
        self._done = threading.Event()
        self.extra_metrics: Callable[[], dict[str, int]] | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host!s}:{port}"

    # -- lifecycle -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (from another thread) or Ctrl-C."""
        try:
            asyncio.run(self._serve())
        finally:
            self._done.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        server = _Server(
            self._handle,
            self,
            access_log=None,
            keepalive_timeout=75,
            auto_decompress=False,  # we inflate ourselves, against the cap
            max_field_size=16 * 1024,
            handler_cancellation=True,
        )
        self._web = server
        srv = await self._loop.create_server(server, sock=self.socket, ssl=self.ssl_context, backlog=512)
        try:
            await self._loop.run_in_executor(None, self._stopped.wait)
        finally:
            srv.close()
            server.pre_shutdown()
            await server.shutdown(2.0)
            await srv.wait_closed()

    def shutdown(self) -> None:
        self._stopped.set()
        self._done.wait(15)

    def server_close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.socket.close()
        except OSError:
            pass

    # -- requests ------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        owner = self._web
        if owner is not None:
            owner.busy.add(request.protocol)
            owner.served.add(request.protocol)
        try:
            if request.method == "GET":
                return self._get(request.path)
            if request.method != "POST":
                return _json(405, {"error": f"method {request.method} not allowed"})
            return await self._post(request)
        finally:
            if owner is not None:
                owner.busy.discard(request.protocol)

    def _get(self, path: str) -> web.Response:
        if path == "/health":
            return _json(200, {"status": "ok"})
        if path == "/ready":
            ready, detail = self.bridge.readiness()
            detail["inflight"] = self.ingest.inflight
            return _json(200 if ready else 503, detail)
        if path == "/metrics":
            return web.Response(body=prometheus_text(self._gauges()), content_type="text/plain")
        return _json(404, {"error": f"no such path {path!r}"})

    def _gauges(self) -> dict[str, float]:
        gauges: dict[str, float] = {
            "bridge_inflight": self.ingest.inflight,
            "bridge_read_budget_used_bytes": self._budget.used,
        }
        if self.extra_metrics is not None:
            gauges.update(self.extra_metrics())
        return gauges

    async def _post(self, request: web.BaseRequest) -> web.StreamResponse:
        ctype = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        as_json = ctype != PROTOBUF
        kind = _KINDS.get(request.path)
        if kind is None:
            return _status(
                Answer(404, code_pb2.NOT_FOUND, f"no such path {request.path!r}"), as_json, close=True
            )
        authorization = request.headers.getall("Authorization", [])
        if len(authorization) > 1 or not bearer_ok(
            authorization[0] if authorization else None, self.options.token
        ):
            counters.incr("bridge_http_401")
            answer = Answer(401, code_pb2.UNAUTHENTICATED, "missing or wrong bearer token")
            answer.headers["WWW-Authenticate"] = 'Bearer realm="membrane-otel"'
            return _status(answer, as_json, close=True)
        if kind == "ingest" and ctype not in (JSON, "", "text/plain"):
            return _status(
                Answer(415, code_pb2.INVALID_ARGUMENT, f"/ingest takes {JSON}, not {ctype!r}"),
                True,
                close=True,
            )
        if kind != "ingest" and ctype not in (PROTOBUF, JSON):
            why = f"Content-Type {ctype!r}: use {PROTOBUF} or {JSON}"
            return _status(Answer(415, code_pb2.INVALID_ARGUMENT, why), as_json, close=True)
        max_body = self.limits.max_body
        if request.content_length is not None and request.content_length > max_body:
            why = f"body of {request.content_length} bytes is over the {max_body}-byte limit"
            return _status(Answer(413, code_pb2.RESOURCE_EXHAUSTED, why), as_json, close=True)
        held = 0
        try:
            parts: list[bytes] = []
            try:
                async with asyncio.timeout(self.limits.read_deadline_s):
                    while chunk := await request.content.readany():
                        if held + len(chunk) > max_body:
                            why = f"body is over the {max_body}-byte limit"
                            return _status(Answer(413, code_pb2.RESOURCE_EXHAUSTED, why), as_json, close=True)
                        if not self._budget.take(len(chunk)):
                            counters.incr("bridge_read_budget_full")
                            answer = self.ingest.unavailable("too many request bodies being read")
                            return _status(answer, as_json, close=True)
                        held += len(chunk)
                        parts.append(chunk)
            except _BadFraming as exc:
                counters.incr("bridge_http_400")
                why = f"malformed request body: {exc}"
                return _status(Answer(400, code_pb2.INVALID_ARGUMENT, why), as_json, close=True)
            except TimeoutError:
                counters.incr("bridge_read_deadline")
                why = f"body not received within {self.limits.read_deadline_s:g}s"
                return _status(self.ingest.unavailable(why), as_json, close=True)
            raw = b"".join(parts)
            del parts
            encoding = request.headers.get("Content-Encoding")
            loop = asyncio.get_running_loop()
            trusted = bool(self.options.token)
            if kind == "ingest":
                answer = await loop.run_in_executor(
                    self._pool, lambda: self.ingest.ingest(raw, encoding=encoding)
                )
            else:
                answer = await loop.run_in_executor(
                    self._pool,
                    lambda: self.ingest.export(
                        kind, raw, encoding=encoding, as_json=as_json, trusted=trusted
                    ),
                )
        finally:
            if held:
                self._budget.give(held)
        if answer.json_body is not None:
            return _json(answer.status, answer.json_body)
        if answer.response is not None:
            return _message(answer.status, answer.response, as_json, answer.headers)
        return _status(answer, as_json, close=answer.status in (400, 413))


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(obj, separators=(",", ":"), default=str).encode()
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


def _message(status: int, message: Any, as_json: bool, headers: dict[str, str] | None = None) -> web.Response:
    if as_json:
        body = json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()
        return web.Response(status=status, body=body, content_type=JSON, headers=headers)
    return web.Response(
        status=status, body=message.SerializeToString(), content_type=PROTOBUF, headers=headers
    )


def _status(answer: Answer, as_json: bool, *, close: bool = False) -> web.Response:
    response = _message(
        answer.status, status_pb2.Status(code=answer.code, message=answer.message), as_json, answer.headers
    )
    if close:
        # The rest of an unread body is not worth reading: answer, then hang up.
        response.force_close()
    return response


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
    deadline = time.monotonic() + 10
    while server._loop is None and time.monotonic() < deadline:
        time.sleep(0.01)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(10)

    return stop
