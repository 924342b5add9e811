"""A ``logging.Formatter`` that redacts what it renders: message, exception text and stack.

Our console and stderr handlers (``setup_l2_logger``'s console, the fallback that stands in
for ``logging.lastResort``, the distro's own diagnostics) print with it, so an exception
message such as ``refused api_key=sk-live-…`` never reaches a terminal or a CI log. It redacts
the whole rendered text, after ``logging.Formatter`` has added the traceback, so the policy is
the same as on every other exit (:func:`membrane_otel.logs._redact.configured_redactor`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from membrane_otel.logs._redact import Redactor, configured_redactor, redact_capped

_MEMORY_MAX = 64  # distinct tracebacks remembered per formatter; cleared when full


class RedactingFormatter(logging.Formatter):
    """``logging.Formatter``, then the redactor over the result."""

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        *,
        redactor: Redactor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fmt, datefmt, style, **kwargs)
        self._redactor = redactor
        self._memory: dict[str, str] = {}
        self._memory_of: Redactor | None = None

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, with each part redacted on its own: the line (message and
        # every field the format names) each time, the traceback and stack through a small
        # memory, because in an error storm they are the same text every time while the
        # line's timestamp is not. Every part of the output has been through the redactor.
        redactor = self._redactor or configured_redactor()
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = redact_capped(self.formatMessage(record), redactor)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = text + ("" if text.endswith("\n") else "\n") + self._remembered(redactor, record.exc_text)
        if record.stack_info:
            stack = self.formatStack(record.stack_info)
            text = text + ("" if text.endswith("\n") else "\n") + self._remembered(redactor, stack)
        return text

    def _remembered(self, redactor: Redactor, text: str) -> str:
        if redactor is not self._memory_of:
            self._memory.clear()
            self._memory_of = redactor
        done = self._memory.get(text)
        if done is None:
            done = redactor(text)
            if len(self._memory) >= _MEMORY_MAX:
                self._memory.clear()
            self._memory[text] = done
        return done


def redacted_record(record: logging.LogRecord, redactor: Redactor | None = None) -> logging.LogRecord:
    """A copy of ``record`` whose message, traceback and stack are redacted text, for a handler
    whose formatter is not ours (``logging.lastResort``); the record itself is left as it is."""
    r = redactor or configured_redactor()
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg, copy.args = redact_capped(record.getMessage(), r), None
    text = record.exc_text
    if record.exc_info and not text:
        text = _PLAIN.formatException(record.exc_info)
    copy.exc_info, copy.exc_text = None, r(text) if text else None
    copy.stack_info = r(record.stack_info) if record.stack_info else None
    return copy


_PLAIN = logging.Formatter()
