"""The console span tree of ``seeds/004``, rendered off the application's thread.

    [alt] transition: L3→L2 → success (5ms)
      └─[foc] gate_check: WriteApprovalGate → allowed (2ms)
          └─[mem] write: altitude.session → written (3ms) [saved 45 tokens]

Children end before their parents, so the exporter holds a trace's spans until its local
root ends (or the process shuts down), then prints the whole tree at once. A root still
running after ``hold_s`` (1 s) does not keep its children back: each finished subtree is
printed as it arrives, indented under the running root, and the root's own line follows
when it ends. The same
:func:`render_tree` draws ``membrane-otel traces view`` from ledger lines, so the terminal
shows one format whichever way a tree reaches it.

Levels (the seed's ``tracing.level``, ``MEMBRANE_TRACE_LEVEL``):

* ``info`` (default) prints every tree;
* ``warn`` prints only the trees that hold an ``error`` or ``blocked`` operation;
* ``debug`` prints every tree, each line followed by its event id, component and metadata.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from membrane_otel._internal.tables import truncate
from membrane_otel.logs._redact_spans import redact_span_data
from membrane_otel.spans._layers import CODES, SUMMARY_LIMIT
from membrane_otel.translate._records import SpanData, span_from_sdk

TraceLevel = Literal["debug", "info", "warn"]
LAYER_CODES = CODES
_MAX_PENDING = 10_000  # spans held for unfinished roots before the oldest traces print anyway
_DONE_MEMORY = 1024  # printed traces remembered, so a late child prints at once, not at exit

RESET, DIM, BOLD = "\033[0m", "\033[2m", "\033[1m"
RED, GREEN, YELLOW, CYAN = "\033[31m", "\033[32m", "\033[33m", "\033[36m"
STATUS_COLOURS = {"success": GREEN, "error": RED, "blocked": YELLOW}


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed stream
        return False


def paint(text: str, code: str, colour: bool) -> str:
    return f"{code}{text}{RESET}" if colour and text else text


def hrm_status(span: SpanData) -> str:
    """success / error / blocked: the HRM status, or the OTel status of a non-HRM span."""
    status = span.attributes.get("hrm.status")
    if isinstance(status, str) and status:
        return status
    return "error" if span.status == "error" else "success"


def _error_text(span: SpanData) -> str:
    """``Type: message`` of the span's exception, cut like a summary (a tree line stays a line)."""
    text = span.status_message or ""
    for event in span.events:
        if event.name == "exception":
            kind = event.attributes.get("exception.type")
            message = event.attributes.get("exception.message")
            text = ": ".join(str(p) for p in (kind, message) if p)
            break
    text = " ".join(text.split())
    return truncate(text, SUMMARY_LIMIT, marker="…")


def _detail(span: SpanData) -> str:
    """The ``debug`` suffix: event id, component and every metadata entry."""
    a = span.attributes
    parts: list[str] = []
    for key, label in (("hrm.event_id", "id"), ("hrm.component", "component")):
        if a.get(key):
            parts.append(f"{label}={a[key]}")
    for key, value in a.items():
        if key.startswith("hrm.meta."):
            parts.append(f"{key[len('hrm.meta.') :]}={value}")
        elif not key.startswith("hrm.") and "hrm.layer" not in a:
            parts.append(f"{key}={value}")
    return "{" + ", ".join(parts) + "}" if parts else ""


def span_label(span: SpanData, *, colour: bool = False, debug: bool = False) -> str:
    """One line of the tree, without indentation: ``[alt] transition: L3→L2 → success (5ms)``."""
    a = span.attributes
    ms = max(0, round((span.end_ns - span.start_ns) / 1e6))
    status = hrm_status(span)
    if "hrm.layer" in a:
        layer = str(a["hrm.layer"])
        tag = f"[{LAYER_CODES.get(layer, layer[:3])}]"
        op = str(a.get("hrm.operation") or span.name)
        inp = str(a.get("hrm.input_summary") or "")
        out = str(a.get("hrm.output_summary") or status)
    else:
        tag, op, inp, out = "[span]", span.name, "", status
    head = f"{paint(tag, CYAN, colour)} {op}"
    text = f"{head}: {inp}" if inp else head
    text += f" → {paint(out, STATUS_COLOURS.get(status, ''), colour)} {paint(f'({ms}ms)', DIM, colour)}"
    saved = a.get("hrm.meta.tokens_saved")
    if saved is not None:
        text += f" [saved {saved} tokens]"
    if status == "blocked":
        reason = a.get("hrm.meta.blocked_reason")
        text += " " + paint(f"[blocked: {reason}]" if reason else "[blocked]", YELLOW, colour)
    elif status == "error":
        err = _error_text(span)
        text += " " + paint(f"[error: {err}]" if err else "[error]", RED, colour)
    if debug:
        detail = _detail(span)
        if detail:
            text += " " + paint(detail, DIM, colour)
    return text


