"""The bridge's memory of what it wrote: record ids, kept across restarts, bounded by time and bytes.

A Collector retries a batch whose answer it did not get, seconds or minutes later, after
any number of other records; a window of the last N ids forgets it in one busy minute.
Here the ids written go to segment files, one per ``segment_s`` of wall time, under the
bridge's state directory; a segment is forgotten when it is older than ``retention_s`` or
when the segments together pass ``max_bytes`` (oldest first). On start the retained
segments are read back, so a retry that arrives after a restart is still recognised.

In memory an id is its 64-bit hash: ~70 bytes an id in a set, so the default 32 MiB of ids on disk (~1.2 M ids) hold ~90 MiB at most.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["SeenIds"]

_PREFIX = "seen-"


def _key(rid: str) -> int:
    # The str hash: 64 bits, computed again from the files' text on every start, so its
    # per-process seed does not matter.
    return hash(rid)


class SeenIds:
    """Thread-safe set of written record ids, persisted in time segments."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        *,
        retention_s: float = 3600.0,
        max_bytes: int = 32 * 1024 * 1024,
        segment_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # None: remembered in memory only (tests, embedding), still bounded by time and bytes.
        self.directory = Path(directory) if directory is not None else None
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.segment_s = segment_s
        self._clock = clock
        self._lock = threading.Lock()
        # segment start → (ids, bytes on disk); insertion order is age order
        self._segments: dict[int, tuple[set[int], int]] = {}
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._load(self.directory)

    def _segment_path(self, start: int) -> Path | None:
        return self.directory / f"{_PREFIX}{start:012d}" if self.directory is not None else None

    def _load(self, directory: Path) -> None:
        starts = []
        for entry in os.scandir(directory):
            if entry.name.startswith(_PREFIX):
                try:
                    starts.append(int(entry.name[len(_PREFIX) :]))
                except ValueError:
                    continue
        for start in sorted(starts):
            try:
                data = (directory / f"{_PREFIX}{start:012d}").read_bytes()
            except OSError:
                continue
            ids = {_key(line) for line in data.decode("ascii", "replace").split("\n") if line}
            self._segments[start] = (ids, len(data))
        with self._lock:
            self._expire()

    def __contains__(self, rid: str) -> bool:
        key = _key(rid)
        with self._lock:
            return any(key in ids for ids, _ in self._segments.values())

    def filter_new(self, rids: Iterable[str]) -> list[bool]:
        """For each id: True when it was not written before."""
        with self._lock:
            sets = [ids for ids, _ in self._segments.values()]
        keys = map(_key, rids)
        if len(sets) == 1:  # the usual: one segment (ids within the last segment_s)
            (only,) = sets
            return [k not in only for k in keys]
        return [not any(k in ids for ids in sets) for k in keys]

    def add(self, rids: Iterable[str]) -> None:
        """Remember ids just written (appended to the current segment, one write)."""
        rids = list(rids)
        if not rids:
            return
        data = ("\n".join(rids) + "\n").encode("ascii", "replace")
        now = self._clock()
        start = int(now // self.segment_s * self.segment_s)
        with self._lock:
            ids, size = self._segments.get(start, (set(), 0))
            path = self._segment_path(start)
            try:
                if path is not None:
                    with open(path, "ab") as f:
                        f.write(data)
            except OSError:
                pass  # memory still knows them; the ledger's own tail scan covers a restart
            ids.update(map(_key, rids))
            self._segments[start] = (ids, size + len(data))
            self._expire()

    def _expire(self) -> None:
        now = self._clock()
        total = sum(size for _, size in self._segments.values())
        for start in list(self._segments):
            too_old = start + self.segment_s < now - self.retention_s
            if not too_old and total <= self.max_bytes:
                break
            if len(self._segments) == 1 and not too_old:
                break  # the current segment stays, whatever its size
            total -= self._segments.pop(start)[1]
            path = self._segment_path(start)
            try:
                if path is not None:
                    os.unlink(path)
            except OSError:
                pass

    def status(self) -> dict[str, int]:
        with self._lock:
            return {
                "ids": sum(len(ids) for ids, _ in self._segments.values()),
                "bytes": sum(size for _, size in self._segments.values()),
                "segments": len(self._segments),
            }
