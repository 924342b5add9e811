"""The ledger line's shape for records that never were OTel records: one builder.

:func:`event_line` gives the line :func:`membrane_otel.translate._core.log_line` gives an
event, for the paths that do not go through OTel (the shell emitter; ``emit_event`` with no
OTel logs pipeline). Both put payload fields with :func:`put`. Standard library only, so
the shell emitter can build its line without importing the translation's dependencies.
"""

from __future__ import annotations

from membrane_otel._internal.tables import ID_KEYS, RESERVED, iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


def put(line: dict[str, Any], key: str, value: Any) -> None:
    """A payload field onto a line; one that would overwrite the line's own key is ``payload_<key>``."""
    line[f"payload_{key}" if key in RESERVED else key] = value


def event_line(
    event: str,
    payload: Mapping[str, Any],
    *,
    time_ns: int,
    record_id: str,
    ids: Mapping[str, Any] | None = None,
    service: str | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
) -> dict[str, Any]:
    """A ledger event line built directly, in the shape ``translate.log_line`` gives an event.

    For the paths that do not go through OTel: the shell emitter, and ``emit_event`` when no
    OTel logs pipeline is configured. A test holds the two shapes equal.
    """
    line: dict[str, Any] = {"event": event, "ts": iso(time_ns), "ts_unix": round(time_ns / 1e9, 6)}
    merged = {**payload, **{k: v for k, v in (ids or {}).items() if v is not None}}
    for key in ID_KEYS:
        if key in merged:
            line[key] = merged[key]
    line["otel_trace_id"] = trace_id
    line["otel_span_id"] = span_id
    for key, value in merged.items():
        if key in ID_KEYS:
            continue
        put(line, key, value)
    line["service"] = service
    line["record_id"] = record_id
    return line