def render_tree(
    spans: Iterable[SpanData], *, colour: bool = False, debug: bool = False, base_depth: int = 0
) -> list[str]:
    """Lines of the forest formed by ``spans``: parents before children, siblings by start time.

    A span whose parent is not among ``spans`` is drawn as a root (at ``base_depth``: 1 draws
    the forest as children of a root not shown), so any subset renders.
    """
    ordered = sorted(spans, key=lambda s: s.start_ns)
    ids = {s.span_id for s in ordered}
    children: dict[str | None, list[SpanData]] = {}
    for s in ordered:
        parent = s.parent_span_id if s.parent_span_id in ids and s.parent_span_id != s.span_id else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []
    seen: set[int] = set()

    def walk(root: SpanData) -> None:
        # Iterative, so a deep (or, from a damaged ledger, cyclic) chain cannot overflow the stack.
        stack: list[tuple[SpanData, int]] = [(root, base_depth)]
        while stack:
            span, depth = stack.pop()
            if id(span) in seen:
                continue
            seen.add(id(span))
            prefix = "" if depth == 0 else "  " + "    " * (depth - 1) + "└─"
            lines.append(paint(prefix, DIM, colour) + span_label(span, colour=colour, debug=debug))
            stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))

    for root in children.get(None, []):
        walk(root)
    for span in ordered:  # only spans caught in a parent cycle are left
        if id(span) not in seen:
            walk(span)
    return lines


def has_problem(spans: Iterable[SpanData]) -> bool:
    """Whether any operation in ``spans`` ended ``error`` or ``blocked`` (what ``warn`` prints)."""
    return any(hrm_status(s) != "success" for s in spans)


class ConsoleTreeSpanExporter(SpanExporter):
    """Prints each finished trace as the seed's tree. Select it as ``console``.

    ``stream`` None means the current ``sys.stderr``; ``colour`` None means "if it is a
    terminal"; ``level`` None means the settings' ``trace_level``.
    """

    name = "console"

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        colour: bool | None = None,
        level: TraceLevel | None = None,
        hold_s: float = 1.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if level is None:
            from membrane_otel.settings import get_settings

            level = get_settings().trace_level
        if level not in ("debug", "info", "warn"):
            raise ValueError(f"unknown trace level {level!r}: expected debug, info or warn")
        self._level: TraceLevel = level
        self._stream = stream
        self._colour = colour
        self._pending: dict[str, list[SpanData]] = {}
        self._done: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._count = 0
        self._lock = threading.Lock()
        self._hold_s = hold_s
        self._clock = clock
        self._since: dict[str, int] = {}  # trace id -> earliest start (ns) of its spans seen

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def _finish(self, trace_id: str, ready: list[list[SpanData]]) -> None:
        self._since.pop(trace_id, None)
        group = self._pending.pop(trace_id, [])
        self._count -= len(group)
        ready.append(group)
        self._done[trace_id] = None
        if len(self._done) > _DONE_MEMORY:
            self._done.popitem(last=False)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ready: list[list[SpanData]] = []
        partial: list[list[SpanData]] = []
        with self._lock:
            now = self._clock()
            for raw in spans:
                span = redact_span_data(span_from_sdk(raw))
                if span.trace_id in self._done:
                    # A child that outlived its printed root (a detached thread or task).
                    ready.append([span])
                    continue
                self._pending.setdefault(span.trace_id, []).append(span)
                since = self._since.get(span.trace_id)
                if since is None or span.start_ns < since:
                    self._since[span.trace_id] = span.start_ns
                self._count += 1
                # A local root (no parent, or a remote one) ends last: the tree is whole.
                if span.parent_span_id is None or (raw.parent is not None and raw.parent.is_remote):
                    self._finish(span.trace_id, ready)
            # A root running for hold_s already: print what has finished under it so far.
            for trace_id, since in list(self._since.items()):
                if now - since >= self._hold_s * 1e9 and self._pending.get(trace_id):
                    group = self._pending.pop(trace_id)
                    self._pending[trace_id] = []
                    self._count -= len(group)
                    partial.append(group)
            while self._count > _MAX_PENDING and self._pending:
                self._finish(next(iter(self._pending)), ready)
        self._print(partial, base_depth=1)
        self._print(ready)
        return SpanExportResult.SUCCESS

    def _print(self, groups: list[list[SpanData]], *, base_depth: int = 0) -> None:
        groups = [g for g in groups if g]
        if self._level == "warn":
            groups = [g for g in groups if has_problem(g)]
        if not groups:
            return
        stream = self.stream
        colour = use_colour(stream) if self._colour is None else self._colour
        out: list[str] = []
        for group in groups:
            out.extend(render_tree(group, colour=colour, debug=self._level == "debug", base_depth=base_depth))
        try:
            stream.write("\n".join(out) + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed stream at exit is not the app's problem
            pass

    def shutdown(self) -> None:
        with self._lock:
            groups = [g for g in self._pending.values() if g]
            self._pending.clear()
            self._since.clear()
            self._count = 0
        self._print(groups)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
