"""Operating the pipeline (``seeds/002``): the watchdog, readiness, 5W1H narratives."""

from __future__ import annotations

from membrane_otel._internal.lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from membrane_otel.ops._narrative import Narrator, narrate
    from membrane_otel.ops._readiness import acheck_readiness, check_readiness
    from membrane_otel.ops._watchdog import PipelineWatchdog

__all__ = ["Narrator", "PipelineWatchdog", "acheck_readiness", "check_readiness", "narrate"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Narrator": "._narrative",
        "narrate": "._narrative",
        "acheck_readiness": "._readiness",
        "check_readiness": "._readiness",
        "PipelineWatchdog": "._watchdog",
    },
)
