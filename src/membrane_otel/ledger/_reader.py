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


def read_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every parseable line of the ledger at ``path`` (rotated files first; corrupt lines skipped)."""
    for _, _, raw in iter_raw(path):
        obj = parse_line(raw)
        if obj is not None:
            yield obj
