"""The membrane path (``seeds/003``): envelopes, the publisher, the bus client and its disk
spool, the per-signal throttle, the reference bus, and the stimuli SDK."""

from __future__ import annotations

from membrane_otel._internal.lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from membrane_otel.membrane._bus import BusClient, BusError
    from membrane_otel.membrane._bus_server import BusServer
    from membrane_otel.membrane._envelope import Envelope, StimulusFeatures
    from membrane_otel.membrane._publish import MembranePublisher
    from membrane_otel.membrane._spool import Spool

__all__ = ["BusClient", "BusError", "BusServer", "Envelope", "MembranePublisher", "Spool", "StimulusFeatures"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BusClient": "._bus",
        "BusError": "._bus",
        "BusServer": "._bus_server",
        "Envelope": "._envelope",
        "StimulusFeatures": "._envelope",
        "MembranePublisher": "._publish",
        "Spool": "._spool",
    },
)
