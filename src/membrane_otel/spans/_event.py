"""``TraceEvent``: the seed's record of one HRM operation, for readers of span ledger lines.

``seeds/004`` writes each operation as a ``TraceEvent`` dataclass; here the operation is an
OTel span, and its ledger line keeps the seed's field names. ``TraceEvent.from_line`` reads
such a line back, so code written against the seed's dataclass (viewers, stats, tests)
keeps working::

    from membrane_otel.ledger import read_lines
    from membrane_otel.spans import TraceEvent

    events = [TraceEvent.from_line(ln) for ln in read_lines(path) if ln["event"] == "hrm_trace"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TraceEvent:
    """One traced operation, field for field as ``seeds/004`` defines it."""

    trace_id: str  # the readable event id, alt_1705180800_a3f2
    parent_id: str | None
    timestamp: str  # ISO 8601
    hrm_layer: str  # altitude|focus|reasoning|learning|memory|system
    operation: str
    component: str
    input_summary: str
    output_summary: str
    duration_ms: int
    status: str  # success|error|blocked
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_line(cls, line: Mapping[str, Any]) -> TraceEvent:
        """The event in an ``hrm_trace`` ledger line (or a seed-era ``trace.jsonl`` line).

        Raises ``ValueError`` naming the missing field when ``line`` is not a trace line.
        """
        missing = [k for k in ("trace_id", "hrm_layer", "operation") if not line.get(k)]
        if missing:
            raise ValueError(f"not an HRM trace line: no {missing[0]!r}")
        duration = line.get("duration_ms") or 0
        metadata = line.get("metadata")
        return cls(
            trace_id=str(line["trace_id"]),
            parent_id=line.get("parent_id"),
            timestamp=str(line.get("timestamp") or line.get("ts") or ""),
            hrm_layer=str(line["hrm_layer"]),
            operation=str(line["operation"]),
            component=str(line.get("component") or ""),
            input_summary=str(line.get("input_summary") or ""),
            output_summary=str(line.get("output_summary") or ""),
            duration_ms=round(float(duration)),
            status=str(line.get("status") or "success"),
            metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed's ``asdict(event)``: what one line of its ``trace.jsonl`` held."""
        return asdict(self)
