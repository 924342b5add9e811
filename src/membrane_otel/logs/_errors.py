"""Error identity and shape: stack fingerprints, dedupe keys, node ids, severities, size limits.

Everything here is a pure function, cheap enough for the application thread:

* :func:`stack_fingerprint` walks ``tb_next`` (no ``traceback.extract_tb``, no ``linecache``:
  ~3 us instead of ~30) and hashes ``file::function`` of the five innermost frames, the ones
  where the error happened. ``file`` is the basename (with its package directory for an
  ``__init__.py``/``__main__.py``), never an absolute path or a line number, so the same
  error from an edited, redeployed or moved file keeps its fingerprint.
* :func:`capture_exception` / :func:`capture_frames` keep what a traceback text needs as
  plain tuples (no frame references, so no locals are kept alive); :func:`render_stack`
  turns them into the standard ``Traceback (most recent call last):`` text later, on a
  background thread. Rendering (reading source lines) is most of what ``logger.exception``
  costs, so the application thread need not pay for it.

Frame tuples are ordered like a traceback: outermost first, innermost (most recent) last.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import linecache
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import CodeType, FrameType, TracebackType

from membrane_otel._internal.tables import (
    BODY_MAX_BYTES,
    CONTENT_MAX_CHARS,
    STACK_MAX_BYTES,
    STACK_MAX_LINES,
    TRUNCATED,
    Severity,
    level_to_severity,
    node_id,
    severity_to_urgency,
    slug,
    truncate,
    truncate_stack,
)

__all__ = [
    "BODY_MAX_BYTES",
    "CONTENT_MAX_CHARS",
    "STACK_MAX_BYTES",
    "STACK_MAX_LINES",
    "TRUNCATED",
    "CapturedException",
    "Frame",
    "Severity",
    "capture_call_site",
    "capture_exception",
    "capture_frames",
    "dedupe_key",
    "exception_type_name",
    "fingerprint_from_stacktrace",
    "level_to_severity",
    "node_id",
    "normalise_message",
    "render_stack",
    "severity_to_urgency",
    "slug",
    "stack_fingerprint",
    "truncate",
    "truncate_stack",
]

FINGERPRINT_FRAMES = 5
# Frames kept by capture_frames: a RecursionError has ~1000, and only the first 60 lines of
# the rendered text are kept anyway.
CAPTURE_MAX_FRAMES = 64
_CHAIN_MAX = 5

Frame = tuple[str, int, str]  # (filename, lineno, function)

# ---------------------------------------------------------------------------- fingerprints

_file_keys: dict[str, str] = {}


def _file_key(filename: str) -> str:
    """The path part of a fingerprint: stable across checkouts, deployments and moves."""
    key = _file_keys.get(filename)
    if key is None:
        head, base = os.path.split(filename.replace("\\", "/"))
        if base in ("__init__.py", "__main__.py"):
            # Every package has one: the package name is what tells them apart.
            key = f"{os.path.basename(head)}/{base}"
        else:
            key = base
        if len(_file_keys) >= 4096:  # bounded: exec'd code can mint endless "<string-N>" names
            _file_keys.clear()
        _file_keys[filename] = key
    return key


_by_codes: dict[tuple[CodeType, ...], str] = {}


def _hash_sites(sites: Sequence[tuple[str, str]]) -> str:
    joined = "|".join(f"{_file_key(f)}::{fn}" for f, fn in sites)
    return hashlib.sha1(joined.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def stack_fingerprint(
    tb: TracebackType | None = None,
    *,
    frames: Sequence[tuple[str, str] | tuple[str, int, str]] | None = None,
    stack: FrameType | None = None,
) -> str:
    """sha1 of ``file::function`` of the 5 innermost frames, joined by ``|`` (40 hex chars).

    From a traceback (``tb``: the frames from the handler down to the ``raise``), from
    frame tuples (``frames``, outermost first: ``(file, function)`` or ``(file, line,
    function)``), or, for an error logged without an exception, from the call stack:
    ``stack`` is the innermost frame, and with no argument at all the caller's stack is
    used, with this package's frames skipped and, when called inside a logging handler,
    logging's and the handler's too: the fingerprint is the one of the ``logger.error(...)``
    call site.
    """
    if tb is not None:
        codes: list[CodeType] = []
        while tb is not None:
            codes.append(tb.tb_frame.f_code)
            tb = tb.tb_next
        # A code object stands for its file and function: the same five give the same hash,
        # so an error raised again (a storm, a retry loop) is fingerprinted by one lookup.
        key = tuple(codes[-FINGERPRINT_FRAMES:])
        hit = _by_codes.get(key)
        if hit is None:
            hit = _hash_sites([(c.co_filename, c.co_name) for c in key])
            if len(_by_codes) >= 4096:  # bounded, like the file keys
                _by_codes.clear()
            _by_codes[key] = hit
        return hit
    if frames is not None:
        return _hash_sites([(f[0], f[-1]) for f in frames[-FINGERPRINT_FRAMES:]])
    if stack is None:
        stack = _outside_frame(sys._getframe(1))
    sites: list[tuple[str, str]] = []
    frame: FrameType | None = stack
    while frame is not None and len(sites) < FINGERPRINT_FRAMES:
        code = frame.f_code
        sites.append((code.co_filename, code.co_name))
        frame = frame.f_back
    sites.reverse()  # outermost first, as in a traceback
    return _hash_sites(sites)


def fingerprint_from_stacktrace(text: str) -> str | None:
    """The fingerprint of a rendered Python traceback (a record from a process that didn't
    compute one): the same as :func:`stack_fingerprint` of the traceback it renders, as long
    as the text was not truncated. Of chained exceptions the last, the one logged, counts.
    ``None`` if the text holds no frame lines."""
    start = max(text.rfind("Traceback (most recent call last):"), 0)
    sites: list[tuple[str, str]] = []
    for m in _FRAME_LINE.finditer(text, start):
        if m.group("file") is not None:
            sites.append((m.group("file"), m.group("func")))
        elif sites:  # "[Previous line repeated N more times]"
            sites.extend([sites[-1]] * int(m.group("times")))
    if not sites:
        return None
    return _hash_sites(sites[-FINGERPRINT_FRAMES:])


_FRAME_LINE = re.compile(
    r'^  (?:File "(?P<file>[^"\n]*)", line \d+, in (?P<func>[^\n]+)'
    r"|\[Previous line repeated (?P<times>\d+) more times?\])$",
    re.MULTILINE,
)


# Frames skipped when fingerprinting a call site: logging itself and this package.
_LOGGING_DIR = os.path.dirname(logging.__file__) + os.sep
_SKIP_DIRS = (_LOGGING_DIR, os.path.dirname(os.path.abspath(__file__)) + os.sep)
_HANDLER_DEPTH = 16  # how far out to look for logging's frames above a handler


def _outside_frame(frame: FrameType | None) -> FrameType | None:
    """The frame of the logging call, seen from inside a handler: the first frame beyond
    logging's own (and this package's). Called outside logging, the first frame that is
    not this package's."""
    first_outside: FrameType | None = None
    probe = frame
    for _ in range(_HANDLER_DEPTH):
        if probe is None:
            break
        filename = probe.f_code.co_filename
        if filename.startswith(_LOGGING_DIR):
            # Inside a handler (ours or anyone's): the call site is past logging's frames.
            while probe is not None and probe.f_code.co_filename.startswith(_SKIP_DIRS):
                probe = probe.f_back
            return probe
        if first_outside is None and not filename.startswith(_SKIP_DIRS):
            first_outside = probe
        probe = probe.f_back
    if first_outside is None:
        while frame is not None and frame.f_code.co_filename.startswith(_SKIP_DIRS):
            frame = frame.f_back
        return frame
    return first_outside


