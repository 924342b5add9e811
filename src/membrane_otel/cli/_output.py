"""What the ledger commands share: terminal styling, event colours, the id columns, line parsing.

Standard library only, like the rest of ``membrane-otel ledger``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

Line = dict[str, Any]

_IDS = (("task_id", "task"), ("persona_id", "persona"), ("session_id", "session"))


class _Style:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text


def _style(args: argparse.Namespace, stream: TextIO) -> _Style:
    if args.color == "always":
        return _Style(True)
    if args.color == "never" or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return _Style(False)
    return _Style(stream.isatty())


def _event_colour(event: str) -> str:
    if any(w in event for w in ("fail", "error", "rollback", "anomaly")):
        return "31"  # red
    if any(w in event for w in ("alert", "warn", "threshold", "rejected")):
        return "33"  # yellow
    if any(w in event for w in ("completed", "_end", "resolved", "added")):
        return "32"  # green
    if event.startswith("narrative."):
        return "35"  # magenta
    return "36"  # cyan


def _parse(raw: bytes) -> Line | None:
    from membrane_otel.ledger._reader import parse_line

    return parse_line(raw)
