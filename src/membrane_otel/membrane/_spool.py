"""The disk spool: where envelopes wait while the membrane bus is unreachable.

One batch is one file, a JSON array of envelopes. The file name carries everything the
spool needs to know without opening it::

    <time µs, 16 digits>-<pid, 7 digits>-<sequence, 8 digits>-n<envelope count>.json

so a plain sort is oldest-first replay order, and ``status()`` and the size cap can count
envelopes from a directory listing alone.

Crash safety: a batch is written whole to a hidden temp name and then ``os.replace``-d into
place, so a reader never sees half a file. Several processes may share one directory: a
reader *claims* a batch by atomically renaming it to ``<name>.claimed-<pid>``; a rename
succeeds for exactly one process, so no batch is replayed twice. A claim whose pid is dead
(the process crashed between claim and ack) is renamed back and replayed by whoever looks
next: delivery is at-least-once, and consumers dedupe by ``metadata.stimulus_id``.

Private: the default directory is ``<state dir>/spool`` (:mod:`membrane_otel._internal.state`),
made 0700. Any directory, the seed's ``/tmp/membrane-stimuli-spool`` included when set
explicitly, is refused (:class:`UnsafePathError`, one line) if it is a symlink, owned by
another user or writable by others; batch files are opened with ``O_NOFOLLOW`` and only our
own regular files are read, so a planted FIFO, symlink or forged batch is moved aside unread.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.state import UnsafePathError, check_dir, private_dir, state_dir
from membrane_otel._internal.tables import DEFAULT_SPOOL_MAX_BYTES

__all__ = ["LEGACY_SPOOL_DIR", "Spool", "SpoolBatch", "UnsafePathError", "default_spool_dir"]

# The seeds' shared directory: used only when set explicitly, and then checked like any other.
LEGACY_SPOOL_DIR = "/tmp/membrane-stimuli-spool"
DEFAULT_MAX_BYTES = DEFAULT_SPOOL_MAX_BYTES

_log = logging.getLogger("membrane_otel.membrane._spool")
_refused = RateLimitedLogger(_log)

_BATCH_RE = re.compile(r"^(?P<ts>\d{16})-(?P<pid>\d{7})-(?P<seq>\d{8})-n(?P<n>\d+)\.json$")
_CLAIM_RE = re.compile(r"^(?P<name>.+\.json)\.claimed-(?P<pid>\d+)$")
_TMP_RE = re.compile(r"^\.tmp-(?P<pid>\d+)-")


@dataclass(frozen=True)
class SpoolBatch:
    """A claimed batch: this process alone may now send it, then ``ack`` or ``release`` it."""

    name: str
    path: Path  # the claimed file
    envelopes: list[dict[str, Any]]


@dataclass(frozen=True)
class _Entry:
    name: str
    size: int
    envelopes: int
    ts_us: int


def default_spool_dir() -> Path:
    """``$XDG_STATE_HOME/membrane-otel/spool``, else ``~/.local/state/membrane-otel/spool``."""
    return state_dir() / "spool"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _reinit_after_fork(ref: weakref.ref[Spool]) -> None:
    spool = ref()
    if spool is not None:
        spool._after_fork()


class Spool:
    """A directory of envelope batches, bounded in bytes, shared safely between processes."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        *,
        fsync: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, got {max_bytes}")
        self.directory = Path(directory) if directory is not None else default_spool_dir()
        self.max_bytes = max_bytes
        self._clock = clock
        self._fsync = fsync
        self._lock = threading.Lock()
        self._seq = 0
        self._last_us = 0
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _reinit_after_fork(ref))

    def _after_fork(self) -> None:
        # A fork while another thread held the lock would leave the child's copy locked forever.
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------

    def write(self, envelopes: Sequence[dict[str, Any]]) -> None:
        """Store one batch as one file (whole, then renamed into place); enforce the size cap.

        Raises ``OSError`` when the directory cannot be written (full disk, permissions):
        the caller decides whether that is a drop.
        """
        if not envelopes:
            return
        data = json.dumps(list(envelopes), separators=(",", ":"), ensure_ascii=False).encode()
        name = self._next_name(len(envelopes))
        self._ensure_dir()
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.directory / name)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        counters.incr("spool_writes", len(envelopes))
        self._enforce_cap()

    def _next_name(self, count: int) -> str:
        with self._lock:
            # Monotonic within this process even if the wall clock steps back, so replay
            # order is write order.
            now_us = max(int(self._clock() * 1_000_000), self._last_us)
            self._last_us = now_us
            self._seq = (self._seq + 1) % 100_000_000
            seq = self._seq
        return f"{now_us:016d}-{os.getpid() % 10_000_000:07d}-{seq:08d}-n{count}.json"

    def _ensure_dir(self) -> None:
        # 0o700: envelopes are redacted, but still nobody else's business. Checked on every
        # write: the check is one lstat, and a refused directory must stay refused.
        private_dir(self.directory, "spool directory")

    def _enforce_cap(self) -> None:
        scanned = self._scan()
        entries = self._pending(scanned)
        claimed_bytes = sum(size for _, size in self._claims(scanned=scanned))
        total = claimed_bytes + sum(e.size for e in entries)
        dropped = 0
        for entry in entries:  # oldest first
            if total <= self.max_bytes:
                break
            try:
                os.unlink(self.directory / entry.name)
            except FileNotFoundError:  # claimed or dropped by another process meanwhile
                continue
            total -= entry.size
            dropped += entry.envelopes
        if dropped:
            counters.incr("spool_dropped", dropped)
            _log.warning(
                "membrane spool %s over its cap of %d bytes: dropped the %d oldest envelopes",
                self.directory,
                self.max_bytes,
                dropped,
            )

    # -- reading -------------------------------------------------------------------------

    def claim_oldest(self) -> SpoolBatch | None:
        """Claim the oldest unclaimed batch for this process, or None when there is none.

        A corrupt file is moved aside to ``<name>.corrupt`` (and logged) and the next one is
        tried, so one bad file never blocks replay.
        """
        self.recover_stale_claims()
        for entry in self._pending():
            src = self.directory / entry.name
            claimed = self.directory / f"{entry.name}.claimed-{os.getpid()}"
            try:
                os.rename(src, claimed)
            except FileNotFoundError:  # another process claimed it first
                continue
            except OSError as exc:
                _log.warning("membrane spool: cannot claim %s: %s", src, exc)
                continue
            envelopes = self._read(claimed)
            if envelopes is None:
                self._move_aside(claimed, entry.name)
                continue
            return SpoolBatch(name=entry.name, path=claimed, envelopes=envelopes)
        return None

    def ack(self, batch: SpoolBatch) -> None:
        """The batch was delivered: delete it."""
        try:
            os.unlink(batch.path)
        except FileNotFoundError:
            # Its claim was judged stale and recovered: it may be replayed again, which
            # at-least-once delivery allows.
            _log.warning("membrane spool: %s vanished before its ack", batch.path)
        counters.incr("spool_replayed", len(batch.envelopes))

    def release(self, batch: SpoolBatch) -> None:
        """The batch was not delivered: put it back, under its original (ordered) name."""
        try:
            os.rename(batch.path, self.directory / batch.name)
        except FileNotFoundError:
            _log.warning("membrane spool: %s vanished before its release", batch.path)

    def recover_stale_claims(self) -> int:
        """Put back batches claimed by processes that no longer exist; return how many."""
        recovered = 0
        for name, _ in self._claims(dead_only=True):
            m = _CLAIM_RE.match(name)
            if m is None:
                continue
            try:
                os.rename(self.directory / name, self.directory / m["name"])
            except OSError:  # another process recovered it first
                continue
            recovered += 1
            _log.warning("membrane spool: recovered %s, claimed by dead process %s", m["name"], m["pid"])
        self._remove_dead_temps()
        return recovered

    def _read(self, path: Path) -> list[dict[str, Any]] | None:
        # O_NOFOLLOW and O_NONBLOCK: a symlink is not followed and a FIFO does not hang us;
        # only a regular file of ours is read (the directory is ours, so anything else was
        # planted, or left by a bug).
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                _log.error("membrane spool: %s is not a regular file of yours; not read", path)
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
            return None
        return data

    def _move_aside(self, path: Path, name: str) -> None:
        target = self.directory / f"{name}.corrupt"
        try:
            os.rename(path, target)
        except OSError as exc:
            _log.error("membrane spool: corrupt file %s could not be moved aside: %s", path, exc)
            return
        counters.incr("spool_corrupt")
        _log.error("membrane spool: %s is not a JSON array of envelopes; moved aside to %s", name, target)

    # -- listing -------------------------------------------------------------------------

    def check(self) -> None:
        """Raise :class:`UnsafePathError` (one line) if the directory exists and is not safe to use."""
        try:
            check_dir(self.directory, "spool directory")
        except FileNotFoundError:
            pass

    def _scan(self) -> list[os.DirEntry[str]]:
        # Nothing is read from a refused directory: to the replaying worker it looks empty
        # (and says why, once a minute); writes into it raise, and are counted as drops.
        try:
            check_dir(self.directory, "spool directory")
            with os.scandir(self.directory) as it:
                return list(it)
        except FileNotFoundError:
            return []
        except UnsafePathError as exc:
            _refused.error("membrane spool: %s", exc)
            return []

    def _pending(self, scanned: Iterable[os.DirEntry[str]] | None = None) -> list[_Entry]:
        """Unclaimed batches, oldest first (of ``scanned``, else of a fresh scan)."""
        out: list[_Entry] = []
        for de in self._scan() if scanned is None else scanned:
            m = _BATCH_RE.match(de.name)
            if m is None or de.is_symlink():
                continue  # a symlink is never ours (we write files): not counted, not claimed
            try:
                size = de.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            out.append(_Entry(de.name, size, int(m["n"]), int(m["ts"])))
        out.sort(key=lambda e: e.name)
        return out

    def _claims(
        self, *, dead_only: bool = False, scanned: Iterable[os.DirEntry[str]] | None = None
    ) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for de in self._scan() if scanned is None else scanned:
            m = _CLAIM_RE.match(de.name)
            if m is None:
                continue
            if dead_only and _pid_alive(int(m["pid"])):
                continue
            try:
                out.append((de.name, de.stat(follow_symlinks=False).st_size))
            except FileNotFoundError:
                continue
        return out

    def _remove_dead_temps(self) -> None:
        # A writer killed between mkstemp and replace leaves a temp file nobody will finish.
        for de in self._scan():
            m = _TMP_RE.match(de.name)
            if m is not None and not _pid_alive(int(m["pid"])):
                try:
                    os.unlink(de.path)
                except OSError:
                    pass

    def status(self) -> dict[str, Any]:
        """What is waiting: files, envelopes, bytes, age of the oldest, claims, corrupt files."""
        scanned = self._scan()  # one listing for all three counts
        pending = self._pending(scanned)
        claims = self._claims(scanned=scanned)
        corrupt = sum(1 for de in scanned if de.name.endswith(".corrupt"))
        now = self._clock()
        oldest_age = None
        if pending:
            oldest_age = max(0.0, now - pending[0].ts_us / 1_000_000)
        # A claimed batch is still undelivered (a replay in flight, or a reader stuck on a slow
        # bus): its bytes and age count towards "behind" like a waiting one's.
        claimed_oldest = None
        for name, _ in claims:  # <batch name>.claimed-<pid>: the batch's name holds its time
            m = _BATCH_RE.match(name.partition(".claimed-")[0])
            if m is not None:
                age = max(0.0, now - int(m["ts"]) / 1_000_000)
                claimed_oldest = age if claimed_oldest is None else max(claimed_oldest, age)
        return {
            "dir": str(self.directory),
            "files": len(pending),
            "envelopes": sum(e.envelopes for e in pending),
            "bytes": sum(e.size for e in pending),
            "oldest_age_s": oldest_age,
            "claimed": len(claims),
            "claimed_bytes": sum(size for _, size in claims),
            "claimed_oldest_age_s": claimed_oldest,
            "corrupt": corrupt,
            "max_bytes": self.max_bytes,
        }

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, max_bytes={self.max_bytes})"
