"""The resonance ledger: append-only, hash-chained JSONL.

Each line is one flat JSON object with ``event`` first and ``seq``, ``prev_hash``, ``hash``
last. ``hash`` is the SHA-256 of the line's own bytes up to (not including) the
``,"hash":…`` suffix, and that text includes ``prev_hash``: so editing, deleting or
reordering any line breaks the chain at that line.

Appends from many threads and processes are safe: a batch is serialised outside the lock,
then, under an exclusive ``flock`` on a sidecar lock file, the tail is read (for the last
``seq`` and ``hash``), the chain fields are added and the whole batch goes out in one
``write`` on an ``O_APPEND`` descriptor.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
_HASH_SUFFIX_LEN = len(',"hash":"') + 64 + len('"}')


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def line_hash(body_without_hash: str) -> str:
    return hashlib.sha256(body_without_hash.encode("utf-8")).hexdigest()


def split_hash(raw: str) -> tuple[str, str] | None:
    """``(body_without_hash, hash)`` of a chained line, or None if it has no hash suffix."""
    raw = raw.rstrip("\n")
    if len(raw) < _HASH_SUFFIX_LEN or not raw.endswith('"}'):
        return None
    cut = len(raw) - _HASH_SUFFIX_LEN
    if raw[cut : cut + 9] != ',"hash":"':
        return None
    return raw[:cut], raw[cut + 9 : -2]


class TornTailError(ValueError):
    """The ledger's last line is incomplete (a writer died mid-write)."""


class Ledger:
    """An appender for one ledger file; share one per path per process."""

    def __init__(self, path: str | os.PathLike[str], *, dedupe_window: int = 65536) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.Lock()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._window = dedupe_window
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._pid = os.getpid()

    # -- file handles -----------------------------------------------------------------

    def _open(self) -> tuple[int, int]:
        if self._fd is None or self._lock_fd is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd, self._lock_fd

    def close(self) -> None:
        with self._thread_lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None

    # -- the chain ----------------------------------------------------------------------

    def _tail(self) -> tuple[int, str, bool]:
        """Last ``(seq, hash)`` of the file, and whether the file ends with a torn line."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0, GENESIS, False
        if size == 0:
            return 0, GENESIS, False
        with open(self.path, "rb") as f:
            chunk = 4096
            data = b""
            pos = size
            while pos > 0:
                step = min(chunk, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
                lines = data.split(b"\n")
                # need one complete line before the last (possibly torn) segment
                if len(lines) >= 3 or (pos == 0 and lines):
                    break
                chunk *= 2
        torn = not data.endswith(b"\n")
        candidates = [ln for ln in data.split(b"\n") if ln.strip()]
        if torn and candidates:
            candidates = candidates[:-1]
        for raw in reversed(candidates):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict) and "hash" in obj:
                return int(obj.get("seq", 0)), str(obj["hash"]), torn
        return 0, GENESIS, torn

    def append_many(self, records: Sequence[dict[str, Any]]) -> int:
        """Append records as chained lines; returns how many were written.

        Records carrying a ``record_id`` seen recently (this process) are skipped, which
        makes replays and re-deliveries idempotent.
        """
        with self._thread_lock:
            fresh: list[dict[str, Any]] = []
            for rec in records:
                rid = rec.get("record_id")
                if isinstance(rid, str):
                    if rid in self._recent:
                        continue
                    self._recent[rid] = None
                    if len(self._recent) > self._window:
                        self._recent.popitem(last=False)
                fresh.append(rec)
            if not fresh:
                return 0
            # Serialise outside the file lock: the lock is held only for tail + write.
            bodies = [_dumps({k: v for k, v in rec.items() if k not in ("seq", "prev_hash", "hash")}) for rec in fresh]
            fd, lock_fd = self._open()
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                seq, prev, torn = self._tail()
                out: list[str] = []
                if torn:
                    # A torn last line (power loss) stays where it is, visible to verify;
                    # we start on a fresh line so it is never merged with ours.
                    out.append("\n")
                for body in bodies:
                    seq += 1
                    chained = f'{body[:-1]},"seq":{seq},"prev_hash":"{prev}"' if body != "{}" else (
                        f'{{"seq":{seq},"prev_hash":"{prev}"'
                    )
                    digest = line_hash(chained)
                    out.append(f'{chained},"hash":"{digest}"}}\n')
                    prev = digest
                data = "".join(out).encode("utf-8")
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
            return len(bodies)


def read_lines(path: str | os.PathLike[str]) -> Iterable[dict[str, Any]]:
    """Every parseable line of one ledger file (corrupt lines skipped)."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8", errors="replace") as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


_ledgers: dict[Path, Ledger] = {}
_ledgers_lock = threading.Lock()


def ledger_for(path: str | os.PathLike[str]) -> Ledger:
    """The process's shared :class:`Ledger` for ``path``."""
    key = Path(path).absolute()
    with _ledgers_lock:
        if key not in _ledgers:
            _ledgers[key] = Ledger(key)
        return _ledgers[key]
