"""The ledger events API (``seeds/001``): ``from membrane_otel.events import emit_event``.

The seed's ``from orchestrator.event_emitter import emit_event`` maps to this module; the
implementation lives in :mod:`membrane_otel.ledger._events`.

``python -m membrane_otel.events`` is the seed's module self-test: it writes one
``test_event`` to the configured ledger and prints the line it wrote (exit 0), or says why
it could not (exit 1). ``python -m membrane_otel.events EVENT '{"k": 1}'`` writes that event.
"""

from __future__ import annotations

import json
import sys

from membrane_otel.ledger._events import (
    append_ledger,
    emit_alert,
    emit_event,
    emit_monitoring_snapshot,
    emit_system_event,
    emit_task_lifecycle,
)

__all__ = [
    "append_ledger",
    "emit_alert",
    "emit_event",
    "emit_monitoring_snapshot",
    "emit_system_event",
    "emit_task_lifecycle",
]

USAGE = "usage: python -m membrane_otel.events [EVENT [PAYLOAD_JSON]]   (no arguments: self-test)"


def _main(argv: list[str]) -> int:
    import os

    from membrane_otel.ledger._reader import read_lines
    from membrane_otel.settings import ConfigError, get_settings

    if argv and argv[0] in ("-h", "--help") or len(argv) > 2:
        print(USAGE)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        settings = get_settings()
    except ConfigError as exc:
        print(f"membrane-otel: {exc}", file=sys.stderr)
        return 2
    path = settings.ledger_path
    event = argv[0] if argv else "test_event"
    try:
        payload = json.loads(argv[1]) if len(argv) > 1 else {"test": True, "pid": os.getpid()}
    except json.JSONDecodeError as exc:
        print(f"membrane-otel: PAYLOAD_JSON is not JSON: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    if not isinstance(payload, dict):
        print(f"membrane-otel: PAYLOAD_JSON must be an object\n{USAGE}", file=sys.stderr)
        return 2
    if not emit_event(event, payload):
        print(f"membrane-otel: {event} was not written to {path} (OTEL_SDK_DISABLED=true?)", file=sys.stderr)
        return 1
    if settings.event_async:
        print(f"{event} buffered (AGI_EVENT_ASYNC): written to {path} at exit")
        return 0
    last = None
    for line in read_lines(path):
        last = line
    if last is None or last.get("event") != event:
        print(f"membrane-otel: {event} not found at the end of {path}", file=sys.stderr)
        return 1
    print(f"wrote to {path}:")
    print(json.dumps(last, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
