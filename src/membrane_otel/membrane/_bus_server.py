"""The reference membrane bus: a small WebSocket hub for development and tests.

``ws://HOST:PORT/api/ws`` takes ``membrane.inject`` envelopes, one JSON object or a JSON
array of them per text frame, answers every frame (``ack`` with the accepted stimulus ids,
or ``error`` for garbage) and broadcasts each accepted envelope, one per frame, to every
subscriber. A client subscribes by connecting to ``/api/ws?subscribe=1`` or by sending
``{"type": "subscribe"}``. ``GET /health`` answers 200 with JSON counts.

Validation is deliberately light (type, and a ``metadata.stimulus_id`` to dedupe by): the
bus routes envelopes, the pydantic models judge them. A bad frame gets an error frame and
harms nobody else; the connection stays open.

Slow subscribers: each has its own outbox, bounded in bytes (``subscriber_buffer``), drained
by one task that awaits the socket. A subscriber that falls further behind than that, or
whose oldest waiting envelope is older than ``subscriber_lag_s``, is disconnected with close
code 1008 and counted (``slow_dropped`` in ``/health``); and when all outboxes together pass
``total_buffer``, the one furthest behind goes first. So the bus holds at most
``total_buffer`` bytes for its subscribers, whatever they do (websockets' own ``broadcast()``
has no backpressure: a subscriber that never reads made the bus keep everything).

With ``record`` set, every accepted envelope is appended to that JSONL file *before* the ack
goes out, so an ack'd envelope survives even a SIGKILL of the bus (what the reliability
tests count on, and handy for "what did the bus actually receive?").
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from membrane_otel._internal.auth import bearer_ok

__all__ = ["BusServer", "serve", "serve_async", "validate_envelope"]

_log = logging.getLogger("membrane_otel.membrane._bus_server")

WS_PATH = "/api/ws"
MAX_FRAME_BYTES = 16 * 1024 * 1024
SUBSCRIBER_BUFFER = 8 * 1024 * 1024  # what one subscriber may fall behind by
TOTAL_BUFFER = 32 * 1024 * 1024  # what all subscribers together may
SUBSCRIBER_LAG_S = 5.0  # how old its oldest waiting envelope may get
CLOSE_TOO_SLOW = 1008  # policy violation: the subscriber does not keep up


class _Outbox:
    """One subscriber's envelopes on their way out, in order, and what they cost."""

    __slots__ = ("bytes", "queue", "task", "wake", "ws")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.queue: deque[tuple[str, float]] = deque()
        self.bytes = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


def validate_envelope(obj: object) -> str | None:
    """What is wrong with ``obj`` as an envelope, or None when the bus can route it."""
    if not isinstance(obj, dict):
        return f"envelope must be a JSON object, got {type(obj).__name__}"
    if "type" not in obj:
        return 'missing "type"'
    if obj["type"] != "membrane.inject":
        return f'unsupported type {obj["type"]!r} (expected "membrane.inject" or "subscribe")'
    md = obj.get("metadata")
    if not isinstance(md, dict):
        return 'missing "metadata" object'
    sid = md.get("stimulus_id")
    if not isinstance(sid, str) or not sid:
        return 'missing "metadata.stimulus_id"'
    return None


def _sid(obj: object) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        sid = obj["metadata"].get("stimulus_id")
        return sid if isinstance(sid, str) else None
    return None


