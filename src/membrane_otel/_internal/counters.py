"""Process-wide pipeline counters, the numbers behind ``get_metrics()``.

Every stage of the pipeline reports what happened to each record here, so that
``produced == exported + spooled + dropped + suppressed + rejected`` can be checked.
Counting is a dict update under a lock: cheap enough for the application thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_lock = threading.Lock()
_counts: dict[str, int] = {}
_gauges: dict[str, Callable[[], int]] = {}


def incr(name: str, n: int = 1) -> None:
    """Add ``n`` to the counter ``name``."""
    with _lock:
        _counts[name] = _counts.get(name, 0) + n


def get(name: str) -> int:
    with _lock:
        return _counts.get(name, 0)


def register_gauge(name: str, read: Callable[[], int]) -> None:
    """Register a live reading (a queue depth, a spool size) shown by ``snapshot()``.

    Several sources may register under one name; the latest wins, which is what a
    re-configured pipeline wants.
    """
    with _lock:
        _gauges[name] = read


def snapshot() -> dict[str, int]:
    """All counters and gauge readings, by name."""
    with _lock:
        out = dict(_counts)
        gauges = list(_gauges.items())
    for name, read in gauges:
        try:
            out[name] = int(read())
        except Exception:  # a gauge of a closed component reads as 0, never raises
            out[name] = 0
    return out


def reset() -> None:
    """Zero every counter (tests, and the child after ``fork``)."""
    with _lock:
        _counts.clear()


def get_metrics() -> dict[str, int]:
    """Pipeline counters: ``dropped_logs``, ``dropped_count``, ``spool_writes``, ``published``, …

    ``queue_depth`` is the sum of every queue's depth.
    """
    snap = snapshot()
    depth = sum(v for k, v in snap.items() if k.startswith("queue_depth"))
    base = {
        "produced_logs": 0,
        "exported": 0,
        "exported_spans": 0,
        "export_failed": 0,
        "dropped_logs": 0,
        "dropped_spans": 0,
        "dropped_count": 0,
        "envelopes": 0,
        "published": 0,
        "spool_writes": 0,
        "spool_replayed": 0,
        "suppressed": 0,
        "rejected": 0,
    }
    base.update(snap)
    base["queue_depth"] = depth
    return base


if hasattr(os, "register_at_fork"):
    # A forked child starts its own accounting: the parent's records are the parent's.
    os.register_at_fork(after_in_child=reset)
