"""The seed's Layer 2 watchdog and 5W1H Clarity logging (``seeds/002``), by their seed names.

    from membrane_otel.watchdog import layer2_watchdog, register_component, clarity_5w1h

    register_component("scheduler", probe, thresholds={"dispatched": {"min_rate": 1}})
    await layer2_watchdog.start()
    readiness = await layer2_watchdog.check_readiness(timeout_seconds=30)
    report = layer2_watchdog.get_health_report()
    await clarity_5w1h.log_task_dispatch(dispatcher="htm_orchestrator", ...)

The seed's ``backend.monitoring.layer2_watchdog`` and ``backend.core.clarity_5w1h`` map to
this module. Implementation: :mod:`membrane_otel.ops._components` (the watchdog) and
:mod:`membrane_otel.ops._narrative` (the narratives, each call awaitable as the seed awaits it).
"""

from __future__ import annotations

from membrane_otel.ops import _narrative as clarity_5w1h
from membrane_otel.ops._components import Layer2Watchdog, layer2_watchdog, register_component

__all__ = ["Layer2Watchdog", "clarity_5w1h", "layer2_watchdog", "register_component"]
