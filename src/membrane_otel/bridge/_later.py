"""Redaction after the read: the texts a request's records hold for the first time, proven
clean together, each redacted alone only when the proof fails.

:func:`membrane_otel.bridge._otlp.logs_from_flat` converts each distinct encoded attribute of
a request once. Most are shared by its records (service, script, stack trace) and redacted
once; but a record's own values (its id, a message with a number in it) are new every time,
and the redactor's gate pass costs each of them as much as a shared one. So the decoder
leaves new texts under keys that name no secret as they were read, and redacts them here,
after the loop: offered to the redactor in groups first (one pass over a group proves every
text in it unchanged), then each through the redactor as before, most answered from what
the group proved. A text that does change (a secret) is rewritten into every record holding
it, that record's attributes read again in order, so the last of a repeated key still wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["Scrub", "redact_later"]


class Scrub(Protocol):
    """What the decoder needs of the bridge's redactor (:class:`membrane_otel.bridge._core._Scrub`)."""

    def pair(self, key: str, value: Any) -> Any: ...

    def later(self, key: str, value: str) -> bool:
        """True when ``pair(key, value)`` may wait for :meth:`prefetch` (a text not seen yet,
        under a key that names no secret)."""
        ...

    def prefetch(self, texts: Iterable[Any]) -> None: ...


def redact_later(
    records: list[Any],
    kept: list[Any],
    later: list[bytes],
    pairs: dict[bytes, tuple[str, Any]],
    scrub: Scrub,
    reread: Callable[[bytes], tuple[str, Any]],
) -> None:
    """Redact the values of the encoded attributes ``later`` (their ``pairs`` entries, as read).

    ``records`` are the decoded records (each with ``attributes``), ``kept`` their protobufs
    (each with its encoded ``attributes``), in the same order; ``reread`` converts and redacts
    an encoded attribute that ``pairs`` does not hold (a list or dict, the record's own)."""
    scrub.prefetch(pairs[raw][1] for raw in later)
    dirty: set[bytes] = set()
    for raw in later:
        key, value = pairs[raw]
        done = scrub.pair(key, value)
        if done is not value and done != value:
            pairs[raw] = (key, done)
            dirty.add(raw)
    if not dirty:
        return
    for log, r in zip(records, kept, strict=True):
        raws = list(r.attributes)
        if dirty.isdisjoint(raws):
            continue
        attrs: dict[str, Any] = {}
        for raw in raws:
            key, value = pairs.get(raw) or reread(raw)
            attrs[key] = value
        log.attributes = attrs
