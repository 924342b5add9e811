"""What an HRM span carries, made safe: summaries, metadata and exceptions through the
configured redactor, cut to the seed's limits, as values OTel accepts as attributes."""

from __future__ import annotations

import reprlib
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, Status, StatusCode

from membrane_otel._internal.tables import attr_value, truncate
from membrane_otel.spans._layers import SUMMARY_LIMIT

if TYPE_CHECKING:
    from membrane_otel.logs._redact import Redactor

# Only this much of a long input is scrubbed: what survives truncation lies far inside it,
# and a secret cut at the window's edge is still caught (the rules run to end-of-text).
_REDACT_WINDOW = 4096
_STACK_LIMIT = 16 * 1024
# Summaries repeat ("WriteApprovalGate", "written"); remembering short ones skips the scrub.
_CACHE_MAX, _CACHE_KEY_MAX = 2048, 256
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = SUMMARY_LIMIT
AttrValue = str | bool | int | float | list[str] | list[bool] | list[int] | list[float]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        # Containers are abbreviated rather than rendered whole and then cut to 100 chars.
        if isinstance(value, list | tuple | dict | set | frozenset):
            return _repr.repr(value)
        return str(value)
    except Exception:  # a broken __str__ must not break the traced operation
        return f"<unprintable {type(value).__name__}>"


def _attr_value(value: Any) -> AttrValue:
    return attr_value(value)  # type: ignore[return-value]  # one of AttrValue's forms


class _Scrubber:
    """Summaries and metadata through the configured redactor, then cut to 100 chars."""

    __slots__ = ("_cache", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._cache: dict[str, str] = {}

    def summary(self, value: Any) -> str:
        if value is None:
            return ""
        text = _text(value)
        if not text:
            return ""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        # Redact before truncating, so the scrubber sees the whole secret.
        out = self._redactor(text if len(text) <= _REDACT_WINDOW else text[:_REDACT_WINDOW])
        if len(out) > SUMMARY_LIMIT:
            out = truncate(out, SUMMARY_LIMIT, marker="…")
        if len(text) <= _CACHE_KEY_MAX:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[text] = out
        return out

    def text(self, value: str) -> str:
        return self._redactor(value)

    def metadata(self, metadata: Mapping[str, Any]) -> dict[str, AttrValue]:
        redactor = self._redactor
        out: dict[str, AttrValue] = {}
        for raw_key, value in metadata.items():
            if value is None:
                continue
            key = str(raw_key)
            name = f"hrm.meta.{key}"
            if redactor.is_sensitive_key(key):
                out[name] = "<REDACTED>"  # a bare value has no context for the text rules
            elif isinstance(value, bool | int | float):
                out[name] = value
            elif isinstance(value, str):
                out[name] = redactor(value)
            else:
                out[name] = _attr_value(redactor.redact_value(value))
        return out


def _record_exception(span: Span, scrub: _Scrubber, exc: BaseException, tb: TracebackType | None) -> None:
    """The exception event, redacted (``span.record_exception`` would export the raw text)."""
    message = scrub.text(_text(exc))
    stack = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(stack) > _STACK_LIMIT:
        stack = "…" + stack[-_STACK_LIMIT:]  # the innermost frames and the message are at the end
    span.add_event(
        "exception",
        {
            "exception.type": type(exc).__qualname__,
            "exception.message": message,
            "exception.stacktrace": scrub.text(stack),
            "exception.escaped": True,
        },
    )
    # The description is the bare message: the ledger line's metadata.error is the seed's str(e).
    span.set_status(Status(StatusCode.ERROR, message or type(exc).__name__))
