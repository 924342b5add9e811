"""The membrane path: translated records → throttle → bus client (with its disk spool).

Both the in-process ``membrane`` exporter and the bridge submit here. Throttling lives on
this path only (the ledger keeps every record): per signal type and per fingerprint, as
``seeds/000`` says, and the next envelope that goes out carries how many were held back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.settings import Settings, get_settings
from membrane_otel.translate._core import log_envelope, otel_severity, wants_envelope
from membrane_otel.translate._records import LogData

_log = RateLimitedLogger(logging.getLogger("membrane_otel.membrane._publish"))
THROTTLED_SIGNALS = frozenset({"script_error"})


class MembranePublisher:
    """Turns log records into envelopes and hands them to the bus client."""

    def __init__(self, settings: Settings, bus: Any, throttle: Any | None) -> None:
        self._settings = settings
        self._bus = bus
        self._throttle = throttle
        self._l2 = otel_severity(settings.l2_level)
        self._legacy = settings.envelope_format == "legacy"

    def submit_logs(self, logs: Sequence[LogData]) -> int:
        """Publish the envelopes of the records meant for the membrane; returns how many."""
        sent = 0
        for log in logs:
            if not wants_envelope(log, self._l2):
                continue
            counters.incr("envelopes")
            try:
                env = log_envelope(log, default_scope=self._settings.scope)
            except ValidationError as exc:
                counters.incr("rejected")
                _log.error(
                    "record %s cannot become an envelope: %s", log.event_name or "log", exc.errors()[0]
                )
                continue
            md = env.metadata
            # Error storms are throttled (seeds/000: per type 1/15 s, per fingerprint 1/10 s);
            # stimuli, metrics and UI/tool signals are not errors and pass untouched.
            if self._throttle is not None and md.signal_type in THROTTLED_SIGNALS:
                decision = self._throttle.admit(md.signal_type, md.stack_fingerprint or md.dedupe_key or "")
                if not decision.allowed:
                    counters.incr("suppressed")
                    continue
                # Every record the type limit held back since the last one out, so that
                # sum(held_back) over delivered envelopes == suppressed (nothing unaccounted).
                if decision.held_back_type:
                    md.held_back = decision.held_back_type
                if decision.held_back:
                    md.held_back_fingerprint = decision.held_back
            self.publish(env.to_json_dict(legacy=self._legacy))
            sent += 1
        return sent

    def publish(self, envelope: dict[str, Any]) -> None:
        """Publish one already-built envelope (the bridge's legacy ``/ingest`` uses this)."""
        self._bus.publish(envelope)

    def status(self) -> dict[str, Any]:
        """What readiness checks need: is the bus client running, and how full is it."""
        return {
            "running": bool(getattr(self._bus, "running", True)),
            "queue_depth": int(getattr(self._bus, "queue_depth", 0)),
            "url": getattr(self._bus, "url", None),
        }

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        return bool(self._bus.force_flush(timeout_millis))

    def shutdown(self, timeout_millis: float = 30000) -> None:
        self._bus.shutdown(timeout_millis)


_publisher: MembranePublisher | None = None
_lock = threading.Lock()


def build_publisher(settings: Settings) -> MembranePublisher:
    from membrane_otel.membrane._bus import BusClient
    from membrane_otel.membrane._spool import Spool
    from membrane_otel.membrane._throttle import Throttle

    spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes)
    bus = BusClient(
        settings.bus_url,
        spool,
        token=settings.bus_token,
        ssl_ca=str(settings.bus_ca_file) if settings.bus_ca_file else None,
        queue_size=settings.queue_size,
        flush_interval_ms=settings.flush_interval_ms,
        batch_size=settings.batch_size,
    )
    throttle = (
        Throttle(
            type_interval=settings.throttle_type_interval_s,
            fingerprint_interval=settings.throttle_fingerprint_interval_s,
        )
        if settings.throttle
        else None
    )
    return MembranePublisher(settings, bus, throttle)


def get_publisher() -> MembranePublisher:
    """The process's publisher, built from the active settings on first use."""
    global _publisher
    with _lock:
        if _publisher is None:
            _publisher = build_publisher(get_settings())
        return _publisher