def capture_call_site(limit: int = FINGERPRINT_FRAMES) -> tuple[Frame, ...]:
    """The ``limit`` frames nearest the logging call (logging's and our own skipped),
    outermost first; ``stack_fingerprint(frames=capture_call_site())`` equals
    ``stack_fingerprint()`` taken at the same place."""
    frame = _outside_frame(sys._getframe(1))
    out: list[Frame] = []
    while frame is not None and len(out) < limit:
        out.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        frame = frame.f_back
    out.reverse()
    return tuple(out)


# ------------------------------------------------------------------- capture, render later


def capture_frames(tb: TracebackType | None, limit: int = CAPTURE_MAX_FRAMES) -> tuple[Frame, ...]:
    """``(filename, lineno, function)`` of each traceback frame, outermost first: the
    innermost ``limit`` of them. No source lines are read."""
    out: list[Frame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    return tuple(out[-limit:]) if len(out) > limit else tuple(out)


def _code_lasti(tb: TracebackType | None, limit: int) -> tuple[tuple[CodeType, int], ...]:
    # Code objects, unlike frames, hold no locals: keeping them costs nothing, and the
    # instruction offset gives the column range that 3.11 underlines with ^^^.
    out: list[tuple[CodeType, int]] = []
    while tb is not None:
        out.append((tb.tb_frame.f_code, tb.tb_lasti))
        tb = tb.tb_next
    return tuple(out[-limit:]) if len(out) > limit else tuple(out)


def render_stack(
    exc_type_name: str,
    message: str,
    frames: Sequence[Frame],
    *,
    code_lasti: Sequence[tuple[CodeType, int]] | None = None,
) -> str:
    """The standard traceback text of ``frames`` (as from :func:`capture_frames`), source
    lines read now through ``linecache``; ends with ``Type: message``. With ``code_lasti``
    (what :func:`capture_exception` keeps) the text has 3.11's ``^^^`` markers too, and is
    exactly what ``traceback.format_exception`` would have printed."""
    summaries = []
    seen: set[str] = set()
    for i, (filename, lineno, name) in enumerate(frames):
        if filename not in seen:
            seen.add(filename)
            linecache.checkcache(filename)  # the file may have changed since it was loaded
        end_lineno = colno = end_colno = None
        if code_lasti is not None and i < len(code_lasti):
            code, lasti = code_lasti[i]
            if lasti >= 0:
                with contextlib.suppress(StopIteration, ValueError):
                    _, end_lineno, colno, end_colno = next(
                        itertools.islice(code.co_positions(), lasti // 2, None)
                    )
        summaries.append(
            traceback.FrameSummary(
                filename,
                lineno,
                name,
                lookup_line=False,
                end_lineno=end_lineno,
                colno=colno,
                end_colno=end_colno,
            )
        )
    body = "".join(traceback.StackSummary.from_list(summaries).format())
    last = f"{exc_type_name}: {message}" if message else exc_type_name
    return f"Traceback (most recent call last):\n{body}{last}\n"


def exception_type_name(exc_type: type[BaseException]) -> str:
    """The name a traceback prints: qualified unless builtin (``KeyError``, ``pkg.mod.MyError``)."""
    module = exc_type.__module__
    name = exc_type.__qualname__
    return name if module in ("builtins", "__main__") else f"{module}.{name}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break logging
        return "<exception str() failed>"


@dataclass(frozen=True, slots=True)
class CapturedException:
    """An exception reduced to plain data on the application thread, rendered later."""

    type_name: str
    message: str
    frames: tuple[Frame, ...]
    notes: tuple[str, ...] = ()
    # The exception this one was raised from (``cause_explicit``) or while handling.
    cause: CapturedException | None = None
    cause_explicit: bool = True
    code_lasti: tuple[tuple[CodeType, int], ...] = field(default=(), repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        return stack_fingerprint(frames=self.frames)

    def render(self) -> str:
        """The text ``traceback.format_exception`` would give, chained exceptions included."""
        text = render_stack(self.type_name, self.message, self.frames, code_lasti=self.code_lasti)
        if self.notes:
            text += "".join(f"{note}\n" for note in self.notes)
        if self.cause is None:
            return text
        link = (
            "The above exception was the direct cause of the following exception:"
            if self.cause_explicit
            else "During handling of the above exception, another exception occurred:"
        )
        return f"{self.cause.render()}\n{link}\n\n{text}"


def capture_exception(exc: BaseException, *, chain: bool = True) -> CapturedException:
    """Frames, type, message and notes of ``exc`` (and, with ``chain``, of up to 5 causes)."""
    return _capture(exc, chain, set())


def _capture(exc: BaseException, chain: bool, seen: set[int]) -> CapturedException:
    seen.add(id(exc))
    cause: CapturedException | None = None
    explicit = True
    if chain and len(seen) <= _CHAIN_MAX:
        nxt = exc.__cause__
        if nxt is None and not exc.__suppress_context__:
            nxt, explicit = exc.__context__, False
        if nxt is not None and id(nxt) not in seen:
            cause = _capture(nxt, chain, seen)
    notes = getattr(exc, "__notes__", None)
    return CapturedException(
        type_name=exception_type_name(type(exc)),
        message=_message(exc),
        frames=capture_frames(exc.__traceback__),
        code_lasti=_code_lasti(exc.__traceback__, CAPTURE_MAX_FRAMES),
        notes=tuple(str(n) for n in notes) if isinstance(notes, list) else (),
        cause=cause,
        cause_explicit=explicit,
    )


# ----------------------------------------------------------------------- dedupe, node ids

# One pass, alternatives in priority order: the variable parts of a message, each with a
# placeholder, so "Bootstrap failed for 17" and "Bootstrap failed for 18" group together.
_VARIABLE = re.compile(
    r"""(?P<q>(?<![A-Za-z0-9])'[^'\n]{0,200}'(?![A-Za-z0-9])|"[^"\n]{0,200}")"""
    r"|(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)"
    r"|(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<email>\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b)"
    r"|(?P<ip>\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b)"
    r"|(?P<hex>\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b)"
    r"|(?P<num>(?<![A-Za-z])[-+]?\d+(?:\.\d+)?)"
)
_PLACEHOLDERS = {
    "q": "<str>",
    "ts": "<ts>",
    "uuid": "<uuid>",
    "email": "<email>",
    "ip": "<ip>",
    "hex": "<hex>",
    "num": "<n>",
}
_NORMALISE_MAX = 2000  # chars looked at: the head of a message says what kind it is


def normalise_message(message: str) -> str:
    """``message`` with quoted values, timestamps, uuids, emails, IPs, hex ids and numbers
    replaced by placeholders (``'<str>'``, ``<n>``, ...). Numbers inside words (``utf8``,
    ``http2``) stay: they name things rather than count them."""
    return _VARIABLE.sub(_placeholder, message[:_NORMALISE_MAX])


def _placeholder(m: re.Match[str]) -> str:
    return _PLACEHOLDERS[m.lastgroup or "num"]


def dedupe_key(script: str, error_type: str | None, message: str, fingerprint: str) -> str:
    """sha1 of ``script|error_type|normalised message|fingerprint`` (40 hex chars)."""
    joined = f"{script}|{error_type or ''}|{normalise_message(message)}|{fingerprint}"
    return hashlib.sha1(joined.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()
