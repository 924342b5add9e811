"""The disk half of a memory-then-disk buffer: what a full queue cannot hold, kept in order.

A burst of ledger events (``task_started`` × thousands) outgrows any sensible in-memory
queue, and a ledger of business events is not allowed to sample. So, as Vector's
memory-then-disk buffer does, the overflow of a :class:`~membrane_otel._internal.worker.Worker`
goes to a local append-only file, and the worker drains it, oldest first, once the memory
queue is empty. While the file holds anything, new items go to it too, so order is kept.

What the caller pays: one encode and one ``write`` to a local file it alone appends to
(no lock shared with other processes, no network). Only a full buffer (over ``max_bytes``)
drops, counted in ``dropped_logs`` and ``overflow_dropped`` and reported, rate-limited.

One file per process (``<name>-<pid>.jsonl``, 0600, in a 0700 directory), truncated each time
it is drained empty. A file left by a process that died is adopted (:meth:`adopt_orphans`) by
the next buffer of the same name that starts in that directory, so its lines still arrive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger

T = TypeVar("T")
_log = RateLimitedLogger(logging.getLogger("membrane_otel.disk_buffer"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DiskBuffer(Generic[T]):
    """An append-only file of encoded items, read back in order (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        max_bytes: int,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        accepts: Callable[[T], bool] = lambda _item: True,
    ) -> None:
        self.directory = Path(directory)
        self.name = name
        self._max = max_bytes
        self._encode = encode
        self._decode = decode
        self._accepts = accepts
        self._lock = threading.Lock()
        self._init_state()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._init_state)

    def _init_state(self) -> None:
        # A forked child writes its own file; the parent's belongs to the parent.
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._reader: int | None = None
        self._offset = 0
        self._bytes = 0
        self._count = 0
        self._leftover = b""
        self.path = self.directory / f"{self.name}-{os.getpid()}.jsonl"

    def __len__(self) -> int:
        return self._count

    def accepts(self, item: T) -> bool:
        return self._accepts(item)

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        return self._fd

    def adopt_orphans(self) -> int:
        """Files of dead processes of the same name, appended to ours so nothing is lost.

        A file is claimed by renaming it first, so two processes starting at once never
        both take it. Returns how many items were adopted.
        """
        pattern = re.compile(rf"{re.escape(self.name)}-(\d+)\.jsonl$")
        adopted = 0
        try:
            candidates = sorted(self.directory.glob(f"{self.name}-*.jsonl"))
        except OSError:
            return 0
        for path in candidates:
            m = pattern.match(path.name)
            if m is None or path == self.path or _pid_alive(int(m[1])):
                continue
            claimed = path.with_name(f"{path.name}.adopted-{os.getpid()}")
            try:
                os.rename(path, claimed)
                data = claimed.read_bytes()
            except OSError:
                continue  # another process claimed it first
            lines = [ln for ln in data.split(b"\n") if ln]
            if lines:
                with self._lock:
                    self._write(self._open(), b"".join(ln + b"\n" for ln in lines))
                    self._count += len(lines)
                adopted += len(lines)
            with contextlib.suppress(OSError):
                claimed.unlink()
        return adopted

    def _write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        self._bytes += len(data)

    def push(self, item: T) -> bool:
        """Append one item; False (counted, reported) when the buffer is full or unwritable."""
        try:
            data = self._encode(item) + b"\n"
            with self._lock:
                fd = self._open()
                if self._bytes + len(data) > self._max:
                    raise OverflowError(f"over its cap of {self._max} bytes")
                self._write(fd, data)
                self._count += 1
        except Exception as exc:
            counters.incr("dropped_logs")
            counters.incr("overflow_dropped")
            _log.error("overflow buffer %s: %s; record dropped", self.path, exc)
            return False
        counters.incr("overflow_writes")
        counters.incr(f"overflow_writes.{self.name}")
        return True

    def pop(self, n: int) -> list[T]:
        """Up to ``n`` items, oldest first. The file is truncated once it is read to its end."""
        with self._lock:
            if not self._count or self._fd is None:
                return []
            if self._reader is None:
                self._reader = os.open(self.path, os.O_RDONLY)
            lines: list[bytes] = []
            while len(lines) < n:
                chunk = os.pread(self._reader, 1 << 16, self._offset)
                if not chunk:
                    break
                buf = self._leftover + chunk
                self._offset += len(chunk)
                parts = buf.split(b"\n")
                self._leftover = parts.pop()
                lines.extend(parts)
            if len(lines) > n:  # read ahead: give the rest back
                back = b"\n".join(lines[n:]) + b"\n" + self._leftover
                self._offset -= len(back)
                self._leftover = b""
                lines = lines[:n]
            self._count -= len(lines)
            if self._count <= 0:
                self._count = 0
                os.ftruncate(self._fd, 0)
                self._offset = self._bytes = 0
                self._leftover = b""
        out: list[T] = []
        for line in lines:
            try:
                out.append(self._decode(line))
            except Exception as exc:  # a torn line (a crash mid-write) must not stop the drain
                counters.incr("rejected")
                _log.error("overflow buffer %s: unreadable line dropped (%r)", self.path, exc)
        return out

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._reader):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._fd = self._reader = None
            if not self._count:
                with contextlib.suppress(OSError):
                    self.path.unlink()
