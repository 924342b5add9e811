"""The membrane path: translated records → throttle → bus client (with its disk spool).

Both the in-process ``membrane`` exporter and the bridge submit here. Throttling lives on
this path only (the ledger keeps every record): per signal type and per fingerprint, as
``seeds/000`` says, and the next envelope that goes out carries how many were held back;
what is still held back at shutdown goes out as one ``throttle_summary`` envelope. A
CRITICAL has windows of its own, so an earlier ERROR's window never holds it back.

At DEBUG the publisher says what the seed's collector said, so its verification greps work:
``Published membrane.inject sid=…`` when the bus acknowledges an envelope, and
``FingerprintRateLimit: … cooling down`` when a fingerprint's window holds one back.

Throttle windows live in this process only. The seed throttles in its long-lived collector,
so a cron script's second run is throttled there; in embedded mode there is no such process,
and a run's windows are not carried to the next one (each run's first error always goes
out). For throttling across runs, use collector mode: the bridge is long-lived and its
throttle holds across every run of every script it serves.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel._internal.tables import DEFAULT_BUS_URL
from membrane_otel.membrane._envelope import with_metadata
from membrane_otel.settings import Settings, get_settings
from membrane_otel.translate._core import log_envelope_wire, otel_severity, wants_envelope
from membrane_otel.translate._records import LogData

_logger = logging.getLogger("membrane_otel.membrane._publish")
_log = RateLimitedLogger(_logger)
THROTTLED_SIGNALS = frozenset({"script_error"})


class MembranePublisher:
    """Turns log records into envelopes and hands them to the bus client."""

    def __init__(self, settings: Settings, bus: Any, throttle: Any | None) -> None:
        self._settings = settings
        self._bus = bus
        self._throttle = throttle
        self._l2 = otel_severity(settings.l2_level)
        self._legacy = settings.envelope_format == "legacy"
        # False when nobody chose a bus (the default URL): spooling is then the normal state.
        self.bus_chosen = True

    def submit_logs(self, logs: Sequence[LogData], *, direct: bool = False, spool_only: bool = False) -> int:
        """Publish the envelopes of the records meant for the membrane; returns how many.

        ``direct``: the caller is a background thread already (the membrane exporter's batch
        processor), so the envelopes are sent from it, not queued a second time. ``spool_only``:
        no time is left (a shutdown gave up on them), so they go straight to the disk spool.
        """
        sent = wanted = 0
        out: list[dict[str, Any]] = []
        for log in logs:
            if not wants_envelope(log, self._l2):
                continue
            wanted += 1
            try:
                # The wire dict directly: the model is built only when a value needs validating.
                env = log_envelope_wire(log, default_scope=self._settings.scope, legacy=self._legacy)
            except ValidationError as exc:
                counters.incr("rejected")
                _log.error(
                    "record %s cannot become an envelope: %s", log.event_name or "log", exc.errors()[0]
                )
                continue
            md = env["metadata"]
            # Error storms are throttled (seeds/000: per type 1/15 s, per fingerprint 1/10 s);
            # stimuli, metrics and UI/tool signals are not errors and pass untouched.
            if self._throttle is not None and md["signal_type"] in THROTTLED_SIGNALS:
                # A CRITICAL gets windows of its own: an ERROR storm never holds one back.
                kind = f"{md['signal_type']}:critical" if env["severity"] == "critical" else md["signal_type"]
                fingerprint = md.get("stack_fingerprint") or md.get("dedupe_key") or ""
                decision = self._throttle.admit(kind, fingerprint)
                if not decision.allowed:
                    counters.incr("suppressed")
                    if _logger.isEnabledFor(logging.DEBUG):
                        which = (
                            "FingerprintRateLimit" if decision.reason == "fingerprint" else "TypeRateLimit"
                        )
                        _logger.debug("%s: %s %s cooling down", which, kind, fingerprint[:12])
                    continue
                # Every record the type limit held back since the last one out, so that
                # sum(held_back) over delivered envelopes == suppressed (nothing unaccounted).
                held = {"held_back": decision.held_back_type, "held_back_fingerprint": decision.held_back}
                if any(held.values()):
                    with_metadata(env, **{k: v for k, v in held.items() if v})
            out.append(env)
            sent += 1
        if wanted:
            counters.incr("envelopes", wanted)
        if spool_only and hasattr(self._bus, "save"):
            self._bus.save(out)
        elif direct and hasattr(self._bus, "deliver"):
            if out:
                self._bus.deliver(out)
        elif hasattr(self._bus, "publish_many"):  # the bridge's outbox: a request's envelopes at once
            self._bus.publish_many(out)
        else:
            for envelope in out:
                self.publish(envelope)
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
            "spooled": _spool_count(self._bus),
            "bus_chosen": self.bus_chosen,
        }

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        return bool(self._bus.force_flush(timeout_millis))

    def held_back_summary(self) -> dict[str, Any] | None:
        """The envelope that reports what the throttle still holds back, or None (and resets it)."""
        if self._throttle is None:
            return None
        held = self._throttle.drain_pending()
        total = sum(held.values())
        if not total:
            return None
        from membrane_otel.membrane._envelope import Envelope, EnvelopeMetadata, StimulusFeatures

        now_ms = int(time.time() * 1000)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(held.items()))
        env = Envelope(
            scope=self._settings.scope,
            source=f"script:{_service_name()}",
            channel="signals.script.throttle",
            content=f"held back by the membrane throttle since the last envelope out: {kinds}"[:500],
            severity="warn",
            features_raw=StimulusFeatures(urgency=0.4, novelty=0.1, trust=0.9),
            metadata=EnvelopeMetadata(
                stimulus_id=f"throttle_summary_{now_ms}_{os.getpid()}",
                origin="script_logger",
                timestamp_ms=now_ms,
                signal_type="throttle_summary",
                held_back=total,
                held_back_by_type=held,
            ),
        )
        return env.to_json_dict(legacy=self._legacy)

    def shutdown(self, timeout_millis: float = 30000) -> None:
        # Held-back counts are not lost at exit: one summary envelope carries them.
        summary = self.held_back_summary()
        if summary is not None:
            self.publish(summary)
        self._bus.shutdown(timeout_millis)


def _spool_count(bus: Any) -> int:
    spool = getattr(bus, "spool", None)
    try:
        return int(spool.status().get("envelopes", 0)) if spool is not None else 0
    except (OSError, ValueError):
        return 0


def _service_name() -> str:
    # The SDK's resource as built at start-up (building one now, at exit, may need threads).
    from opentelemetry import trace

    resource = getattr(trace.get_tracer_provider(), "resource", None)
    name = resource.attributes.get("service.name") if resource is not None else None
    return str(name or os.environ.get("OTEL_SERVICE_NAME") or "app")


def _say_published(envelopes: list[dict[str, Any]]) -> None:
    # The seed's collector log line, so `grep "Published membrane.inject"` verifies delivery.
    if _logger.isEnabledFor(logging.DEBUG):
        for env in envelopes:
            sid = (env.get("metadata") or {}).get("stimulus_id")
            _logger.debug("Published membrane.inject sid=%s", sid)


_publisher: MembranePublisher | None = None
_lock = threading.Lock()


def build_publisher(settings: Settings) -> MembranePublisher:
    from membrane_otel.membrane._bus import BusClient
    from membrane_otel.membrane._spool import Spool
    from membrane_otel.membrane._throttle import Throttle

    spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes)
    chosen = settings.bus_url != DEFAULT_BUS_URL or "MEMBRANE_BUS_URL" in os.environ
    bus = BusClient(
        settings.bus_url,
        spool,
        token=settings.bus_token,
        ssl_ca=str(settings.bus_ca_file) if settings.bus_ca_file else None,
        queue_size=settings.queue_size,
        flush_interval_ms=settings.flush_interval_ms,
        batch_size=settings.batch_size,
        on_published=_say_published,
        # Nobody chose a bus: one INFO line says where envelopes are kept, no warnings.
        quiet_unreachable=not chosen,
    )
    throttle = (
        Throttle(
            type_interval=settings.throttle_type_interval_s,
            fingerprint_interval=settings.throttle_fingerprint_interval_s,
        )
        if settings.throttle
        else None
    )
    publisher = MembranePublisher(settings, bus, throttle)
    publisher.bus_chosen = chosen
    return publisher


def get_publisher() -> MembranePublisher:
    """The process's publisher, built from the active settings on first use."""
    global _publisher
    with _lock:
        if _publisher is None:
            _publisher = build_publisher(get_settings())
        return _publisher
