"""The membrane stimuli SDK (``seeds/003``): ``from membrane_otel.stimuli import emit_script_error``.

The implementation lives in :mod:`membrane_otel.membrane._stimuli`; this is its public name.
"""

from membrane_otel.membrane._stimuli import (
    MembraneEmitter,
    OriginType,
    Scope,
    StimulusFeatures,
    emit_metric,
    emit_script_error,
    emit_tool_result,
    emit_ui_action,
    get_metrics,
)

__all__ = [
    "MembraneEmitter",
    "OriginType",
    "Scope",
    "StimulusFeatures",
    "emit_metric",
    "emit_script_error",
    "emit_tool_result",
    "emit_ui_action",
    "get_metrics",
]
