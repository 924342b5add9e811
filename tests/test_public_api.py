"""The public surface is exactly what users may import."""

from __future__ import annotations

import membrane_otel

PUBLIC = [
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


def test_all_is_exactly_the_public_api() -> None:
    """__all__ lists the public names, sorted, and each resolves."""
    assert sorted(PUBLIC) == membrane_otel.__all__
    assert sorted(membrane_otel._EXPORTS) == membrane_otel.__all__, "every export is lazily importable"
    for name in membrane_otel.__all__:
        assert getattr(membrane_otel, name) is not None
