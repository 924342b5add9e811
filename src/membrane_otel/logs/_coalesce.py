"""Coalescing identical errors before the expensive work.

An error storm is mostly the same error: one call site failing in a loop. Rendering,
redacting and translating each copy costs the process far more than the caller's capture
(see docs/PERFORMANCE.md), and a background thread doing that work falls behind and drops.
So an error whose fingerprint and dedupe key match one still waiting to be rendered is not
queued again: the waiting one counts it (``occurrences``, ``last_ts``) and is rendered
once, as one ledger line and one envelope that say how many errors they stand for.

The window is the time the first one waits in the queue (the L2 worker's interval, capped
by ``window_s``): short enough that a line is not late, long enough that a storm of one
error costs a handful of lines a second. Every error is a line or a count on one:
``l2_errors == l2 records + coalesced`` (both in ``get_metrics()``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

from membrane_otel._internal import counters


class Coalescible(Protocol):
    key: str
    time_ns: int
    last_ns: int
    occurrences: int


class Coalescer:
    """Keys of the errors waiting to be rendered; a twin within the window is counted on them."""

    def __init__(self, window_s: float = 1.0) -> None:
        self._window_ns = int(window_s * 1e9)
        self._open: dict[str, Coalescible] = {}
        self._lock = threading.Lock()

    def absorb(self, item: Coalescible) -> bool:
        """True when ``item`` was counted on a waiting twin (and must not be queued)."""
        with self._lock:
            twin = self._open.get(item.key)
            if twin is not None and item.time_ns - twin.time_ns <= self._window_ns:
                twin.occurrences += 1
                twin.last_ns = max(twin.last_ns, item.time_ns)
                counters.incr("coalesced")
                return True
            self._open[item.key] = item
            return False

    def close(self, item: Coalescible) -> None:
        """The worker took ``item``: later twins start a new line."""
        with self._lock:
            if self._open.get(item.key) is item:
                del self._open[item.key]

    def close_all(self, items: Sequence[Coalescible]) -> None:
        with self._lock:
            for item in items:
                if self._open.get(item.key) is item:
                    del self._open[item.key]

    def clear(self) -> None:
        with self._lock:
            self._open.clear()


class RenderCache:
    """Traceback text by captured exception (frames, type, message, chain): an error that
    repeats is rendered once, and one rendering serves the console and the OTel record."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._texts: dict[Hashable, str] = {}

    def text(self, captured: Hashable, render: Callable[[], str]) -> str:
        text = self._texts.get(captured)
        if text is None:
            text = render()
            if len(self._texts) >= self._size:
                with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                    del self._texts[next(iter(self._texts))]  # the oldest: first in, first out
            self._texts[captured] = text
        return text
