"""The membrane bus client: envelopes out over WebSocket, never from the caller's thread.

``BusClient.publish()`` appends to a bounded deque and returns; a daemon flusher sends
batches every ``flush_interval_ms`` or ``batch_size`` envelopes. When the bus cannot be
reached, or does not confirm a batch, the batch goes to the disk spool (``spool.py``) and is
replayed, oldest first, once the bus answers again. A spool file is deleted only after the
bus acknowledged it, so delivery is at-least-once; consumers dedupe by
``metadata.stimulus_id``.

The wire protocol (one JSON frame per batch, one ack per frame; ``WsTransport``, ``Ack``,
the ``BusError`` family) lives in ``_internal/bus_wire.py`` and is re-exported here.

Rejected envelopes are counted (``bus_rejected``) and dropped, never spooled: sending them
again would be rejected again.

Failures and retries: a refused or unreachable bus is retried with capped exponential
backoff, but between attempts a cheap TCP probe (one connect, no handshake) is made every
flush interval, so a bus that comes back is used within one interval. A bus that answers
and refuses (HTTP 401, bad certificate, no ack in time) waits out the full backoff.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.tables import DEFAULT_BUS_URL
from membrane_otel.membrane._bus_wire import (
    Ack,
    BusError,
    BusRefused,
    BusUnavailable,
    Envelope,
    Transport,
    WsTransport,
    _stimulus_id,
)
from membrane_otel.membrane._replay import account as _account
from membrane_otel.membrane._replay import flush_spool
from membrane_otel.membrane._spool import Spool

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


_log = logging.getLogger("membrane_otel.membrane._bus")


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
        quiet_unreachable: bool = False,
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
        # The default bus URL nobody chose: an absent bus is the normal embedded case, said
        # once at INFO instead of a warning per minute.
        self._quiet_unreachable = quiet_unreachable
        self._clock = clock
        self._problems = RateLimitedLogger(_log, clock=clock)
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
        self._said_where = False
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
        self._problems = RateLimitedLogger(_log, clock=self._clock)
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
                    deadline = (
                        self._shutdown_deadline if stopping else self._flush_deadline if forced else None
                    )
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
        if self._quiet_unreachable and self._last_unreachable:
            if not self._said_where:
                self._said_where = True
                _log.info(
                    "no membrane bus at %s (MEMBRANE_BUS_URL not set): envelopes are kept in %s "
                    "and sent when a bus is there (`membrane-otel spool status`)",
                    self.url,
                    self.spool.directory,
                )
            return
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
                    logging.ERROR,
                    "spool",
                    "membrane spool %s unwritable (%s): envelopes dropped",
                    self.spool.directory,
                    exc,
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