class BusServer:
    """The state of one bus: subscribers, counts, the optional record file."""

    def __init__(
        self,
        *,
        token: str | None = None,
        record: str | None = None,
        subscriber_buffer: int = SUBSCRIBER_BUFFER,
        total_buffer: int = TOTAL_BUFFER,
        subscriber_lag_s: float = SUBSCRIBER_LAG_S,
    ) -> None:
        self._token = token
        self.subscriber_buffer, self.total_buffer = subscriber_buffer, total_buffer
        self.subscriber_lag_s = subscriber_lag_s
        self._outboxes: dict[ServerConnection, _Outbox] = {}
        self._buffered = 0
        self._record_fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if record else None
        self.clients: set[ServerConnection] = set()
        self.subscribers: set[ServerConnection] = set()
        self.stats = {"frames": 0, "accepted": 0, "rejected": 0, "errors": 0, "slow_dropped": 0}
        self._started = time.monotonic()

    def close(self) -> None:
        if self._record_fd is not None:
            os.close(self._record_fd)
            self._record_fd = None

    # -- HTTP side of the handshake ----------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/health":
            return _json_response(connection, 200, self.health())
        if path != WS_PATH:
            return connection.respond(404, f"not found; the bus is at {WS_PATH}\n")
        if self._token is not None:
            # One check for the bus and the bridge: scheme case-insensitive, constant time.
            if not bearer_ok(request.headers.get("Authorization"), self._token):
                resp = connection.respond(401, "missing or wrong bearer token\n")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="membrane-bus"'
                return resp
        return None

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "clients": len(self.clients),
            "subscribers": len(self.subscribers),
            "buffered_bytes": self._buffered,
            "uptime_s": round(time.monotonic() - self._started, 3),
            **self.stats,
        }

    # -- WebSocket side ----------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        query = parse_qs(ws.request.path.partition("?")[2]) if ws.request else {}
        if query.get("subscribe", ["0"])[-1] in ("1", "true", "yes"):
            self._subscribe(ws)
        self.clients.add(ws)
        try:
            async for message in ws:
                reply = self.handle_frame(message, ws)
                await ws.send(json.dumps(reply, separators=(",", ":")))
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)
            self._unsubscribe(ws)

    # -- subscribers' outboxes ---------------------------------------------------------------

    def _subscribe(self, ws: ServerConnection) -> None:
        if ws in self._outboxes:
            return
        box = self._outboxes[ws] = _Outbox(ws)
        self.subscribers.add(ws)
        box.task = asyncio.get_running_loop().create_task(self._pump(box))

    def _unsubscribe(self, ws: ServerConnection) -> _Outbox | None:
        self.subscribers.discard(ws)
        box = self._outboxes.pop(ws, None)
        if box is not None:
            self._buffered -= box.bytes
            box.queue.clear()
            box.bytes = 0
            if box.task is not None and box.task is not asyncio.current_task():
                box.task.cancel()
        return box

    async def _pump(self, box: _Outbox) -> None:
        """Send one subscriber its envelopes in order, at the pace its socket takes them."""
        try:
            while True:
                while not box.queue:
                    box.wake.clear()
                    await box.wake.wait()
                line, _ = box.queue.popleft()
                box.bytes -= len(line)
                self._buffered -= len(line)
                await box.ws.send(line)
        except ConnectionClosed:
            self._unsubscribe(box.ws)

    def _push(self, box: _Outbox, line: str, now: float) -> None:
        box.queue.append((line, now))
        box.bytes += len(line)
        self._buffered += len(line)
        box.wake.set()
        if box.bytes > self.subscriber_buffer:
            self._drop(box, f"more than {self.subscriber_buffer} bytes behind")
        elif now - box.queue[0][1] > self.subscriber_lag_s:
            self._drop(box, f"more than {self.subscriber_lag_s:g} s behind")

    def _drop(self, box: _Outbox, why: str) -> None:
        """Disconnect a subscriber that does not keep up (close code 1008), freeing its outbox."""
        if self._unsubscribe(box.ws) is None:
            return
        self.stats["slow_dropped"] += 1
        _log.warning("bus: dropped a slow subscriber (%s): %s", box.ws.remote_address, why)
        asyncio.get_running_loop().create_task(self._close(box.ws, f"subscriber too slow: {why}"))

    @staticmethod
    async def _close(ws: ServerConnection, reason: str) -> None:
        # The close frame queues behind what the subscriber has not read; one that never
        # reads never sees it, so the connection is cut at the close timeout.
        try:
            await asyncio.wait_for(ws.close(CLOSE_TOO_SLOW, reason[:120]), 2.0)
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            ws.transport.abort()

    def handle_frame(self, message: str | bytes, ws: ServerConnection | None = None) -> dict[str, Any]:
        """Validate, record, broadcast; return the reply frame for the sender."""
        self.stats["frames"] += 1
        try:
            text = message.decode() if isinstance(message, bytes) else message
            data = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            return self._error(f"frame is not JSON: {exc}")
        except RecursionError:
            return self._error("frame is not JSON the bus reads: nested too deep")
        if isinstance(data, dict) and data.get("type") == "subscribe":
            if ws is not None:
                self._subscribe(ws)
            return {"type": "subscribed"}
        if isinstance(data, dict):
            problem = validate_envelope(data)
            if problem is not None:
                self.stats["rejected"] += 1
                return self._error(problem, sid=_sid(data))
            self._accept([data])
            return {"type": "ack", "ids": [_sid(data)], "rejected": []}
        if isinstance(data, list):
            if not data:
                return self._error("empty batch")
            good: list[dict[str, Any]] = []
            rejected: list[dict[str, Any]] = []
            for i, item in enumerate(data):
                problem = validate_envelope(item)
                if problem is None:
                    good.append(item)
                else:
                    rejected.append({"index": i, "id": _sid(item), "error": problem})
            self.stats["rejected"] += len(rejected)
            self._accept(good)
            return {"type": "ack", "ids": [_sid(e) for e in good], "rejected": rejected}
        return self._error(f"frame must be a JSON object or an array of objects, got {type(data).__name__}")

    def _error(self, problem: str, sid: str | None = None) -> dict[str, Any]:
        self.stats["errors"] += 1
        reply: dict[str, Any] = {"type": "error", "error": problem}
        if sid is not None:
            reply["id"] = sid
        return reply

    def _accept(self, envelopes: list[dict[str, Any]]) -> None:
        if not envelopes:
            return
        lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in envelopes]
        if self._record_fd is not None:
            # One write per frame, before the ack: an acknowledged envelope is on record.
            os.write(self._record_fd, ("\n".join(lines) + "\n").encode())
        self.stats["accepted"] += len(envelopes)
        if not self._outboxes:
            return
        now = time.monotonic()
        for box in list(self._outboxes.values()):
            for line in lines:
                if box.ws not in self._outboxes:
                    break  # dropped as too slow
                self._push(box, line, now)
        while self._buffered > self.total_buffer and self._outboxes:
            worst = max(self._outboxes.values(), key=lambda b: b.bytes)
            self._drop(worst, f"the bus holds more than {self.total_buffer} bytes for its subscribers")


