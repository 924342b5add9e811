"""The resonance ledger: append-only, hash-chained JSONL, rotated by size.

Each line is one flat JSON object with ``event`` first and ``seq``, ``prev_hash``, ``hash``
last. ``hash`` is the SHA-256 of the line's own bytes up to (not including) the
``,"hash":…`` suffix, and that text includes ``prev_hash``: so editing, deleting or
reordering any line breaks the chain at that line (:mod:`membrane_otel.ledger._verify`).

Appends from many threads and processes are safe: a batch is serialised outside the lock,
then, under an exclusive ``flock`` on a sidecar lock file, the tail is read (for the last
``seq`` and ``hash``), the chain fields are added and the whole batch goes out in one
``write`` on an ``O_APPEND`` descriptor. Rotation happens under the same lock: the full
file is renamed to ``<stem>.00001<suffix>`` (numbers sort), and the new file's first line
chains to the old file's last, with ``seq`` continuing.

Reading (which files a ledger is, their lines in order) is :mod:`membrane_otel.ledger._reader`;
the chain's own arithmetic (line hashes, finding where the chain goes on) is
:mod:`membrane_otel.ledger._chain`.

This module imports only the standard library, and little of it at import time (no
``typing``, ``pathlib`` or ``re`` until they are needed): ``membrane-otel emit`` appends
through it, and its start-up time is the shell emitter's.
"""

from __future__ import annotations

import _thread  # the documented low-level module: a Lock without importing threading
import fcntl
import os

from membrane_otel.ledger._chain import (
    _CHAIN_KEYS,
    _HASH_MARK,
    _HASH_SUFFIX_LEN,
    GENESIS,
    _dumps,
    _last_chained,
    _read_tail,
    file_tail,
)
from membrane_otel.ledger._reader import rotated_files, rotated_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path
    from typing import Any, Protocol

    class _Digest(Protocol):
        def hexdigest(self) -> str: ...

    Sha256 = Callable[[bytes], _Digest]

# Record ids read back from the tail at open, so a batch re-delivered after a restart is
# still recognised. 1 MiB is a few thousand lines: the span a replay realistically covers.
_RECENT_SCAN_BYTES = 1 << 20
_RID_PATTERN = rb'"record_id":"([^"\\]{1,200})"'
_rid_re: re.Pattern[bytes] | None = None


# --------------------------------------------------------------------------- the appender


def _file_mode() -> int:
    """``MEMBRANE_LEDGER_FILE_MODE`` (octal, as the settings document it), else 0600."""
    raw = os.environ.get("MEMBRANE_LEDGER_FILE_MODE", "").strip()
    if not raw:
        return 0o600
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError(
            f"MEMBRANE_LEDGER_FILE_MODE={raw!r} is not valid: expected an octal mode such as 0600"
        )
    return mode


class _Tail:
    """Where our last write left the file, to skip re-reading the tail if nobody wrote since."""

    __slots__ = ("hash", "inode", "seq", "size")

    def __init__(self, inode: int, size: int, seq: int, digest: str) -> None:
        self.inode, self.size, self.seq, self.hash = inode, size, seq, digest


