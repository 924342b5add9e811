"""Keep the application's console output once an OTel handler sits on the root logger.

Python prints WARNING+ records through ``logging.lastResort`` only when a record finds
no handler at all. The OTel logging handler on the root logger counts as one, so an app
that never configured logging would go silent on the console. We add a stand-in for
``lastResort`` — and step it aside whenever the app configures logging itself
(``basicConfig`` / ``dictConfig`` / ``fileConfig``), as the OTel handler does, so the
app's own set-up behaves exactly as without us.
"""

from __future__ import annotations

import functools
import logging
import logging.config
import sys
from collections.abc import Callable
from typing import Any


class FallbackConsoleHandler(logging.Handler):
    """``lastResort``'s behaviour: WARNING+, bare message, to the current stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


_handler: FallbackConsoleHandler | None = None


def _is_otel(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("opentelemetry")


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(fn, "_membrane_wrapped", False):
        return fn

    @functools.wraps(fn)
    def configured(*args: Any, **kwargs: Any) -> Any:
        root = logging.getLogger()
        ours = _handler is not None and _handler in root.handlers
        if ours:
            root.removeHandler(_handler)  # type: ignore[arg-type]
        try:
            return fn(*args, **kwargs)
        finally:
            # Put the stand-in back only if the app's configuration added no console of its own.
            if ours and not any(not _is_otel(h) for h in root.handlers):
                root.addHandler(_handler)  # type: ignore[arg-type]

    configured._membrane_wrapped = True  # type: ignore[attr-defined]
    return configured


def keep_console_output() -> None:
    """Install the stand-in if the root logger has no console of its own yet."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = FallbackConsoleHandler()
        logging.basicConfig = _wrap(logging.basicConfig)
        logging.config.dictConfig = _wrap(logging.config.dictConfig)
        logging.config.fileConfig = _wrap(logging.config.fileConfig)
    if not any(not _is_otel(h) for h in root.handlers):
        root.addHandler(_handler)
