"""The membrane bus client: envelopes out over WebSocket, never from the caller's thread.

``BusClient.publish()`` appends to a bounded deque and returns; a daemon flusher sends
batches every ``flush_interval_ms`` or ``batch_size`` envelopes. When the bus cannot be
reached, or does not confirm a batch, the batch goes to the disk spool (``spool.py``) and is
replayed, oldest first, once the bus answers again. A spool file is deleted only after the
bus acknowledged it, so delivery is at-least-once; consumers dedupe by
``metadata.stimulus_id``.

Wire protocol (the reference bus in ``busserver.py`` speaks it):

* the client sends one text frame per batch: a JSON array of ``membrane.inject`` envelopes
  (a single JSON object is accepted too);
* the bus answers every frame, in order: ``{"type": "ack", "ids": [...], "rejected": [...]}``
  with the accepted stimulus ids and, for arrays, ``{"index", "id", "error"}`` per rejected
  element; or ``{"type": "error", "error": "..."}`` when the frame as a whole is garbage;
* a bearer token, when configured, goes in the ``Authorization`` header of the handshake.

Rejected envelopes are counted (``bus_rejected``) and dropped, never spooled: sending them
again would be rejected again.

For a bus that never acks, ``require_ack=False`` counts a frame as delivered once it is
written to the socket; a crash of the bus can then lose the frames in flight.

Failures and retries: a refused or unreachable bus is retried with capped exponential
backoff, but between attempts a cheap TCP probe (one connect, no handshake) is made every
flush interval, so a bus that comes back is used within one interval. A bus that answers
and refuses (HTTP 401, bad certificate, no ack in time) waits out the full backoff.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

from membrane_otel._internal import counters
from membrane_otel.spool import Spool

__all__ = [
    "DEFAULT_BUS_URL",
    "Ack",
    "BusClient",
    "BusError",
    "BusRefused",
    "BusUnavailable",
    "Transport",
    "WsTransport",
    "flush_spool",
]

DEFAULT_BUS_URL = "ws://127.0.0.1:8000/api/ws"

_log = logging.getLogger("membrane_otel.bus")

Envelope = dict[str, Any]


# -- the wire ---------------------------------------------------------------------------------


class BusError(Exception):
    """The bus did not confirm a batch: unreachable, refused, or the connection broke."""


class BusUnavailable(BusError):
    """Nothing answered at the bus address (refused, unreachable, timed out)."""


class BusRefused(BusError):
    """Something answered but would not take envelopes (HTTP 401, TLS failure, not a bus)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ack:
    """The bus's answer to one frame: the stimulus ids it accepted, and why it refused any."""

    ids: frozenset[str]
    error: str | None = None


class Transport(Protocol):
    """How batches reach the bus; ``WsTransport`` in production, anything alike in tests."""

    def send(self, envelopes: Sequence[Envelope], timeout: float | None) -> Ack:
        """Deliver one batch and wait for its ack, within ``timeout`` s (None: the defaults)."""
        ...

    def probe(self, timeout: float) -> bool:
        """Cheaply tell whether anything listens at the bus address."""
        ...

    def close(self) -> None: ...

    def reset_after_fork(self) -> None:
        """Forget the parent's connection without touching it."""
        ...


