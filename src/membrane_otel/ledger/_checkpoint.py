"""Keyed checkpoints: what catches a cut tail or a recomputed chain, which a bare chain cannot.

A checkpoint is, in the manner of Certificate Transparency's signed tree heads, a statement
"at time T, the ledger L had reached seq S with hash H", authenticated by an HMAC-SHA256
over ``(ledger id, seq, hash, time)`` with a key the ledger's readers do not hold. The
writer emits one every N lines or T seconds (and one at exit): as an OTel log record with
``event_name`` ``membrane.ledger.checkpoint`` (so it leaves the host on the Collector path)
and as a line appended to a checkpoint file. ``ledger verify --checkpoint FILE`` then shows:

* a **cut tail**: the ledger ends below a checkpoint's seq (lines were removed at the end);
* a **recomputed chain**: the ledger's hash at a checkpoint's seq differs (lines at or
  before it were edited and every hash after them recomputed).

What it does not prove: anything after the newest checkpoint (cut those lines and nothing
notices), and anything against someone who holds the key: a key thief on the host can
forge checkpoints forward for a rewritten ledger. Keep checkpoints (the OTel records, a
copy of the file) where the ledger's host cannot rewrite them, and the key readable only
by the writer.

The ledger id is the hash of the ledger's first line: it names one chain wherever its
files are copied, and a chain recomputed from its first line no longer matches it.

Standard library only; the OTel API is imported only when a checkpoint is emitted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.ledger._chain import file_tail, split_hash
from membrane_otel.ledger._reader import ledger_files

if TYPE_CHECKING:
    from membrane_otel.ledger._verify import VerifyReport
    from membrane_otel.settings import Settings

EVENT_NAME = "membrane.ledger.checkpoint"
_DOMAIN = b"membrane.ledger.checkpoint/v1"

_log = logging.getLogger("membrane_otel.ledger._checkpoint")
_problems = RateLimitedLogger(_log)


class CheckpointError(ValueError):
    """A key or checkpoint file that cannot be used. ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    ledger_id: str
    seq: int
    hash: str
    time_ms: int
    mac: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": EVENT_NAME,
            "ledger_id": self.ledger_id,
            "seq": self.seq,
            "hash": self.hash,
            "time_ms": self.time_ms,
            "mac": self.mac,
        }

    def when(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time_ms / 1000))


