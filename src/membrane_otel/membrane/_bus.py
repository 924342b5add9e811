"""The membrane bus client: envelopes out over WebSocket, never from the caller's thread.

``BusClient.publish()`` appends to a bounded queue (the one worker shape) and returns; a
daemon flusher sends batches every ``flush_interval_ms`` or ``batch_size`` envelopes. The
in-process membrane exporter, already on a background thread, calls ``deliver()`` instead
and sends without a second queue. When the bus cannot be
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
from collections.abc import Callable, Iterator

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.tables import DEFAULT_BUS_URL
from membrane_otel._internal.worker import Worker, shared_remaining_ms
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
    """Publishes envelopes to the membrane bus from a background thread, spooling on failure.

    Its queue is the one worker shape (``_internal/worker.py``): ``publish()`` enqueues for
    the worker; :meth:`deliver` sends from a thread that is already a background one (the
    membrane exporter's batch processor), so that path has no second queue.
    """

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
        self._init_state()
        ref = weakref.ref(self)
        if hasattr(os, "register_at_fork"):  # before the worker's own hook: reset, then restart
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        self._worker: Worker[Envelope] = Worker(
            "bus",
            self._send_batch,
            max_queue=queue_size,
            batch_size=batch_size,
            interval_s=self._interval,
            drop_counter="dropped_count",
            late_counter="dropped_count",
            gauge="queue_depth",
            prepare=self._prepare,
            abandon=self._spill,
            on_stop=self._close,
            clock=clock,
        )
        if register_atexit:
            atexit.register(_shutdown_at_exit, ref)

    def _init_state(self) -> None:
        self._problems = RateLimitedLogger(_log, clock=self._clock)
        # The transport is one socket: the worker and deliver() take turns with it.
        self._round_lock = threading.RLock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_unreachable = False
        self._said_where = False
        self._down = False  # this round found the bus down: spool, do not try again
        self._behind = False  # the spool is not replayed yet: newer envelopes queue behind it
        self._spool_dirty = True  # look at the spool on the first round: an earlier run may have left files
        self._spool_checked_at = float("-inf")

    def _after_fork(self) -> None:
        # The child must not write on the parent's socket; the worker restarts empty.
        self._transport.reset_after_fork()
        self._init_state()

    # -- the application side --------------------------------------------------------------

    def publish(self, envelope: Envelope) -> None:
        """Queue one envelope for the bus. Never blocks on I/O, never raises."""
        if _stimulus_id(envelope) is None:
            counters.incr("bus_rejected")
            self._problems.log(
                logging.WARNING, "no-id", "membrane bus: envelope without metadata.stimulus_id dropped"
            )
            return
        if not self._worker.put(envelope) and self._worker.stopped:
            self._problems.log(logging.WARNING, "late", "membrane bus client is shut down; envelope dropped")

    def deliver(self, envelopes: list[Envelope], timeout_millis: float | None = None) -> bool:
        """Send now, from the calling background thread; what cannot be sent is spooled.

        True when every envelope reached the bus. Spooled envelopes are safe: the worker
        replays them, in order, when the bus answers again.
        """
        good = [e for e in envelopes if _stimulus_id(e) is not None]
        if len(good) < len(envelopes):
            counters.incr("bus_rejected", len(envelopes) - len(good))
        if not good:
            return True
        if self._worker.stopped:
            counters.incr("dropped_count", len(good))
            return False
        if timeout_millis is None:
            timeout_millis = shared_remaining_ms()  # a shutdown in progress bounds the sockets too
        deadline = None if timeout_millis is None else self._clock() + timeout_millis / 1000
        with self._round_lock:
            ok = self._prepare(deadline)
            for i in range(0, len(good), self._batch_size):
                ok = self._send_batch(good[i : i + self._batch_size], deadline) and ok
            return ok

    def save(self, envelopes: list[Envelope]) -> None:
        """Straight to the disk spool (no time left to send): replayed when the bus answers."""
        self._spill([e for e in envelopes if _stimulus_id(e) is not None])

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Send (or, failing that, spool) everything queued so far.

        True when it was delivered to the bus, False when it had to be spooled or the
        timeout passed first. Spooled envelopes are safe; they go out when the bus returns.
        """
        return self._worker.force_flush(timeout_millis)

    @property
    def running(self) -> bool:
        """Whether the flusher thread is alive and the client not shut down."""
        return self._worker.running

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Flush what can be sent, spool the rest, stop the flusher. Idempotent."""
        self._worker.shutdown(timeout_millis)

    @property
    def queue_depth(self) -> int:
        return self._worker.depth

    # -- the worker's round: replay the spool, then send -------------------------------------

    def _prepare(self, deadline: float | None) -> bool:
        """Before sending: is the bus worth trying, and is the spool replayed? False if not."""
        with self._round_lock, _no_instrumentation():
            self._down = self._behind = False
            if not self._worker.depth and not self._spool_worth_checking():
                return True
            if self._clock() < self._next_attempt:
                # Backing off. A cheap TCP probe tells whether the bus came back; only then is a
                # handshake worth its cost. After a refusal (401, no ack) wait the full backoff.
                probe = self._last_unreachable or deadline is not None
                if not (probe and self._transport.probe(self._remaining(deadline, 0.25))):
                    self._down = True
                    return False
            try:
                if not self._replay(deadline):
                    self._behind = True  # more spooled than one slice: newer envelopes queue behind
                    return False
            except BusError as exc:
                self._fail(exc)
                return False
            self._recovered()
            return True

    def _send_batch(self, batch: list[Envelope], deadline: float | None) -> bool:
        """Send one batch; spool it when the bus is down, behind, or the deadline has passed."""
        with self._round_lock, _no_instrumentation():
            if self._down or self._behind or self._past(deadline):
                self._spill(batch)
                return False
            try:
                ack = self._transport.send(batch, self._time_left(deadline))
            except BusError as exc:
                self._fail(exc)
                self._spill(batch)
                return False
            _account(batch, ack, self._problems, self._on_published)
            self._recovered()
            return True

    def _close(self) -> None:
        with self._round_lock:
            self._transport.close()

    def _fail(self, exc: BusError) -> None:
        self._transport.close()
        self._down = True
        self._on_failure(exc)

    def _recovered(self) -> None:
        if self._backoff:
            self._problems.log(logging.INFO, "recovered", "membrane bus at %s is reachable again", self.url)
        self._backoff = 0.0
        self._next_attempt = 0.0

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
            if (
                self._clock() >= slice_end
                or self._past(deadline)
                or self._worker.depth > self._queue_size // 2
            ):
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

    def _on_failure(self, exc: BusError) -> None:
        self._last_unreachable = isinstance(exc, BusUnavailable)
        self._backoff = min(self._max_backoff, max(self._interval, self._backoff * 2))
        self._next_attempt = self._clock() + self._backoff * random.uniform(0.9, 1.1)
        if self._quiet_unreachable and self._last_unreachable:
            self._say_where()
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

    def _say_where(self) -> None:
        """Once: where envelopes wait when nobody chose a bus (INFO, not a warning). "Once" counts
        from when INFO is listened to: a spool left by an earlier run is replayed at start-up,
        before the application has had a chance to turn our logger up."""
        if not self._said_where and _log.isEnabledFor(logging.INFO):
            self._said_where = True
            _log.info(
                "no membrane bus at %s (MEMBRANE_BUS_URL not set): envelopes are kept in %s "
                "and sent when a bus is there (`membrane-otel spool status`)",
                self.url,
                self.spool.directory,
            )

    def _spill(self, envelopes: list[Envelope]) -> None:
        if self._quiet_unreachable and envelopes:
            # Also when no attempt was made (a shutdown past its deadline spools directly).
            self._say_where()
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
