"""Walk the ledger's hash chain, over every rotated file, and name the first bad line.

What the chain tells apart:

* **edited** — a line's bytes no longer hash to its ``hash``;
* **broken chain** — a line's ``prev_hash`` is not the previous line's ``hash``: a line
  before it was removed, inserted or moved (``seq`` says which it looks like);
* **corrupt** — a whole-length line that is no longer a chained JSON line (a byte of its
  hash suffix changed);
* **unchained** — a line that parses as JSON but carries no chain fields: the appender
  never writes one, so someone inserted it. Tampering, wherever it is (a torn line is a
  prefix of a chained line and never parses: its closing brace comes last);
* **torn** — an incomplete line a writer left when it died mid-write (power loss,
  ``kill -9``). Not tampering: the next writer started on a fresh line and chained to the
  last whole line, which is exactly what the walk checks. A torn line in the middle of the
  ledger is accepted only if the line after it chains across it.

Limit of any hash chain: removing whole lines from the *end*, or recomputing every hash after
an edit, leaves a valid chain. Keyed checkpoints kept elsewhere catch both
(:mod:`membrane_otel.ledger._checkpoint`); ``want`` asks the walk for the hashes they vouch for.

Standard library only, like :mod:`membrane_otel.ledger._writer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from membrane_otel.ledger._chain import GENESIS
from membrane_otel.ledger._reader import iter_raw, ledger_files

Kind = Literal["edited", "broken_chain", "corrupt", "unchained", "torn"]
# progress(lines_done, bytes_done, bytes_total)
Progress = Callable[[int, int, int], None]

_MARK = b',"hash":"'
_SUFFIX_LEN = len(_MARK) + 64 + 2
_CHAIN = re.compile(rb',"seq":(\d+),"prev_hash":"([0-9a-f]{64})"$')
# A line of full length whose suffix was damaged still shows its prev_hash followed by
# exactly a hash suffix's length; a torn line (a prefix) is always shorter than that.
_WHOLE = re.compile(rb'"prev_hash":"[0-9a-f]{64}".{%d}$' % _SUFFIX_LEN, re.DOTALL)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: Kind
    file: Path
    line: int  # 1-based, in ``file``
    seq: int | None
    message: str
    size: int = 0  # bytes of the line

    def where(self) -> str:
        return f"{self.file.name}:{self.line}"


@dataclass(slots=True)
class VerifyReport:
    files: list[Path] = field(default_factory=list)
    lines: int = 0  # whole chained lines checked
    bytes: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    last_hash: str = GENESIS
    problem: Problem | None = None  # the first tampering found (the walk stops there)
    torn: list[Problem] = field(default_factory=list)
    first_hash: str | None = None  # the hash of the first line: the chain's identity (ledger id)
    hashes: dict[int, str] = field(default_factory=dict)  # seq -> hash, for the seqs asked for

    @property
    def ok(self) -> bool:
        """The chain is intact (torn lines may still be present; see :attr:`torn`)."""
        return self.problem is None


def _split(raw: bytes) -> tuple[bytes, str] | None:
    if len(raw) < _SUFFIX_LEN or not raw.endswith(b'"}'):
        return None
    cut = len(raw) - _SUFFIX_LEN
    if raw[cut : cut + 9] != _MARK:
        return None
    return raw[:cut], raw[cut + 9 : -2].decode("ascii", "replace")


def _parses(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _broken_message(seq: int, prev_seq: int, at_start: bool) -> str:
    if at_start:
        return (
            f"the chain does not start at genesis (seq {seq}): the first lines or an older "
            "rotated file were removed"
        )
    if seq > prev_seq + 1:
        return f"prev_hash does not match the line before; seq jumps {prev_seq} -> {seq}: line(s) removed or moved"
    if seq <= prev_seq:
        return f"prev_hash does not match the line before; seq {seq} after {prev_seq}: lines reordered or inserted"
    return "prev_hash does not match the line before: the line before it was replaced"


def verify(
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    progress_every: int = 10_000,
    want: frozenset[int] = frozenset(),
) -> VerifyReport:
    """Check the whole chain of the ledger at ``path`` (rotated files included, oldest first).

    ``want``: seqs whose hashes go into :attr:`VerifyReport.hashes` (those checkpoints vouch for).
    """
    files = ledger_files(path)
    report = VerifyReport(files=files)
    total = sum(f.stat().st_size for f in files)
    prev_hash, prev_seq = GENESIS, 0
    pending: list[Problem] = []  # unchained lines waiting for the next line to classify them
    for file, number, raw in iter_raw(path):
        report.bytes += len(raw) + 1
        if not raw.strip():
            continue
        split = _split(raw)
        if split is None:
            if _WHOLE.search(raw):
                report.problem = Problem(
                    "corrupt", file, number, None,
                    "not a chained JSON line any more (its hash suffix was changed)", len(raw),
                )  # fmt: skip
                return report
            if _parses(raw):
                report.problem = Problem(
                    "unchained", file, number, None,
                    "a JSON line without chain fields: the ledger never writes one, it was inserted",
                    len(raw),
                )  # fmt: skip
                return report
            pending.append(Problem("torn", file, number, None, "", len(raw)))
            continue
        body, digest = split
        chain = _CHAIN.search(body)
        # A bad line right after unchained ones means those were damaged, not torn.
        at = pending[0] if pending else None
        if hashlib.sha256(body).hexdigest() != digest or chain is None:
            seq_text = re.search(rb',"seq":(\d+),', body)
            report.problem = (
                Problem("corrupt", at.file, at.line, None, "not a valid ledger line", at.size)
                if at
                else Problem(
                    "edited",
                    file,
                    number,
                    int(seq_text.group(1)) if seq_text else None,
                    "the line's content does not match its hash: it was edited",
                    len(raw),
                )  # fmt: skip
            )
            return report
        seq = int(chain.group(1))
        if chain.group(2).decode() != prev_hash or seq != prev_seq + 1:
            if at:
                report.problem = Problem(
                    "corrupt", at.file, at.line, None, "not a valid ledger line", at.size
                )
            else:
                message = _broken_message(seq, prev_seq, report.first_seq is None)
                report.problem = Problem("broken_chain", file, number, seq, message, len(raw))
            return report
        for torn in pending:
            report.torn.append(
                Problem(
                    "torn",
                    torn.file,
                    torn.line,
                    None,
                    f"torn line at {torn.where()}, {torn.size} bytes: a writer died mid-write; "
                    "appending resumed after it",
                    torn.size,
                )  # fmt: skip
            )
        pending.clear()
        prev_hash, prev_seq = digest, seq
        report.last_seq, report.last_hash = seq, digest
        if report.first_seq is None:
            report.first_seq, report.first_hash = seq, digest
        if seq in want:
            report.hashes[seq] = digest
        report.lines += 1
        if progress is not None and report.lines % progress_every == 0:
            progress(report.lines, report.bytes, total)
    for torn in pending:
        report.torn.append(
            Problem(
                "torn",
                torn.file,
                torn.line,
                None,
                f"torn tail at {torn.where()}, {torn.size} bytes: a writer died mid-write",
                torn.size,
            )  # fmt: skip
        )
    if progress is not None:
        progress(report.lines, report.bytes, total)
    return report
