"""The reading side of the resonance ledger: which files a ledger is, and their lines in order.

A ledger at ``memory/resonance_ledger.jsonl`` is that file plus its rotated predecessors
``memory/resonance_ledger.00001.jsonl``, ... (numbers sort); readers walk them oldest first.
Split from ``ledger.py`` (the appender), which re-exports every name here.

Standard library only, as ``ledger.py``: the appender uses the file naming, and the shell
emitter's start-up imports it (no ``typing`` or ``pathlib`` at import time).
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

__all__ = [
    "Skipped",
    "is_chained",
    "iter_raw",
    "ledger_files",
    "parse_line",
    "read_lines",
    "rotated_files",
    "rotated_name",
]


# --------------------------------------------------------------------------- files


def _stem_suffix(path: str) -> tuple[str, str, str]:
    folder, name = os.path.split(path)
    stem, suffix = os.path.splitext(name)
    return folder, stem, suffix


def rotated_name(path: str | os.PathLike[str], index: int) -> str:
    """``memory/resonance_ledger.jsonl`` → ``memory/resonance_ledger.00001.jsonl``."""
    folder, stem, suffix = _stem_suffix(os.fspath(path))
    return os.path.join(folder, f"{stem}.{index:05d}{suffix}")


def rotated_files(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """``(index, file)`` of the rotated files of the ledger at ``path``, oldest first."""
    folder, stem, suffix = _stem_suffix(os.fspath(path))
    head = stem + "."
    found: list[tuple[int, str]] = []
    try:
        entries = list(os.scandir(folder or "."))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if name.startswith(head) and name.endswith(suffix):
            middle = name[len(head) : len(name) - len(suffix)]
            if len(middle) >= 5 and middle.isdigit() and entry.is_file():
                found.append((int(middle), os.path.join(folder, name)))
    found.sort()
    return found


def ledger_files(path: str | os.PathLike[str]) -> list[Path]:
    """Every file of the ledger at ``path``, oldest first: the rotated ones, then ``path``."""
    from pathlib import Path

    p = os.fspath(path)
    files = [Path(f) for _, f in rotated_files(p)]
    if os.path.exists(p):
        files.append(Path(p))
    return files


# --------------------------------------------------------------------------- reading


def iter_raw(path: str | os.PathLike[str]) -> Iterator[tuple[Path, int, bytes]]:
    """``(file, line_number, raw_bytes)`` of every line of every file of the ledger, in order.

    ``raw_bytes`` has no trailing newline; a last line without one (torn) is included.
    """
    for file in ledger_files(path):
        with open(file, "rb") as f:
            for number, raw in enumerate(f, 1):
                yield file, number, raw.rstrip(b"\n")


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """One ledger line as a dict, or None if it is not a JSON object (torn, corrupt)."""
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def is_chained(obj: dict[str, Any]) -> bool:
    """``obj`` carries the chain fields the appender writes (``seq``, ``prev_hash``, ``hash``).

    A JSON line without them was not written by the ledger: someone inserted it. Readers skip
    it (and say so); ``verify`` calls it tampering.
    """
    return isinstance(obj.get("hash"), str) and isinstance(obj.get("seq"), int) and "prev_hash" in obj


class Skipped:
    """How many lines a reader left out, and why: ``unchained`` JSON lines, ``unreadable`` ones."""

    __slots__ = ("unchained", "unreadable")

    def __init__(self) -> None:
        self.unchained = 0
        self.unreadable = 0

    def parse(self, raw: bytes) -> dict[str, Any] | None:
        """One chained line as a dict; anything else counted here and None."""
        obj = parse_line(raw)
        if obj is None:
            self.unreadable += bool(raw.strip())
            return None
        if not is_chained(obj):
            self.unchained += 1
            return None
        return obj

    def note(self) -> str | None:
        """One line for the user when unchained lines were skipped, else None."""
        if not self.unchained:
            return None
        return (
            f"skipped {self.unchained} unchained line(s): JSON the ledger did not write "
            "(run 'membrane-otel ledger verify')"
        )


def read_lines(path: str | os.PathLike[str], skipped: Skipped | None = None) -> Iterator[dict[str, Any]]:
    """Every chained line of the ledger at ``path``, rotated files first.

    Torn and corrupt lines are skipped, and so are JSON lines without chain fields (inserted
    by someone else); pass ``skipped`` to learn how many.
    """
    counts = skipped if skipped is not None else Skipped()
    for _, _, raw in iter_raw(path):
        obj = counts.parse(raw)
        if obj is not None:
            yield obj