def _json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    resp = connection.respond(status, json.dumps(body) + "\n")
    del resp.headers["Content-Type"]
    resp.headers["Content-Type"] = "application/json"
    return resp


def _server_ssl(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise ValueError("--keyfile needs --certfile")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


async def serve_async(
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    *,
    record: str | None = None,
    subscriber_buffer: int = SUBSCRIBER_BUFFER,
    stop: asyncio.Event | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Run the bus until ``stop`` is set. ``port=0`` picks a free port (see the URL passed
    to ``on_listening``)."""
    tls = _server_ssl(certfile, keyfile)
    bus = BusServer(
        token=token,
        record=record,
        subscriber_buffer=subscriber_buffer,
        total_buffer=max(TOTAL_BUFFER, subscriber_buffer),
    )
    stop = stop or asyncio.Event()
    try:
        async with ws_serve(
            bus.handler,
            host,
            port,
            process_request=bus.process_request,
            ssl=tls,
            max_size=MAX_FRAME_BYTES,
            # A dev bus stops at once on Ctrl-C instead of waiting 10 s for slow goodbyes.
            close_timeout=1.0,
        ) as server:
            bound = next(iter(server.sockets)).getsockname()[1]
            scheme = "wss" if tls else "ws"
            url = f"{scheme}://{host}:{bound}{WS_PATH}"
            if on_listening is not None:
                on_listening(url)
            await stop.wait()
    finally:
        bus.close()


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    *,
    record: str | None = None,
    subscriber_buffer: int = SUBSCRIBER_BUFFER,
    out: IO[str] | None = None,
) -> None:
    """Run the bus in the foreground until SIGINT or SIGTERM; print one line when listening."""
    stream = out or sys.stdout

    def listening(url: str) -> None:
        auth = " (bearer token required)" if token else ""
        print(f"membrane bus listening on {url}{auth}", file=stream, flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_async(
            host,
            port,
            token,
            certfile,
            keyfile,
            record=record,
            subscriber_buffer=subscriber_buffer,
            stop=stop,
            on_listening=listening,
        )

    asyncio.run(main())