class Ledger:
    """An appender for one ledger path; share one per path per process (:func:`ledger_for`).

    ``max_bytes`` rotates the file before a batch would take it past that size (0: never).
    ``dedupe_window`` record ids are remembered (including those found at the file's tail
    when it is first opened), so a batch delivered twice is written once. ``fsync`` makes
    each batch durable before :meth:`append_many` returns (off by default: the page cache is
    what ``tail -f`` and other processes read, and a power loss leaves a torn tail, which
    is detected and reported). ``sha256`` is the hash constructor (default ``hashlib``'s).

    Safe across ``fork``: a child notices the new pid and opens its own descriptors and lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 0,
        dedupe_window: int = 65536,
        fsync: bool = False,
        sha256: Sha256 | None = None,
        recent_scan_bytes: int = _RECENT_SCAN_BYTES,
        mode: int | None = None,
    ) -> None:
        self._p = os.fspath(path)
        # New ledger and lock files are the user's alone unless asked otherwise: what the
        # app logs is nobody else's business (and a lock others can open, others can hold).
        self.mode = _file_mode() if mode is None else mode
        # How much of the file's end is read at open for the ids already written. An app
        # needs little (its records are new); the bridge, which the Collector re-sends whole
        # batches to after a restart, asks for enough to cover its in-flight batches.
        self.recent_scan_bytes = recent_scan_bytes
        self.max_bytes = max_bytes
        self._lock_path = self._p + ".lock"
        self._fsync = fsync
        self._sha256 = sha256
        self._thread_lock = _thread.allocate_lock()
        self._recent: dict[str, None] = {}  # insertion-ordered: the oldest id is first
        self._window = dedupe_window
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._pid = os.getpid()
        self._tail: _Tail | None = None
        self._recent_loaded = False
        self.rotations = 0
        # Keyed checkpoints (ledger/_checkpoint.py): called after each batch with
        # (seq, hash, lines written); None without a key.
        self.checkpointer: Callable[[int, str, int], object] | None = None

    @property
    def path(self) -> Path:
        from pathlib import Path

        return Path(self._p)

    # -- file handles -----------------------------------------------------------------

    def _open(self) -> tuple[int, int]:
        if self._fd is None or self._lock_fd is None:
            folder = os.path.dirname(self._p)
            if folder:
                os.makedirs(folder, exist_ok=True)
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, self.mode)
            self._fd = self._open_data()
        return self._fd, self._lock_fd

    def _open_data(self) -> int:
        # O_RDWR so the tail can be read with pread from the same descriptor.
        return os.open(self._p, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.mode)

    def _after_fork(self) -> None:
        # The parent's descriptors share its flock (a lock belongs to the open file
        # description), so the child must open its own; its thread lock may be held by a
        # thread that does not exist here. Checked on entry to every append.
        self._thread_lock = _thread.allocate_lock()
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._lock_fd = None
        self._tail = None
        self._pid = os.getpid()

    def __del__(self) -> None:
        # A dropped appender gives its descriptors back (raw fds have no finaliser of their own).
        if getattr(self, "_pid", None) == os.getpid():
            for fd in (getattr(self, "_fd", None), getattr(self, "_lock_fd", None)):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def close(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
            return
        with self._thread_lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None
            self._tail = None

    # -- idempotence ------------------------------------------------------------------

    def _load_recent(self, fd: int) -> None:
        """Remember the record ids at the end of the file (survives a process restart)."""
        global _rid_re
        self._recent_loaded = True
        size = os.fstat(fd).st_size
        if size == 0:
            return
        if _rid_re is None:
            import re

            _rid_re = re.compile(_RID_PATTERN)
        start = max(0, size - self.recent_scan_bytes)
        data = os.pread(fd, size - start, start)
        # Only whole lines were written: a torn one (its writer died mid-write) is no record,
        # even when its record_id got out, and its re-delivery must be appended again.
        suffix = _HASH_MARK.encode()
        # (A last line that lacks only its newline is whole: the chain goes on from it.)
        for line in data.split(b"\n")[1 if start else 0 :]:
            if line.endswith(b'"}') and line[-_HASH_SUFFIX_LEN:].startswith(suffix):
                ids = _rid_re.findall(line)  # the line's own record_id is its last one
                if ids:
                    self._remember(ids[-1].decode("utf-8", "replace"))

    def _remember(self, rid: str) -> None:
        recent = self._recent
        recent.pop(rid, None)
        recent[rid] = None
        if len(recent) > self._window:
            del recent[next(iter(recent))]

    # -- the chain ----------------------------------------------------------------------

    def _current_tail(self, fd: int, st: os.stat_result) -> tuple[int, str, bool]:
        """``(seq, hash, torn)`` where the chain goes on; ``torn``: the file ends mid-line."""
        cached = self._tail
        if cached and cached.inode == st.st_ino and cached.size == st.st_size:
            return cached.seq, cached.hash, False  # nobody wrote since our last batch
        if st.st_size == 0:
            torn = False
            found = None
        else:
            data = _read_tail(fd, st.st_size)
            torn = not data.endswith(b"\n")
            found = _last_chained(data)
            if found is None and len(data) < st.st_size:
                found = _last_chained(os.pread(fd, st.st_size, 0))
        if found is None:
            # A fresh (or only torn) file after a rotation: the chain goes on from the
            # newest rotated file.
            rotated = rotated_files(self._p)
            found = file_tail(rotated[-1][1]) if rotated else None
        seq, digest = found or (0, GENESIS)
        return seq, digest, torn

    def _follow_rotation(self) -> int:
        """Reopen if another process rotated the file from under our descriptor."""
        fd = self._fd
        if fd is None:
            raise RuntimeError("ledger not open")
        try:
            same = os.stat(self._p).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            self._fd = fd = self._open_data()
            self._tail = None
        return fd

    def _rotate(self, fd: int) -> int:
        rotated = rotated_files(self._p)
        index = rotated[-1][0] + 1 if rotated else 1
        os.rename(self._p, rotated_name(self._p, index))
        os.close(fd)
        self._fd = fd = self._open_data()
        self.rotations += 1
        return fd

    def append(self, record: Mapping[str, Any]) -> int:
        """Append one record; returns 1, or 0 if its ``record_id`` was already written."""
        return self.append_many([record])

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Append records as chained lines in one write; returns how many were written.

        Records whose ``record_id`` was written recently (this process, or the file's tail
        when it was opened) are skipped, which makes replays and re-deliveries idempotent.
        """
        if self._pid != os.getpid():
            self._after_fork()
        with self._thread_lock:
            fd, lock_fd = self._open()
            if not self._recent_loaded and self._window:
                self._load_recent(fd)
            fresh: list[Mapping[str, Any]] = []
            batch_ids: list[str] = []
            seen: set[str] = set()
            recent = self._recent
            window = self._window
            for rec in records:
                rid = rec.get("record_id") if window else None
                if type(rid) is str or isinstance(rid, str):
                    if rid in recent or rid in seen:
                        continue
                    seen.add(rid)
                    batch_ids.append(rid)
                fresh.append(rec)
            if not fresh:
                return 0
            # Serialise outside the file lock: the lock is held only for tail + write. Each line
            # is kept without its closing brace, as a slice: an exact-size copy, for orjson's own
            # result holds a buffer of at least 4 KiB (4,000 lines would pin 16-32 MiB).
            heads = [
                _dumps(
                    rec
                    if "seq" not in rec and "prev_hash" not in rec and "hash" not in rec  # _CHAIN_KEYS
                    else {k: v for k, v in rec.items() if k not in _CHAIN_KEYS}
                )[:-1]
                for rec in fresh
            ]
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                fd = self._follow_rotation()
                st = os.fstat(fd)
                seq, prev, torn = self._current_tail(fd, st)
                out: list[bytes] = []
                sha256 = self._sha256
                if sha256 is None:
                    import hashlib  # here, not at import: the shell emitter passes its own

                    sha256 = self._sha256 = hashlib.sha256
                link = prev.encode()
                for head in heads:
                    seq += 1
                    chained = (
                        b'%b,"seq":%d,"prev_hash":"%b"' % (head, seq, link)
                        if len(head) > 1  # not the empty object's "{"
                        else b'{"seq":%d,"prev_hash":"%b"' % (seq, link)
                    )
                    link = sha256(chained).hexdigest().encode()
                    out.append(chained)
                    out.append(b',"hash":"%b"}\n' % link)
                prev = link.decode()
                data = b"".join(out)
                size = st.st_size
                if self.max_bytes and size > 0 and size + len(data) > self.max_bytes:
                    # A torn tail stays, as it is, at the end of the rotated file.
                    fd = self._rotate(fd)
                    size, torn = 0, False
                if torn:
                    # A torn last line (a writer died mid-write) stays where it is, visible
                    # to verify; we start on a fresh line so it is never merged with ours.
                    data = b"\n" + data
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self._fsync:
                    os.fsync(fd)
                self._tail = _Tail(os.fstat(fd).st_ino, size + len(data), seq, prev)
            except BaseException:
                self._tail = None
                raise
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
            # Only now: a batch that failed to write must not be skipped when retried.
            # (Each id is new: it was neither in recent nor twice in the batch.)
            recent.update(dict.fromkeys(batch_ids))
            while len(recent) > window:
                del recent[next(iter(recent))]
        if self.checkpointer is not None:  # outside every lock: it may emit an OTel record
            self.checkpointer(seq, prev, len(heads))
        return len(heads)