def _mac(key: bytes, ledger_id: str, seq: int, digest: str, time_ms: int) -> str:
    message = b"\n".join(
        (_DOMAIN, ledger_id.encode(), str(seq).encode(), digest.encode(), str(time_ms).encode())
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(key: bytes, ledger_id: str, seq: int, digest: str, time_ms: int) -> Checkpoint:
    return Checkpoint(ledger_id, seq, digest, time_ms, _mac(key, ledger_id, seq, digest, time_ms))


def authentic(key: bytes, cp: Checkpoint) -> bool:
    return hmac.compare_digest(cp.mac, _mac(key, cp.ledger_id, cp.seq, cp.hash, cp.time_ms))


# --------------------------------------------------------------------------- key and ledger


def load_key(settings: Settings) -> bytes | None:
    """The checkpoint key: ``MEMBRANE_LEDGER_KEY``, else the first line of ``MEMBRANE_LEDGER_KEY_FILE``."""
    if settings.ledger_key:
        return settings.ledger_key.encode()
    if settings.ledger_key_file is not None:
        from membrane_otel._internal.state import UnsafePathError, read_secret_file

        try:
            return read_secret_file(settings.ledger_key_file, "ledger key file").encode()
        except UnsafePathError as exc:
            raise CheckpointError(f"MEMBRANE_LEDGER_KEY_FILE: {exc}") from None
    return None


def checkpoint_file(settings: Settings, ledger: str | os.PathLike[str]) -> Path:
    """Where checkpoints are appended: ``MEMBRANE_CHECKPOINT_FILE``, else ``<ledger>.checkpoints``."""
    return Path(settings.checkpoint_file or f"{os.fspath(ledger)}.checkpoints")


def ledger_id(path: str | os.PathLike[str]) -> str | None:
    """The hash of the ledger's first line (oldest file first), or None while it has none."""
    files = ledger_files(path)
    if not files:
        return None
    with open(files[0], "rb") as f:
        first = f.readline()
    split = split_hash(first.decode("utf-8", "replace"))
    return split[1] if split else None


def current_tail(path: str | os.PathLike[str]) -> tuple[int, str] | None:
    """``(seq, hash)`` of the ledger's last whole chained line (the newest file that has one)."""
    for file in reversed(ledger_files(path)):
        found = file_tail(file)
        if found is not None:
            return found
    return None


def make(path: str | os.PathLike[str], key: bytes, now: float | None = None) -> Checkpoint | None:
    """A checkpoint of the ledger at ``path`` as it is now, or None if it has no line yet."""
    lid, tail = ledger_id(path), current_tail(path)
    if lid is None or tail is None:
        return None
    return sign(key, lid, tail[0], tail[1], int((time.time() if now is None else now) * 1000))


def append(file: str | os.PathLike[str], cp: Checkpoint) -> None:
    """Append one checkpoint line to ``file`` (created 0600), in one write."""
    line = json.dumps(cp.as_dict(), separators=(",", ":")).encode() + b"\n"
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read(file: str | os.PathLike[str]) -> tuple[list[tuple[int, Checkpoint]], int]:
    """``([(line, checkpoint)], unreadable_lines)`` from a checkpoint file (other records skipped)."""
    out: list[tuple[int, Checkpoint]] = []
    bad = 0
    with open(file, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                obj = json.loads(raw)
                # An exported OTel record may carry the fields as attributes: accept both.
                if isinstance(obj, dict) and isinstance(obj.get("attributes"), dict):
                    obj = {k.removeprefix("membrane.checkpoint."): v for k, v in obj["attributes"].items()}
                if not isinstance(obj, dict) or obj.get("type", EVENT_NAME) != EVENT_NAME:
                    continue
                cp = Checkpoint(
                    str(obj["ledger_id"]),
                    int(obj["seq"]),
                    str(obj["hash"]),
                    int(obj["time_ms"]),
                    str(obj["mac"]),
                )
            except (ValueError, KeyError, TypeError):
                bad += bool(raw.strip())
                continue
            out.append((number, cp))
    return out, bad


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # "forged" | "other_ledger" | "cut" | "recomputed"
    message: str


def check(
    report: VerifyReport, checkpoints: list[tuple[int, Checkpoint]], key: bytes
) -> tuple[list[Finding], int]:
    """What the checkpoints say about the walked ledger: ``(findings, checkpoints that matched)``.

    ``report`` must come from ``verify(path, want={cp.seq ...})``.
    """
    findings: list[Finding] = []
    mine: list[Checkpoint] = []
    for number, cp in checkpoints:
        if not authentic(key, cp):
            findings.append(
                Finding(
                    "forged",
                    f"checkpoint at line {number} does not verify with this key (forged, or another key)",
                )
            )
        elif cp.ledger_id == report.first_hash:
            mine.append(cp)
    if not mine:
        if checkpoints and not findings:
            findings.append(
                Finding(
                    "other_ledger",
                    "no checkpoint is for this ledger (its first line's hash is "
                    f"{(report.first_hash or 'none')[:16]}…): the chain was recomputed from its first line, "
                    "or the checkpoints are another ledger's",
                )
            )
        return findings, 0
    mine.sort(key=lambda c: (c.seq, c.time_ms))
    matched, good_seq = 0, report.first_seq or 0
    for cp in mine:
        if cp.seq > report.last_seq:
            newest = mine[-1]
            findings.append(
                Finding(
                    "cut",
                    f"the ledger ends at seq {report.last_seq}, but a checkpoint of {cp.when()} vouches for seq "
                    f"{cp.seq}: lines {report.last_seq + 1}..{newest.seq} (at least) were cut from the end",
                )
            )
            break
        if report.hashes.get(cp.seq) != cp.hash:
            findings.append(
                Finding(
                    "recomputed",
                    f"seq {cp.seq} does not have the hash the checkpoint of {cp.when()} vouches for: lines in "
                    f"{good_seq + 1}..{cp.seq} were rewritten and the chain after them recomputed",
                )
            )
            break
        matched += 1
        good_seq = cp.seq
    return findings, matched


# --------------------------------------------------------------------------- the writer's hook


class Checkpointer:
    """Called by the appender after each batch; checkpoints every ``lines`` lines or ``interval`` s.

    Never raises into the append path: a checkpoint that cannot be written is logged
    (rate-limited) and tried again at the next batch.
    """

    def __init__(
        self,
        ledger: str | os.PathLike[str],
        key: bytes,
        file: str | os.PathLike[str],
        *,
        lines: int = 1000,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        emit: Callable[[Checkpoint], None] | None = None,
    ) -> None:
        self.ledger, self.file = os.fspath(ledger), os.fspath(file)
        self._key, self._lines, self._interval, self._clock = key, lines, interval, clock
        self._emit = emit if emit is not None else emit_record
        self._id: str | None = None
        self._base: int | None = None  # the seq at the last checkpoint (or when we started)
        self._at = clock()
        self._pending: tuple[int, str] | None = None
        self.written = 0
        # Batches from several threads report here: one decides at a time.
        self._lock = threading.RLock()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _relock(ref))

    def __call__(self, seq: int, digest: str, written: int) -> None:
        with self._lock:
            if self._base is None:
                self._base = seq - written
            if self._pending is None or seq > self._pending[0]:
                self._pending = (seq, digest)
            if seq - self._base >= self._lines or self._clock() - self._at >= self._interval:
                self.checkpoint()

    def checkpoint(self) -> Checkpoint | None:
        """Checkpoint the last batch seen now, if lines came since the last checkpoint."""
        with self._lock:
            return self._checkpoint()

    def _checkpoint(self) -> Checkpoint | None:
        if self._pending is None or self._pending[0] == self._base:
            return None
        seq, digest = self._pending
        try:
            if self._id is None:
                self._id = ledger_id(self.ledger)
            if self._id is None:
                return None
            now = self._clock()
            cp = sign(self._key, self._id, seq, digest, int(now * 1000))
            append(self.file, cp)
        except OSError as exc:
            _problems.error("ledger checkpoint to %s failed: %s", self.file, exc)
            return None
        self._base, self._at = seq, now
        self.written += 1
        try:
            self._emit(cp)
        except Exception as exc:  # the record is a copy: the file has it
            _problems.error("ledger checkpoint record not emitted: %s", exc)
        return cp


def _relock(ref: weakref.ref[Checkpointer]) -> None:
    cp = ref()
    if cp is not None:  # the parent's lock may have been held by a thread the child lacks
        cp._lock = threading.RLock()


def emit_record(cp: Checkpoint) -> None:
    """The checkpoint as an OTel log record (``event_name`` ``membrane.ledger.checkpoint``)."""
    if "opentelemetry" not in sys.modules:
        return  # a process without the SDK (the shell emitter): the file is the record
    from opentelemetry._logs import SeverityNumber, get_logger

    attrs = cp.as_dict()
    attrs.pop("type")
    get_logger("membrane_otel.ledger.checkpoint").emit(
        event_name=EVENT_NAME,
        severity_number=SeverityNumber.INFO,
        body=f"ledger {cp.ledger_id[:16]} at seq {cp.seq}",
        attributes={f"membrane.checkpoint.{k}": v for k, v in attrs.items()},
    )


def checkpointer_for(path: str | os.PathLike[str]) -> Checkpointer | None:
    """The settings' checkpointer for the ledger at ``path``, or None without a key."""
    from membrane_otel.settings import get_settings

    settings = get_settings()
    try:
        key = load_key(settings)
    except CheckpointError as exc:
        _problems.error("ledger checkpoints off: %s", exc)
        return None
    if key is None:
        return None
    cp = Checkpointer(
        path,
        key,
        checkpoint_file(settings, path),
        lines=settings.checkpoint_lines,
        interval=settings.checkpoint_interval_s,
    )
    import atexit

    atexit.register(cp.checkpoint)  # the last lines of a short run are vouched for too
    return cp
