"""The console span tree of ``seeds/004``, rendered off the application's thread.

    [alt] transition: L3→L2 → success (5ms)
      └─[foc] gate_check: WriteApprovalGate → allowed (2ms)
          └─[mem] write: altitude.session → written (3ms) [saved 45 tokens]

Children end before their parents, so the exporter holds a trace's spans until its root
ends (or the process shuts down), then prints the whole tree at once.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Sequence
from typing import TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from membrane_otel.records import SpanData, span_from_sdk

LAYER_CODES = {
    "altitude": "alt",
    "focus": "foc",
    "reasoning": "rsn",
    "learning": "lrn",
    "memory": "mem",
    "system": "sys",
}
_MAX_PENDING = 10_000  # spans held for unfinished roots before the oldest traces print anyway

_RESET, _DIM, _RED, _YELLOW, _GREEN = "\033[0m", "\033[2m", "\033[31m", "\033[33m", "\033[32m"


def _status_colour(status: str) -> str:
    return {"error": _RED, "blocked": _YELLOW}.get(status, _GREEN)


def span_label(span: SpanData, *, colour: bool = False) -> str:
    """One line of the tree, without indentation: ``[alt] transition: L3→L2 → success (5ms)``."""
    a = span.attributes
    ms = max(0, round((span.end_ns - span.start_ns) / 1e6))
    if "hrm.layer" in a:
        code = LAYER_CODES.get(str(a["hrm.layer"]), str(a["hrm.layer"])[:3])
        status = str(a.get("hrm.status", "success"))
        inp = a.get("hrm.input_summary") or ""
        out = a.get("hrm.output_summary") or status
        head = f"[{code}] {a.get('hrm.operation', span.name)}"
        text = f"{head}: {inp} → {out}" if inp else f"{head} → {out}"
    else:
        status = "error" if span.status == "error" else "success"
        text = f"[span] {span.name} → {status}"
    text += f" ({ms}ms)"
    saved = a.get("hrm.meta.tokens_saved")
    if saved is not None:
        text += f" [saved {saved} tokens]"
    if status == "error":
        err = next((e.attributes.get("exception.message") for e in span.events if e.name == "exception"), None)
        if err:
            text += f" [{err}]"
    if colour:
        text = f"{_status_colour(status)}{text}{_RESET}" if status != "success" else text
    return text


def render_tree(spans: Iterable[SpanData], *, colour: bool = False) -> list[str]:
    """Lines of the forest formed by ``spans`` (parents before children, by start time)."""
    spans = sorted(spans, key=lambda s: s.start_ns)
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanData]] = {}
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(span: SpanData, depth: int) -> None:
        if depth == 0:
            prefix = ""
        else:
            prefix = "  " + "    " * (depth - 1) + "└─"
            if colour:
                prefix = f"{_DIM}{prefix}{_RESET}"
        lines.append(prefix + span_label(span, colour=colour))
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return lines


class ConsoleTreeSpanExporter(SpanExporter):
    """Prints each finished trace as the seed's tree. Select it as ``console``."""

    name = "console"

    def __init__(self, stream: TextIO | None = None, *, colour: bool | None = None) -> None:
        self._stream = stream
        self._colour = colour
        self._pending: dict[str, list[SpanData]] = {}
        self._count = 0
        self._lock = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def _use_colour(self) -> bool:
        if self._colour is not None:
            return self._colour
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ready: list[list[SpanData]] = []
        with self._lock:
            for raw in spans:
                span = span_from_sdk(raw)
                group = self._pending.setdefault(span.trace_id, [])
                group.append(span)
                self._count += 1
                # A local root (no parent, or a remote parent) ends last: the tree is whole.
                if span.parent_span_id is None or (raw.parent is not None and raw.parent.is_remote):
                    ready.append(self._pending.pop(span.trace_id))
                    self._count -= len(ready[-1])
            while self._count > _MAX_PENDING and self._pending:
                oldest = next(iter(self._pending))
                ready.append(self._pending.pop(oldest))
                self._count -= len(ready[-1])
        self._print(ready)
        return SpanExportResult.SUCCESS

    def _print(self, groups: list[list[SpanData]]) -> None:
        if not groups:
            return
        colour = self._use_colour()
        out: list[str] = []
        for group in groups:
            out.extend(render_tree(group, colour=colour))
        try:
            self.stream.write("\n".join(out) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream at exit is not the app's problem
            pass

    def shutdown(self) -> None:
        with self._lock:
            groups = list(self._pending.values())
            self._pending.clear()
            self._count = 0
        self._print(groups)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