# --------------------------------------------------------------------------- sharing


def _checkpointer(path: str) -> Callable[[int, str, int], object] | None:
    # Only with a key (or settings given to configure(), which may hold one): the check
    # must not cost the shell emitter the settings' import.
    import sys

    if not (
        os.environ.get("MEMBRANE_LEDGER_KEY")
        or os.environ.get("MEMBRANE_LEDGER_KEY_FILE")
        or "membrane_otel.settings" in sys.modules
    ):
        return None
    from membrane_otel.ledger._checkpoint import checkpointer_for

    return checkpointer_for(path)


_ledgers: dict[str, Ledger] = {}
_ledgers_lock = _thread.allocate_lock()
_ledgers_pid = os.getpid()


def ledger_for(
    path: str | os.PathLike[str], *, max_bytes: int | None = None, recent_scan_bytes: int | None = None
) -> Ledger:
    """The process's shared :class:`Ledger` for ``path`` (``max_bytes`` updates its rotation size)."""
    global _ledgers_lock, _ledgers_pid
    if _ledgers_pid != os.getpid():  # forked: the parent's lock may have been held
        _ledgers_lock, _ledgers_pid = _thread.allocate_lock(), os.getpid()
    key = os.path.abspath(path)
    with _ledgers_lock:
        ledger = _ledgers.get(key)
        if ledger is None:
            ledger = _ledgers[key] = Ledger(key, max_bytes=max_bytes or 0)
            ledger.checkpointer = _checkpointer(key)
        elif max_bytes is not None:
            ledger.max_bytes = max_bytes
        if recent_scan_bytes is not None:
            ledger.recent_scan_bytes = max(ledger.recent_scan_bytes, recent_scan_bytes)
        return ledger
