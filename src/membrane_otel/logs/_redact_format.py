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

from membrane_otel.logs._redact import Redactor, configured_redactor


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

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return (self._redactor or configured_redactor())(text)


def redacted_record(record: logging.LogRecord, redactor: Redactor | None = None) -> logging.LogRecord:
    """A copy of ``record`` whose message, traceback and stack are redacted text, for a handler
    whose formatter is not ours (``logging.lastResort``); the record itself is left as it is."""
    r = redactor or configured_redactor()
    copy = logging.makeLogRecord(record.__dict__)
    copy.msg, copy.args = r(record.getMessage()), None
    text = record.exc_text
    if record.exc_info and not text:
        text = _PLAIN.formatException(record.exc_info)
    copy.exc_info, copy.exc_text = None, r(text) if text else None
    copy.stack_info = r(record.stack_info) if record.stack_info else None
    return copy


_PLAIN = logging.Formatter()
