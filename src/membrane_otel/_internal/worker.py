"""The one background-worker shape behind every queue of the pipeline.

The batch processors, the L2 logger's renderer and the membrane bus client all hand work
to a :class:`Worker`: a bounded deque that drops its oldest item when full and counts it,
a daemon thread woken by a ``Condition`` (when ``wake_at`` items wait, a flush is asked
for, or every ``interval_s``), ``force_flush(timeout_millis) -> bool`` and an idempotent
``shutdown(timeout_millis)`` that spend one deadline, a restart after ``fork`` (the child
starts empty: the parent's items are the parent's), instrumentation suppressed on the
worker thread (our own sockets and logs must not become telemetry that flows back), and
nothing raised from the handler into anybody (counted, logged rate-limited). It keeps
the SDK's ``BatchProcessor`` shape and adds what the seeds need: the counters, an
``overflow`` that takes what the memory queue cannot hold (the ledger's disk buffer), a
``prepare`` step run before each round (the bus replays its spool there) and an
``abandon`` hook for what a stuck handler still holds at shutdown (the bus spools it).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from opentelemetry.instrumentation.utils import suppress_instrumentation

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger

T = TypeVar("T")
_log = RateLimitedLogger(logging.getLogger("membrane_otel.worker"))

Handle = Callable[[list[T], "float | None"], bool]


class Overflow(Protocol[T]):
    """Where items go when the memory queue is full (and, to keep order, while it holds any)."""

    def accepts(self, item: T, /) -> bool: ...
    def push(self, item: T, /) -> bool: ...
    def pop(self, n: int, /) -> list[T]: ...
    def __len__(self) -> int: ...


def remaining_ms(deadline: float, clock: Callable[[], float] = time.monotonic) -> float:
    """What is left of a shared deadline, in milliseconds (never negative)."""
    return max(0.0, (deadline - clock()) * 1000)


_shared: list[float] = []  # the deadline of the flush/shutdown in progress (innermost last)


@contextlib.contextmanager
def one_deadline(deadline: float) -> Iterator[None]:
    """Within this block every worker's flush and shutdown ends by ``deadline`` (monotonic).

    The SDK's providers call their processors' ``shutdown()`` without a timeout; this is how
    ``membrane_otel.shutdown(timeout_millis)`` still spends one deadline across all stages.
    """
    _shared.append(deadline)
    try:
        yield
    finally:
        _shared.remove(deadline)


def shared_remaining_ms() -> float | None:
    """What the flush/shutdown in progress leaves, or None when none is in progress.

    An exporter whose ``export()`` has no timeout of its own (the membrane exporter sending
    to the bus) reads this, so a shutdown's deadline reaches into its sockets too."""
    return remaining_ms(min(_shared)) if _shared else None


def clamp_ms(timeout_millis: float) -> float:
    """``timeout_millis``, cut to what the shared deadline (if any) leaves."""
    if not _shared:
        return timeout_millis
    return min(timeout_millis, remaining_ms(min(_shared)))