class WsTransport:
    """One persistent WebSocket connection (``websockets`` sync client), stop-and-wait acks."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl_ca: str | None = None,
        connect_timeout: float = 3.0,
        ack_timeout: float = 5.0,
        require_ack: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"membrane bus URL must be ws://host[:port]/path or wss://..., got {url!r}")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "wss" else 80)
        # wss:// always verifies the certificate (hostname included); ssl_ca adds a private CA.
        self._ssl = ssl.create_default_context(cafile=ssl_ca) if parts.scheme == "wss" else None
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._connect_timeout = connect_timeout
        self._ack_timeout = ack_timeout
        self._require_ack = require_ack
        self._ws: ClientConnection | None = None

    def _connect(self, timeout: float) -> ClientConnection:
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        from websockets.sync.client import connect

        try:
            ws = connect(
                self.url,
                additional_headers=self._headers,
                ssl=self._ssl,
                open_timeout=timeout,
                close_timeout=1.0,
                # Without acks nobody waits on replies; a bounded receive queue would, when
                # full, stop reading the socket, and with it pings and the closing handshake.
                max_queue=16 if self._require_ack else None,
            )
            # Entered as a context manager (websockets >= 17.1 warns otherwise); close() exits it.
            return ws.__enter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise BusRefused(f"handshake refused with HTTP {status}", status) from exc
        except ssl.SSLError as exc:  # before OSError: a bad certificate is not "down"
            raise BusRefused(f"TLS failure: {exc}") from exc
        except TimeoutError as exc:
            # TCP may connect (a kernel backlog accepts for anyone) with nobody answering the
            # handshake: not "down", so no early retry on a successful probe.
            raise BusError(f"no handshake answer within {timeout:.1f}s") from exc
        except OSError as exc:
            raise BusUnavailable(f"unreachable ({exc})") from exc
        except (InvalidHandshake, InvalidURI) as exc:
            raise BusRefused(f"not a membrane bus: {exc}") from exc

    def send(self, envelopes: Sequence[Envelope], timeout: float | None) -> Ack:
        from websockets.exceptions import ConnectionClosed

        start = time.monotonic()
        budget = timeout if timeout is not None else self._connect_timeout + self._ack_timeout
        if self._ws is None:
            self._ws = self._connect(min(self._connect_timeout, budget))
        ws = self._ws
        # default=str: a stray datetime in a payload must not make a batch unsendable forever.
        frame = json.dumps(list(envelopes), separators=(",", ":"), ensure_ascii=False, default=str)
        try:
            ws.send(frame)
            if not self._require_ack:
                return self._assume_delivered(ws, envelopes)
            while True:
                left = min(self._ack_timeout, budget - (time.monotonic() - start))
                if left <= 0:
                    raise TimeoutError
                reply = ws.recv(timeout=left)
                ack = _parse_reply(reply)
                if ack is not None:
                    return ack
        except TimeoutError as exc:
            self.close()
            raise BusError(f"no ack within {budget:.1f}s") from exc
        except ConnectionClosed as exc:
            self.close()
            if exc.rcvd is not None and exc.rcvd.code == 1009:
                # The bus will never take a frame this big; resending it would loop forever.
                return Ack(frozenset(), "frame too big for the bus (close code 1009)")
            raise BusError(f"connection lost ({exc})") from exc
        except OSError as exc:
            self.close()
            raise BusError(f"connection failed ({exc})") from exc

    def _assume_delivered(self, ws: ClientConnection, envelopes: Sequence[Envelope]) -> Ack:
        """For buses that never ack: sent is delivered (a crash can lose what is in flight).
        Whatever the bus does send is discarded at each send, so it never piles up."""
        while True:
            try:
                ws.recv(timeout=0)
            except TimeoutError:
                break
        return Ack(frozenset(sid for e in envelopes if (sid := _stimulus_id(e)) is not None))

    def probe(self, timeout: float) -> bool:
        try:
            with socket.create_connection((self._host, self._port), timeout=timeout):
                return True
        except OSError:
            return False

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.__exit__(None, None, None)
            except Exception:  # closing a broken connection may fail in many ways; it is gone
                pass

    def reset_after_fork(self) -> None:
        self._ws = None


def _parse_reply(reply: str | bytes) -> Ack | None:
    """An ``ack`` or ``error`` frame as an Ack; None for anything else (keep waiting)."""
    try:
        msg = json.loads(reply)
    except ValueError:
        return None
    if not isinstance(msg, dict):
        return None
    if msg.get("type") == "ack":
        ids = msg.get("ids")
        rejected = msg.get("rejected") or []
        error = "; ".join(str(r.get("error")) for r in rejected if isinstance(r, dict)) or None
        return Ack(frozenset(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else frozenset(), error)
    if msg.get("type") == "error":
        return Ack(frozenset(), str(msg.get("error", "frame refused")))
    return None


class _ProblemLog:
    """One log line per distinct problem per ``every_s``: a bus that is down for an hour
    must not write a line per batch."""

    def __init__(self, clock: Callable[[], float], every_s: float = 60.0) -> None:
        self._clock = clock
        self._every = every_s
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._every:
                return
            self._last[key] = now
        _log.log(level, msg, *args, exc_info=exc_info)


@contextlib.contextmanager
def _no_instrumentation() -> Iterator[None]:
    """Our own logging and sockets must not become telemetry that flows back to us."""
    try:
        from opentelemetry.instrumentation.utils import suppress_instrumentation
    except ImportError:  # pragma: no cover - the instrumentation package is a dependency
        yield
        return
    with suppress_instrumentation():
        yield


def _stimulus_id(envelope: object) -> str | None:
    if not isinstance(envelope, dict):
        return None
    md = envelope.get("metadata")
    sid = md.get("stimulus_id") if isinstance(md, dict) else None
    return sid if isinstance(sid, str) and sid else None


def _account(
    batch: Sequence[Envelope],
    ack: Ack,
    problems: _ProblemLog,
    on_published: Callable[[list[Envelope]], None] | None,
) -> int:
    """Count what the bus took and what it refused; return how many were delivered."""
    delivered = [e for e in batch if _stimulus_id(e) in ack.ids]
    refused = len(batch) - len(delivered)
    if delivered:
        counters.incr("published", len(delivered))
    if refused:
        counters.incr("bus_rejected", refused)
        problems.log(
            logging.WARNING, "rejected", "membrane bus rejected %d envelope(s): %s", refused, ack.error
        )
    if on_published is not None and delivered:
        try:
            on_published(delivered)
        except Exception:
            problems.log(logging.ERROR, "callback", "membrane bus on_published callback failed", exc_info=True)
    return len(delivered)


class BusClient:
    """Publishes envelopes to the membrane bus from a background thread, spooling on failure."""

    def __init__(
        self,
        url: str,
        spool: Spool,
        *,
        token: str | None = None,
        ssl_ca: str | None = None,
        queue_size: int = 1000,
        flush_interval_ms: int = 250,
        batch_size: int = 25,
        connect_timeout: float = 3.0,
        ack_timeout: float = 5.0,
        require_ack: bool = True,
        max_backoff_s: float = 30.0,
        on_published: Callable[[list[Envelope]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: Transport | None = None,
        register_atexit: bool = True,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or flush_interval_ms < 1:
            raise ValueError("queue_size, batch_size and flush_interval_ms must be positive")
        self.url = url
        self.spool = spool
        self._transport: Transport = transport or WsTransport(
            url,
            token=token,
            ssl_ca=ssl_ca,
            connect_timeout=connect_timeout,
            ack_timeout=ack_timeout,
            require_ack=require_ack,
        )
        self._queue_size = queue_size
        self._interval = flush_interval_ms / 1000.0
        self._batch_size = batch_size
        self._max_backoff = max(max_backoff_s, self._interval)
        self._on_published = on_published
        self._clock = clock
        self._problems = _ProblemLog(clock)
        self._init_state()
        ref = weakref.ref(self)
        counters.register_gauge("queue_depth", lambda: len(c._queue) if (c := ref()) else 0)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        if register_atexit:
            atexit.register(_shutdown_at_exit, ref)
        self._start()

    def _init_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Envelope] = deque()
        self._inflight: list[Envelope] | None = None
        self._flush_req = 0
        self._flush_done = 0
        self._flush_deadline: float | None = None
        self._last_tick_ok = False
        self._stopping = False
        self._shutdown_deadline: float | None = None
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_unreachable = False
        self._spool_dirty = True  # look at the spool on the first tick: an earlier run may have left files
        self._spool_checked_at = float("-inf")
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="membrane-bus-flusher", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The child must not send the parent's queued envelopes (the parent will) nor write
        # on the parent's socket; it starts empty, with its own thread.
        stopped = self._stopping
        self._transport.reset_after_fork()
        self._problems = _ProblemLog(self._clock)
        self._init_state()
        if stopped:
            self._stopping = True
        else:
            self._start()

    # -- the application side --------------------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        """Queue one envelope for the bus. Never blocks on I/O, never raises."""
        if _stimulus_id(envelope) is None:
            counters.incr("bus_rejected")
            self._problems.log(
                logging.WARNING, "no-id", "membrane bus: envelope without metadata.stimulus_id dropped"
            )
            return
        with self._cond:
            if self._stopping:
                dropped_late = True
            else:
                dropped_late = False
                if len(self._queue) >= self._queue_size:
                    self._queue.popleft()
                    counters.incr("dropped_count")
                self._queue.append(envelope)
                if len(self._queue) >= self._batch_size:
                    self._cond.notify()
        if dropped_late:
            counters.incr("dropped_count")
            self._problems.log(logging.WARNING, "late", "membrane bus client is shut down; envelope dropped")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Send (or, failing that, spool) everything queued so far.

        True when it was delivered to the bus, False when it had to be spooled or the
        timeout passed first. Spooled envelopes are safe; they go out when the bus returns.
        """
        deadline = self._clock() + timeout_millis / 1000.0
        with self._cond:
            if self._stopping:
                return not self._queue
            self._flush_req += 1
            req = self._flush_req
            self._flush_deadline = deadline
            self._cond.notify_all()
            while self._flush_done < req:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self._last_tick_ok

    @property
    def running(self) -> bool:
        """Whether the flusher thread is alive and the client not shut down."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Flush what can be sent, spool the rest, stop the flusher. Idempotent."""
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            # Sending may use 90% of the time; spooling what is left needs the rest.
            self._shutdown_deadline = self._clock() + 0.9 * timeout_millis / 1000.0
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_millis / 1000.0)
            if not thread.is_alive():
                return
        # The flusher is stuck (a bus that accepts but never answers): save what it holds.
        # Its in-flight batch may still be delivered too, which at-least-once allows.
        with self._cond:
            leftovers = (self._inflight or []) + list(self._queue)
            self._inflight = None
            self._queue.clear()
        self._spill(leftovers)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- the flusher ------------------------------------------------------------------------

    def _run(self) -> None:
        with _no_instrumentation():
            while True:
                with self._cond:
                    wake_at = self._clock() + self._interval
                    while not (
                        self._stopping
                        or len(self._queue) >= self._batch_size
                        or self._flush_req > self._flush_done
                    ):
                        remaining = wake_at - self._clock()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    stopping = self._stopping
                    target = self._flush_req
                    forced = stopping or target > self._flush_done
                    deadline = self._shutdown_deadline if stopping else self._flush_deadline if forced else None
                try:
                    ok = self._tick(forced=forced, deadline=deadline)
                except Exception:  # the flusher must outlive any bug in one tick
                    ok = False
                    self._problems.log(logging.ERROR, "bug", "membrane bus flusher failed", exc_info=True)
                with self._cond:
                    self._last_tick_ok = ok
                    self._flush_done = max(self._flush_done, target)
                    self._cond.notify_all()
                if stopping:
                    self._transport.close()
                    return

    def _tick(self, *, forced: bool, deadline: float | None) -> bool:
        """One round: replay the spool, then send the queue. Returns True if all went out."""
        if not self._queue and not self._spool_worth_checking():
            return True
        now = self._clock()
        if now < self._next_attempt:
            # Backing off. A cheap TCP probe tells whether the bus came back; only then is a
            # handshake worth its cost. After a refusal (401, no ack) wait the full backoff.
            probe = self._last_unreachable or forced
            if not (probe and self._transport.probe(self._remaining(deadline, 0.25))):
                self._spill_queue()
                return False
        try:
            if not self._replay(deadline):
                self._spill_queue()  # more spooled than one slice: newer envelopes queue behind
                return False
            if not self._send_queue(deadline):
                self._spill_queue()  # out of time (shutdown, force_flush): keep the rest safe
                return False
        except BusError as exc:
            self._transport.close()
            self._on_failure(exc)
            self._spill_queue()
            return False
        if self._backoff:
            self._problems.log(logging.INFO, "recovered", "membrane bus at %s is reachable again", self.url)
        self._backoff = 0.0
        self._next_attempt = 0.0
        return True

    def _past(self, deadline: float | None) -> bool:
        return deadline is not None and self._clock() >= deadline

    def _time_left(self, deadline: float | None) -> float | None:
        """Seconds the transport may spend (None: its own timeouts). A passed deadline still
        gets a token instant, so the attempt fails fast and its batch is spooled."""
        return None if deadline is None else max(0.001, deadline - self._clock())

    def _remaining(self, deadline: float | None, cap: float) -> float:
        if deadline is None:
            return cap
        return max(0.001, min(cap, deadline - self._clock()))

    def _spool_worth_checking(self) -> bool:
        # Our own spill makes the spool dirty; other processes' files are noticed within a second.
        return self._spool_dirty or self._clock() - self._spool_checked_at >= 1.0

    def _replay(self, deadline: float | None) -> bool:
        """Replay spooled batches, oldest first, for at most one slice; True when none are left."""
        if not self._spool_worth_checking():
            return True
        slice_end = self._clock() + max(self._interval, 0.2)
        while True:
            if self._clock() >= slice_end or self._past(deadline) or len(self._queue) > self._queue_size // 2:
                return False
            batch = self.spool.claim_oldest()
            if batch is None:
                self._spool_dirty = False
                self._spool_checked_at = self._clock()
                return True
            try:
                ack = self._transport.send(batch.envelopes, self._time_left(deadline))
            except BusError:
                self.spool.release(batch)
                raise
            self.spool.ack(batch)
            _account(batch.envelopes, ack, self._problems, self._on_published)

    def _send_queue(self, deadline: float | None) -> bool:
        """Send the queue batch by batch; False when the deadline cut it short."""
        while True:
            if self._past(deadline):
                return False
            with self._cond:
                if not self._queue:
                    return True
                n = min(self._batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                self._inflight = batch
            try:
                ack = self._transport.send(batch, self._time_left(deadline))
            except BusError:
                with self._cond:
                    mine, self._inflight = self._inflight, None
                if mine:  # else shutdown() already saved it
                    self._spill(mine)
                raise
            with self._cond:
                self._inflight = None
            _account(batch, ack, self._problems, self._on_published)

    def _on_failure(self, exc: BusError) -> None:
        self._last_unreachable = isinstance(exc, BusUnavailable)
        self._backoff = min(self._max_backoff, max(self._interval, self._backoff * 2))
        self._next_attempt = self._clock() + self._backoff * random.uniform(0.9, 1.1)
        key = type(exc).__name__ + (str(exc.status) if isinstance(exc, BusRefused) else "")
        self._problems.log(
            logging.WARNING,
            key,
            "membrane bus at %s: %s; spooling to %s and retrying",
            self.url,
            exc,
            self.spool.directory,
        )

    def _spill_queue(self) -> None:
        with self._cond:
            pending = list(self._queue)
            self._queue.clear()
        self._spill(pending)

    def _spill(self, envelopes: list[Envelope]) -> None:
        for i in range(0, len(envelopes), self._batch_size):
            chunk = envelopes[i : i + self._batch_size]
            try:
                self.spool.write(chunk)
            except (OSError, ValueError, TypeError) as exc:
                counters.incr("dropped_count", len(chunk))
                self._problems.log(
                    logging.ERROR, "spool", "membrane spool %s unwritable (%s): envelopes dropped",
                    self.spool.directory, exc,
                )
            else:
                self._spool_dirty = True


def _after_fork(ref: weakref.ref[BusClient]) -> None:
    client = ref()
    if client is not None:
        client._after_fork()


def _shutdown_at_exit(ref: weakref.ref[BusClient]) -> None:
    client = ref()
    if client is not None:
        client.shutdown(timeout_millis=5_000)


def flush_spool(
    url: str,
    spool: Spool,
    token: str | None = None,
    *,
    ssl_ca: str | None = None,
    connect_timeout: float = 5.0,
    ack_timeout: float = 10.0,
    require_ack: bool = True,
    transport: Transport | None = None,
) -> int:
    """Replay every spooled batch to the bus now; return how many envelopes it accepted.

    Raises ``BusError`` when the bus cannot be reached or stops answering; the batch in hand
    is put back, and what was acknowledged before stays delivered.
    """
    tr = transport or WsTransport(
        url,
        token=token,
        ssl_ca=ssl_ca,
        connect_timeout=connect_timeout,
        ack_timeout=ack_timeout,
        require_ack=require_ack,
    )
    problems = _ProblemLog(time.monotonic)
    delivered = 0
    try:
        while (batch := spool.claim_oldest()) is not None:
            try:
                ack = tr.send(batch.envelopes, None)
            except BusError:
                spool.release(batch)
                raise
            spool.ack(batch)
            delivered += _account(batch.envelopes, ack, problems, None)
    finally:
        tr.close()
    return delivered
