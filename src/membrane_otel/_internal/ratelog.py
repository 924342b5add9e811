"""Error logging for background paths that cannot flood: one line per problem per interval."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class RateLimitedLogger:
    """Log each distinct message format at most once per ``interval`` seconds.

    The export path's own failures must be visible but must not become an error storm
    of their own (nor recurse into the pipeline: the logger used should not propagate
    into the OTel handler, which ``membrane_otel`` loggers don't).
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def _ok(self, msg: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(msg)
            if last is not None and now - last < self._interval:
                return False
            if len(self._last) > 256:
                self._last.clear()
            self._last[msg] = now
            return True

    def error(self, msg: str, *args: Any) -> None:
        if self._ok(msg):
            self._logger.error(msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        if self._ok(msg):
            self._logger.warning(msg, *args)