class Worker(Generic[T]):
    """A bounded queue drained in batches by one daemon thread (see the module doc)."""

    def __init__(
        self,
        name: str,
        handle: Callable[[list[T], float | None], bool],
        *,
        max_queue: int,
        batch_size: int,
        interval_s: float,
        wake_at: int | None = None,
        drop_counter: str = "dropped_logs",
        late_counter: str = "rejected_after_shutdown",
        gauge: str | None = None,
        overflow: Overflow[T] | None = None,
        prepare: Callable[[float | None], bool] | None = None,
        abandon: Callable[[list[T]], None] | None = None,
        on_drop: Callable[[T], None] | None = None,
        abandon_inflight: bool = True,
        on_stop: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queue < 1 or batch_size < 1 or interval_s <= 0:
            raise ValueError("max_queue, batch_size and interval_s must be positive")
        self.name = name
        self._handle = handle
        self._max = max_queue
        self._batch = batch_size
        self._interval = interval_s
        self._wake_at = max(1, wake_at or batch_size)
        self._drop_counter = drop_counter
        self._late_counter = late_counter
        self._overflow = overflow
        self._prepare = prepare
        self._abandon = abandon
        self._on_drop = on_drop
        self._abandon_inflight = abandon_inflight
        self._on_stop = on_stop
        self._clock = clock
        self.last_export_seconds = 0.0
        self._stopping = False
        self._init_state()
        ref = weakref.ref(self)
        gauge = gauge or f"queue_depth.{name}"
        counters.register_gauge(gauge, lambda: w.depth if (w := ref()) else 0)
        counters.register_gauge(f"worker_alive.{name}", lambda: int(bool((w := ref()) and w.running)))
        counters.register_gauge(
            f"export_latency_ms.{name}", lambda: int(w.last_export_seconds * 1000) if (w := ref()) else 0
        )
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        self._start()

    def _init_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[T] = collections.deque()
        self._inflight: list[T] | None = None
        self._busy = False
        self._flush_req = 0
        self._flush_done = 0
        self._flush_deadline: float | None = None
        self._shutdown_deadline: float | None = None
        self._last_ok = True
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=f"membrane-{self.name}", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The child must not export the parent's items (the parent will); it starts empty.
        self._init_state()
        if not self._stopping:
            self._start()

    # -- the producer side -------------------------------------------------------------------

    def put(self, item: T) -> bool:
        """Enqueue; never blocks beyond a short lock. False when the item was not kept."""
        kept = True
        with self._cond:
            if self._stopping:
                counters.incr(self._late_counter)
                return False
            spill = self._overflow is not None and (len(self._overflow) or len(self._queue) >= self._max)
            if spill and self._overflow is not None and self._overflow.accepts(item):
                kept = self._overflow.push(item)  # the buffer counts and alerts when it is full
            else:
                if len(self._queue) >= self._max:
                    dropped = self._queue.popleft()
                    counters.incr(self._drop_counter)
                    counters.incr(f"dropped.{self.name}")
                    if self._on_drop is not None:
                        self._on_drop(dropped)
                self._queue.append(item)
            if not self._busy and self.depth >= self._wake_at:
                self._busy = True  # one notify per round, not one per item
                self._cond.notify()
        return kept

    @property
    def depth(self) -> int:
        return len(self._queue) + (len(self._overflow) if self._overflow is not None else 0)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping

    @property
    def stopped(self) -> bool:
        return self._stopping

    # -- flush and shutdown: one deadline each ------------------------------------------------

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        """Run one round now for everything queued; True when all of it was handled in time."""
        timeout_millis = clamp_ms(timeout_millis)
        deadline = self._clock() + timeout_millis / 1000
        if threading.current_thread() is self._thread:
            return self._round(deadline)  # a handler flushing its own worker: do it inline
        with self._cond:
            if self._stopping:
                return self.depth == 0
            self._flush_req += 1
            req = self._flush_req
            self._flush_deadline = deadline
            self._cond.notify_all()
            while self._flush_done < req:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return self._last_ok

    def shutdown(self, timeout_millis: float = 30000) -> bool:
        """Handle what is queued within the deadline, then stop. Idempotent; True when drained."""
        timeout_millis = clamp_ms(timeout_millis)
        deadline = self._clock() + timeout_millis / 1000
        with self._cond:
            if self._stopping:
                return True
            self._stopping = True
            # The handler may use 90 % of the time; saving what is left needs the rest.
            self._shutdown_deadline = self._clock() + 0.9 * timeout_millis / 1000
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and self._pid == os.getpid():
            thread.join(max(0.0, deadline - self._clock()))
            if not thread.is_alive():
                return self._last_ok
        # A stuck handler (a bus that accepts but never answers): hand over what it holds
        # (and, with abandon_inflight, the batch it is stuck on: at-least-once beats lost).
        with self._cond:
            inflight = (self._inflight or []) if self._abandon_inflight else []
            leftovers = inflight + list(self._queue)
            if self._abandon_inflight:
                self._inflight = None
            self._queue.clear()
        self._give_up(leftovers)
        return False

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        with suppress_instrumentation():
            while True:
                with self._cond:
                    wake = self._clock() + self._interval
                    self._busy = False
                    while not (
                        self._stopping or self.depth >= self._wake_at or self._flush_req > self._flush_done
                    ):
                        left = wake - self._clock()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    self._busy = True
                    stopping = self._stopping
                    target = self._flush_req
                    deadline = self._shutdown_deadline if stopping else None
                    if target > self._flush_done:
                        deadline = self._flush_deadline if deadline is None else deadline
                ok = self._round(deadline)
                with self._cond:
                    self._last_ok = ok
                    self._flush_done = max(self._flush_done, target)
                    self._cond.notify_all()
                if stopping:
                    with self._cond:
                        leftovers = list(self._queue)
                        self._queue.clear()
                    self._give_up(leftovers)
                    if self._on_stop is not None:
                        self._call(self._on_stop)
                    return

    def _round(self, deadline: float | None) -> bool:
        """Prepare, then hand every queued batch to the handler (memory first, then overflow)."""
        ok = True
        if self._prepare is not None:
            ok = self._call(lambda: self._prepare(deadline) if self._prepare else True) is not False
        while True:
            if deadline is not None and self._clock() >= deadline:
                return False
            with self._cond:
                n = min(self._batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                if not batch and self._overflow is not None and len(self._overflow):
                    batch = self._overflow.pop(self._batch)
                self._inflight = batch
            if not batch:
                return ok
            started = self._clock()
            try:
                ok = self._handle(batch, deadline) is not False and ok
            except Exception as exc:  # a handler bug must not kill the worker
                ok = False
                counters.incr(f"export_errors.{self.name}", len(batch))
                _log.error("worker %s: handler raised %r; %d items lost", self.name, exc, len(batch))
            finally:
                self.last_export_seconds = self._clock() - started
                with self._cond:
                    self._inflight = None

    def _give_up(self, items: list[T]) -> None:
        if not items:
            return
        if self._abandon is not None:
            self._call(lambda: self._abandon(items) if self._abandon else None)
        else:
            counters.incr(self._drop_counter, len(items))
            counters.incr(f"dropped.{self.name}", len(items))
            on_drop = self._on_drop
            if on_drop is not None:
                for item in items:
                    self._call(functools.partial(on_drop, item))

    def _call(self, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except Exception as exc:
            _log.error("worker %s: %r", self.name, exc)
            return False


def _after_fork(ref: weakref.ref[Worker[Any]]) -> None:
    worker = ref()
    if worker is not None:
        worker._after_fork()
