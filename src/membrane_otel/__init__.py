"""membrane-otel: an OpenTelemetry distro for Python agent systems.

``opentelemetry-instrument python app.py`` (or :func:`configure`) and the app's HRM
operations become spans, its errors fingerprinted log records, its events ledger lines,
and its membrane-bound records ``membrane.inject`` envelopes.

Names are imported on first use, so that ``membrane-otel emit`` (which imports this
package) starts without paying for pydantic or the OTel SDK.
"""

from __future__ import annotations

import importlib

# Not `from typing import TYPE_CHECKING`: importing typing costs the shell emitter ~7 ms of
# its start-up budget. Type checkers treat this constant the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from membrane_otel._internal.counters import get_metrics
    from membrane_otel._setup import configure, force_flush, shutdown
    from membrane_otel.ledger._events import (
        append_ledger,
        emit_alert,
        emit_event,
        emit_monitoring_snapshot,
        emit_system_event,
        emit_task_lifecycle,
    )
    from membrane_otel.logs._l2logger import setup_l2_logger
    from membrane_otel.ops import _narrative as narrative
    from membrane_otel.ops._watchdog import check_readiness
    from membrane_otel.settings import ConfigError, Settings
    from membrane_otel.spans._flag import add_trace_flag
    from membrane_otel.spans._hrm import tracer

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "ConfigError": "membrane_otel.settings",
    "add_trace_flag": "membrane_otel.spans._flag",
    "Settings": "membrane_otel.settings",
    "configure": "membrane_otel._setup",
    "force_flush": "membrane_otel._setup",
    "get_metrics": "membrane_otel._internal.counters",
    "shutdown": "membrane_otel._setup",
    "tracer": "membrane_otel.spans._hrm",
    "setup_l2_logger": "membrane_otel.logs._l2logger",
    "append_ledger": "membrane_otel.ledger._events",
    "emit_alert": "membrane_otel.ledger._events",
    "emit_event": "membrane_otel.ledger._events",
    "emit_monitoring_snapshot": "membrane_otel.ledger._events",
    "emit_system_event": "membrane_otel.ledger._events",
    "emit_task_lifecycle": "membrane_otel.ledger._events",
    "check_readiness": "membrane_otel.ops._watchdog",
    "narrative": "membrane_otel",
}

__all__ = [
    "ConfigError",
    "Settings",
    "add_trace_flag",
    "append_ledger",
    "check_readiness",
    "configure",
    "emit_alert",
    "emit_event",
    "emit_monitoring_snapshot",
    "emit_system_event",
    "emit_task_lifecycle",
    "force_flush",
    "get_metrics",
    "narrative",
    "setup_l2_logger",
    "shutdown",
    "tracer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'membrane_otel' has no attribute {name!r}")
    if name == "narrative":  # a submodule, exported as a namespace (narrative.narrate(...))
        value = importlib.import_module("membrane_otel.ops._narrative")
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
