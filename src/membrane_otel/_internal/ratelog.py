"""The one rate-limited logger: background paths report problems without flooding."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLogger:
    """Log each distinct problem at most once per ``interval`` seconds.

    A problem is its message format, or the ``key`` given to :meth:`log`. The export path's
    own failures must be visible but must not become an error storm of their own (a bus
    that is down for an hour must not write a line per batch), nor recurse into the
    pipeline: the logger used should not propagate into the OTel handler, which
    ``membrane_otel`` loggers don't.
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _ok(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                return False
            if len(self._last) > 256:
                self._last.clear()
            self._last[key] = now
            return True

    def log(self, level: int, key: str | None, msg: str, *args: Any, exc_info: bool = False) -> None:
        """``msg`` at ``level`` unless the problem ``key`` (default: ``msg``) was logged lately."""
        if self._ok(key or msg):
            self._logger.log(level, msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, None, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, None, msg, *args)
