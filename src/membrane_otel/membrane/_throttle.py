"""Storm throttling for the membrane path: per signal type and per fingerprint, with jitter.

``seeds/000`` limits what reaches the membrane to 1 per 15 s per signal type and 1 per
10 s per fingerprint, each window stretched or shrunk by up to ±10 % so that many processes
hitting the same error do not all retry in step. Nothing is lost without a count: a
:class:`Decision` that lets a record through says how many were held back before it, and
the envelope carries that number. (The ledger keeps every record; only the membrane is
throttled.)

One lock, a dict lookup or two and an ``OrderedDict`` move per call: O(1). Memory is bounded:
at most ``max_keys`` fingerprints are remembered, least recently seen forgotten first.
"""

from __future__ import annotations

import os
import random as _random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["Decision", "Throttle"]

Reason = Literal["ok", "fingerprint", "type"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a record may go out, and what it should carry if it does."""

    allowed: bool
    # When allowed: records of this (signal type, fingerprint) suppressed since the last one
    # of it went out; the envelope that goes out carries this number.
    held_back: int = 0
    # When allowed: records of this signal type, any fingerprint, suppressed since the last
    # one of the type went out. Every suppressed record is counted in exactly one of these,
    # so the sum over envelopes of ``held_back_type`` accounts for all of them.
    held_back_type: int = 0
    # Which window closed the door ("ok" when allowed).
    reason: Reason = "ok"


class _Window:
    __slots__ = ("held", "open_at")

    def __init__(self, open_at: float, held: int = 0) -> None:
        self.open_at = open_at  # the clock reading from which the next record may pass
        self.held = held  # suppressed since the last one that passed


_OPEN = float("-inf")
_instances: weakref.WeakSet[Throttle] = weakref.WeakSet()


class Throttle:
    """``admit(signal_type, fingerprint)``: may this record go out now?

    ``type_interval`` (15 s) applies to each signal type, ``type_intervals`` overrides it
    per type (0 means unthrottled); ``fingerprint_interval`` (10 s) applies to each
    (signal type, fingerprint) pair. A record passes only when both its windows are open,
    and a pass closes both for one interval times a factor drawn in ``[1-jitter, 1+jitter)``.
    An empty or ``None`` fingerprint is limited by its type only.
    """

    def __init__(
        self,
        *,
        type_interval: float = 15.0,
        fingerprint_interval: float = 10.0,
        jitter: float = 0.1,
        type_intervals: Mapping[str, float] | None = None,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        if type_interval < 0 or fingerprint_interval < 0:
            raise ValueError("intervals must not be negative")
        self._type_interval = type_interval
        self._type_intervals = dict(type_intervals or {})
        self._fp_interval = fingerprint_interval
        self._jitter = jitter
        self._max_keys = max_keys
        self._clock = clock
        self._random = random
        self._lock = threading.Lock()
        self._types: OrderedDict[str, _Window] = OrderedDict()
        self._fps: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._suppressed = 0
        self._forgotten = 0
        _instances.add(self)

    def _next_open(self, now: float, interval: float) -> float:
        return now + interval * (1.0 + self._jitter * (2.0 * self._random() - 1.0))

    def admit(self, signal_type: str, fingerprint: str | None = None) -> Decision:
        """Decide for one record, and remember it (suppressed records are counted)."""
        type_interval = self._type_intervals.get(signal_type, self._type_interval)
        with self._lock:
            now = self._clock()
            fps = self._fps
            fkey = (signal_type, fingerprint) if fingerprint else None
            fwin = None
            if fkey is not None:
                fwin = fps.get(fkey)
                if fwin is not None:
                    fps.move_to_end(fkey)
            twin = self._types.get(signal_type)
            if twin is not None:
                self._types.move_to_end(signal_type)

            if fwin is not None and now < fwin.open_at:
                reason: Reason = "fingerprint"
            elif twin is not None and now < twin.open_at:
                reason = "type"
            else:
                held = 0
                if fkey is not None and self._fp_interval > 0:
                    if fwin is None:
                        fwin = self._remember_fp(fkey, now)
                    held, fwin.held = fwin.held, 0
                    fwin.open_at = self._next_open(now, self._fp_interval)
                elif fwin is not None:
                    held, fwin.held = fwin.held, 0
                held_type = 0
                if twin is not None:
                    held_type, twin.held = twin.held, 0
                if type_interval > 0:
                    if twin is None:
                        twin = self._remember_type(signal_type)
                    twin.open_at = self._next_open(now, type_interval)
                self._expire(now)
                return Decision(True, held, held_type)

            # Suppressed: count it against both keys, so whichever goes out next reports it.
            self._suppressed += 1
            if fkey is not None:
                if fwin is None:
                    fwin = self._remember_fp(fkey, now)
                fwin.held += 1
            if twin is None:
                twin = self._remember_type(signal_type)
            twin.held += 1
            self._expire(now)
            return Decision(False, reason=reason)

    def _remember_fp(self, key: tuple[str, str], now: float) -> _Window:
        win = _Window(_OPEN)
        self._fps[key] = win
        if len(self._fps) > self._max_keys:
            _, old = self._fps.popitem(last=False)
            self._forgotten += old.held
        return win

    def _remember_type(self, signal_type: str) -> _Window:
        win = _Window(_OPEN)
        self._types[signal_type] = win
        if len(self._types) > self._max_keys:
            _, old = self._types.popitem(last=False)
            self._forgotten += old.held
        return win

    def _expire(self, now: float) -> None:
        # A window that is open again and holds no count is the same as no window: drop a
        # couple from the least-recently-used end per call, so idle keys go away in O(1).
        for _ in range(2):
            if not self._fps:
                return
            key, win = next(iter(self._fps.items()))
            if win.held or now < win.open_at:
                return
            del self._fps[key]

    @property
    def suppressed(self) -> int:
        """Records refused since creation."""
        with self._lock:
            return self._suppressed

    @property
    def forgotten(self) -> int:
        """Held-back counts dropped with a key evicted by the ``max_keys`` bound (never reported)."""
        with self._lock:
            return self._forgotten

    def pending(self) -> int:
        """Suppressed records not yet reported by an envelope of their type."""
        with self._lock:
            return sum(w.held for w in self._types.values())

    def drain_pending(self) -> dict[str, int]:
        """Suppressed-and-unreported counts per signal type, reset to zero (for the summary)."""
        with self._lock:
            held = {k: w.held for k, w in self._types.items() if w.held}
            for win in self._types.values():
                win.held = 0
            for fwin in self._fps.values():
                fwin.held = 0
            return held

    def __len__(self) -> int:
        """Fingerprints currently remembered."""
        with self._lock:
            return len(self._fps)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()


def _reinit_locks() -> None:
    for throttle in list(_instances):
        throttle._after_fork()


if hasattr(os, "register_at_fork"):
    # A fork while another thread held the lock would leave the child's copy locked forever.
    os.register_at_fork(after_in_child=_reinit_locks)
