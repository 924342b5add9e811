"""What the commands that print records share: terminal styling, event colours, the id columns,
line parsing (unchained lines skipped and counted), and escaping of what records carry.

A record's text is someone else's: a log message, a stimulus, a line anybody could append.
Printed as it is, an ``ESC [`` sequence in it moves the cursor, rewrites earlier lines, sets
the window title or worse. Every command that prints records shows control characters (C0,
DEL, C1) and the bidirectional overrides escaped (``\x1b``, ``\u202e``) instead.

Standard library only, like the rest of ``membrane-otel ledger``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from membrane_otel.ledger._reader import Skipped

Line = dict[str, Any]

# C0 controls, DEL, C1 controls (U+009B is a one-character CSI on some terminals) and the
# bidi overrides that reorder what the reader sees (CVE-2021-42574, "Trojan Source").
_UNSAFE = [*range(0x20), *range(0x7F, 0xA0), 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ESCAPES = {c: _NAMED.get(c) or (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}
# In valid JSON these can only be inside strings, where \uXXXX means the same character.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _UNSAFE if c >= 0x7F}


def escape(text: str) -> str:
    """``text`` with every control and bidi-override character shown as an escape."""
    return text.translate(_ESCAPES)


def json_safe(text: str) -> str:
    """A JSON text with DEL, C1 and bidi overrides as ``\\uXXXX`` (same JSON, harmless to print).

    (JSON encoders escape C0 already, and a line with a raw C0 byte does not parse.)
    """
    return text.translate(_JSON_ESCAPES)


# What this command's readers left out; :func:`report_skipped` says so on stderr.
skipped = Skipped()


def report_skipped(command: str) -> None:
    """Say on stderr how many unchained lines this command skipped; start counting afresh."""
    note = skipped.note()
    if note:
        print(f"membrane-otel {command}: {note}", file=sys.stderr)
    skipped.__init__()  # type: ignore[misc]  # one CLI call may follow another in a process


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
    """A chained ledger line as a dict; unchained and unreadable lines counted in :data:`skipped`."""
    return skipped.parse(raw)
