"""HRM tracing (``seeds/004``) on real OTel spans, and the console span tree."""

from __future__ import annotations

from membrane_otel._internal.lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from membrane_otel.spans._console_tree import ConsoleTreeSpanExporter
    from membrane_otel.spans._event import TraceEvent
    from membrane_otel.spans._hrm import HRMTracer, tracer

__all__ = ["ConsoleTreeSpanExporter", "HRMTracer", "TraceEvent", "tracer"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ConsoleTreeSpanExporter": "._console_tree",
        "HRMTracer": "._hrm",
        "TraceEvent": "._event",
        "tracer": "._hrm",
    },
)
