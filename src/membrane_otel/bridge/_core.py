"""What the bridge does with what it receives: the one translation, the ledger, the membrane.

Transport-free (the HTTP layer is :mod:`membrane_otel.bridge._server`), so it can be driven
directly by tests and benchmarks. Acceptance is durable: the ledger write happens before
the caller answers 200, and a write that fails raises :class:`LedgerUnavailable` so the
caller answers 503 and the Collector keeps the batch and retries. Re-delivered batches are
harmless: records carry stable ids and the ledger skips ids it has already written.

Spans never become envelopes; log records do when :func:`translate.wants_envelope` says so
(errors at/above L2, stimuli), through the same :class:`~membrane_otel.membrane._publish.MembranePublisher`
as embedded mode, with its throttle, bus client and spool.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.bridge._legacy import envelope_line, normalise
from membrane_otel.bridge._otlp import Decoded
from membrane_otel.bridge._outbox import Outbox
from membrane_otel.bridge._seen import SeenIds
from membrane_otel.logs._redact import Redactor, configured_redactor
from membrane_otel.translate._core import log_line, record_id, span_line
from membrane_otel.translate._records import LogData, SpanData

__all__ = ["Bridge", "BusBehind", "LedgerUnavailable", "LedgerWriter", "Outcome", "Publisher"]

_log = RateLimitedLogger(logging.getLogger("membrane_otel.bridge"))
# /ready turns false when the spool holds this share of its cap, or its oldest batch is
# this old: the bus is falling behind, and a load balancer should send elsewhere.
READY_SPOOL_FRACTION = 0.5
READY_SPOOL_AGE_S = 60.0


class LedgerWriter(Protocol):
    @property
    def path(self) -> Path: ...

    def append_many(self, records: Sequence[dict[str, Any]]) -> int: ...


class Publisher(Protocol):
    """What the bridge needs of :class:`membrane_otel.membrane._publish.MembranePublisher`."""

    def submit_logs(self, logs: Sequence[LogData]) -> int: ...

    def publish(self, envelope: dict[str, Any]) -> None: ...

    def force_flush(self, timeout_millis: float = 30000) -> bool: ...

    def shutdown(self, timeout_millis: float = 30000) -> None: ...


class LedgerUnavailable(RuntimeError):
    """The ledger could not be written; nothing of the batch counts as accepted (HTTP 503)."""


@dataclass(slots=True)
class Outcome:
    """What became of one request's records."""

    received: int = 0
    written: int = 0  # new ledger lines (re-deliveries are received but not written again)
    duplicates: int = 0  # re-deliveries recognised by their record ids
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    # Envelopes refused alone (oversized, unserialisable): their records are in the ledger.
    envelope_errors: list[str] = field(default_factory=list)

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5:
            self.errors.append(why)

    @property
    def message(self) -> str:
        parts = []
        if self.rejected:
            more = (
                f" (and {self.rejected - len(self.errors)} more)" if self.rejected > len(self.errors) else ""
            )
            parts.append(f"{self.rejected} record(s) rejected: " + "; ".join(self.errors) + more)
        if self.envelope_errors:
            parts.append(
                f"{len(self.envelope_errors)} envelope(s) not sent to the membrane: {self.envelope_errors[0]}"
            )
        return "; ".join(parts)


def _probe_writable(path: Path) -> str | None:
    """None when ``path`` can be appended to now (created if missing), else why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(fd)
    except OSError as exc:
        return f"{exc.strerror or exc} ({path})"
    return None


class _Scrub:
    """The configured redactor over one request, remembering its answers: the records of a
    batch repeat most of their strings (function names, exception types, stack traces), and
    each is scanned once."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._texts: dict[str, str] = {}
        self._keys: dict[str, bool] = {}
        # id → (the resource, its redacted copy): the records of a block share one dict
        self._resources: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def prefetch(self, texts: Iterable[Any]) -> None:
        """Mark as their own redaction the strings of ``texts`` the redactor proves unchanged,
        a group at a time (values unique to each record would each pay the gates' pass). A
        group holding anything that looks like a candidate is left to be redacted one by one."""
        known, size = self._texts, 16  # a group holding one candidate is redacted value by value
        todo = [t for t in dict.fromkeys(t for t in texts if type(t) is str) if t not in known]
        unchanged = self._redactor.unchanged
        for at in range(0, len(todo), size):
            group = todo[at : at + size]
            if unchanged(group):
                known.update(zip(group, group, strict=True))

    def later(self, key: str, value: str) -> bool:
        """Whether ``pair(key, value)`` may wait for :meth:`prefetch`: a new text, under no secret's name."""
        if value in self._texts:
            return False
        sensitive = self._keys.get(key)
        if sensitive is None:
            sensitive = self._keys[key] = self._redactor.is_sensitive_key(key)
        return not sensitive

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            done = self._texts.get(value)
            if done is None:
                done = self._texts[value] = self._redactor(value)
            return done
        return self._redactor.redact_value(value) if isinstance(value, dict | list) else value

    def pair(self, key: str, value: Any) -> Any:
        """One attribute's value, redacted (the bridge's OTLP decoder calls this per distinct one)."""
        sensitive = self._keys.get(key)
        if sensitive is None:
            sensitive = self._keys[key] = self._redactor.is_sensitive_key(key)
        if sensitive:  # a value under a secret's name (password=…) is masked whole, as the SDK does
            return self._redactor.redact_value({key: value})[key]
        if type(value) is str:  # most values: the cache inline
            done = self._texts.get(value)
            if done is None:
                done = self._texts[value] = self._redactor(value)
            return done
        return self.value(value)

    def attributes(self, attrs: dict[str, Any]) -> dict[str, Any]:
        pair = self.pair
        return {key: pair(key, value) for key, value in attrs.items()}

    def resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A block's resource attributes (``service.name`` becomes the ledger's ``service``),
        redacted once per request."""
        done = self._resources.get(id(resource))
        if done is None or done[0] is not resource:
            done = self._resources[id(resource)] = (resource, self.attributes(resource))
        return done[1]


class BusBehind(RuntimeError):
    """Envelopes could be neither published nor spooled; nothing was written (HTTP 503)."""


class Bridge:
    """Received records → redacted → envelopes delivered or spooled → ledger lines (durably)."""

    def __init__(
        self,
        ledger: LedgerWriter,
        publisher: Publisher | None = None,
        *,
        outbox: Outbox | None = None,
        seen: SeenIds | None = None,  # default: remembered in memory only
        redactor: Redactor | None = None,
        legacy_format: bool = False,
        default_scope: str = "organizational",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.publisher = publisher
        self.outbox = outbox
        self.seen = seen if seen is not None else SeenIds(None)
        self._redactor = redactor if redactor is not None else configured_redactor()
        self._legacy = legacy_format
        self._scope = default_scope
        self._clock = clock
        self._lock = threading.Lock()
        # One request at a time between "which ids are new" and "remember them", so two
        # deliveries of one batch racing each other are still written once.
        self._write_lock = threading.Lock()
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._closed = False

    # -- the three inputs ----------------------------------------------------------------

    def accept_spans(self, decoded: Decoded, *, trusted: bool = False) -> Outcome:
        out = self._start(decoded)
        lines = []
        scrub = _Scrub(self._redactor)
        for span in decoded.records:
            try:
                self._redact_span(span, scrub)
                lines.append(span_line(span))
            except Exception as exc:  # one bad span must not cost the batch
                out.reject(f"span {span.name!r}: {exc!r}")
        with self._write_lock:
            fresh = self._fresh(lines, out)
            self._write(fresh, out)
        counters.incr("bridge_spans", out.received)
        return out

    def accept_logs(self, decoded: Decoded, *, trusted: bool = False) -> Outcome:
        out = self._start(decoded)
        good: list[LogData] = []
        lines: list[dict[str, Any]] = []
        twins: dict[str, int] = {}
        scrub = decoded.scrub if isinstance(decoded.scrub, _Scrub) else None
        redacted = scrub is not None  # the decoder redacted the attributes already
        if scrub is None:
            scrub = _Scrub(self._redactor)
        scrub.prefetch(log.body for log in decoded.records)
        for log in decoded.records:
            try:
                self._prepare_log(log, trusted, twins, scrub, redacted)
                lines.append(log_line(log))
            except Exception as exc:  # one bad record must not cost the batch
                out.reject(f"log record {log.event_name or log.severity_text or ''!r}: {exc!r}")
                continue
            good.append(log)
        with self._write_lock:
            mask = self.seen.filter_new(ln["record_id"] for ln in lines) if self.seen else None
            if mask is not None:
                good = [log for log, new in zip(good, mask, strict=True) if new]
            fresh = self._fresh(lines, out, mask)
            # Envelopes first: a request answered 503 after its lines were written would be
            # retried, found written, and its envelopes never sent.
            if good and fresh:
                self._publish(good, out)
            self._write(fresh, out)
        counters.incr("bridge_logs", out.received)
        return out

    def accept_envelopes(self, items: Sequence[Any]) -> Outcome:
        """``/ingest``: already-built envelopes → ledger lines → the bus, as they are."""
        out = Outcome(received=len(items))
        envelopes: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                env = normalise(self._redactor.redact_value(item), default_scope=self._scope)
                line = envelope_line(env)
                data = env.to_json_dict(legacy=self._legacy)
            except (ValueError, OverflowError, RecursionError) as exc:
                out.reject(f"[{index}] {exc}")
                continue
            lines.append(line)
            envelopes.append(data)
        with self._write_lock:
            mask = self.seen.filter_new(ln["record_id"] for ln in lines) if self.seen else None
            if mask is not None:
                envelopes = [e for e, new in zip(envelopes, mask, strict=True) if new]
            fresh = self._fresh(lines, out, mask)
            if envelopes and fresh:
                if self.outbox is not None:
                    self._deliver(envelopes, out)
                elif self.publisher is not None:
                    for data in envelopes:
                        try:
                            self.publisher.publish(data)
                        except Exception as exc:
                            counters.incr("bridge_publish_failed")
                            _log.error("bridge: publishing an ingested envelope failed: %r", exc)
            self._write(fresh, out)
        counters.incr("bridge_envelopes", out.received)
        return out

    def scrubber(self) -> _Scrub:
        """The configured redactor over one request (the OTLP decoder redacts as it reads)."""
        return _Scrub(self._redactor)

    # -- helpers -------------------------------------------------------------------------

    def _prepare_log(
        self, log: LogData, trusted: bool, twins: dict[str, int], scrub: _Scrub, redacted: bool = False
    ) -> None:
        """Redact (unless ``redacted``), drop an untrusted client's own record id, tell twins apart."""
        attrs = log.attributes
        if not trusted and "membrane.record_id" in attrs:
            attrs = {k: v for k, v in attrs.items() if k != "membrane.record_id"}
        log.attributes = attrs = attrs if redacted else scrub.attributes(attrs)
        log.body = scrub.value(log.body)
        log.resource = scrub.resource(log.resource)
        # Free text a client chooses, written to the ledger's level / event and to envelopes.
        if log.scope:  # the envelope's provenance.logger
            log.scope = scrub.value(log.scope)
        if log.severity_text:
            log.severity_text = scrub.value(log.severity_text)
        if log.event_name:
            log.event_name = scrub.value(log.event_name)
        if "membrane.record_id" in attrs:
            return
        rid = record_id(log)
        seen_before = twins.get(rid, 0)
        twins[rid] = seen_before + 1
        # Stored on the record so that the ledger line and the envelope reuse it. The n-th
        # identical record of this request is a twin, not a re-delivery: an id of its own.
        attrs["membrane.record_id"] = record_id(log, seen_before) if seen_before else rid

    def _redact_span(self, span: SpanData, scrub: _Scrub) -> None:
        span.attributes = scrub.attributes(span.attributes)
        span.resource = scrub.resource(span.resource)
        if span.status_message:
            span.status_message = scrub.value(span.status_message)
        for event in span.events:
            event.attributes = scrub.attributes(event.attributes)

    def _publish(self, logs: list[LogData], out: Outcome) -> None:
        if self.publisher is None:
            return
        if self.outbox is None:  # a plain publisher (tests, embedding): its own queue and spool
            try:
                self.publisher.submit_logs(logs)
            except Exception as exc:
                counters.incr("bridge_publish_failed", len(logs))
                _log.error("bridge: publishing envelopes failed: %r", exc)
            return
        with self.outbox.collect() as batch:
            self.publisher.submit_logs(logs)
        self._deliver(batch, out)

    def _deliver(self, envelopes: list[dict[str, Any]], out: Outcome) -> None:
        if self.outbox is None:
            return
        delivery = self.outbox.deliver(envelopes)
        if not delivery.ok:
            raise BusBehind("the membrane bus is behind and the spool is full or unwritable")
        out.envelope_errors.extend(delivery.rejected)

    def _fresh(
        self, lines: list[dict[str, Any]], out: Outcome, mask: list[bool] | None = None
    ) -> list[dict[str, Any]]:
        """The lines not written before (the rest are re-deliveries: counted, skipped)."""
        if mask is None and self.seen is not None:
            mask = self.seen.filter_new(ln["record_id"] for ln in lines)
        if mask is None:
            return lines
        fresh = [ln for ln, new in zip(lines, mask, strict=True) if new]
        out.duplicates += len(lines) - len(fresh)
        return fresh

    @staticmethod
    def _start(decoded: Decoded) -> Outcome:
        out = Outcome(received=len(decoded.records) + decoded.rejected)
        out.rejected = decoded.rejected
        out.errors = list(decoded.errors)
        return out

    def _write(self, lines: list[dict[str, Any]], out: Outcome) -> None:
        if out.rejected:
            counters.incr("bridge_rejected", out.rejected)
        if not lines:
            return
        try:
            written = self.ledger.append_many(lines)
        except Exception as exc:
            with self._lock:
                self._last_error = repr(exc)
                self._last_error_at = self._clock()
            counters.incr("bridge_ledger_failed", len(lines))
            _log.error("bridge: ledger %s cannot be written: %r", self.ledger.path, exc)
            raise LedgerUnavailable(f"ledger {self.ledger.path} cannot be written: {exc}") from exc
        with self._lock:
            self._last_error = None
        if self.seen is not None:
            self.seen.add(ln["record_id"] for ln in lines)
        out.written = written
        out.duplicates += len(lines) - written
        counters.incr("bridge_written", written)
        if out.duplicates:
            counters.incr("bridge_duplicates", out.duplicates)

    # -- health --------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the ledger can be written now and the bus client is running."""
        problem = _probe_writable(self.ledger.path)
        with self._lock:
            last_error, last_at = self._last_error, self._last_error_at
        ledger: dict[str, Any] = {"ok": problem is None, "path": str(self.ledger.path)}
        if problem:
            ledger["error"] = problem
        if last_error:
            ledger["last_write_error"] = last_error
            ledger["last_write_error_at"] = last_at
        bus: dict[str, Any]
        if self.publisher is None:
            bus = {"ok": True, "enabled": False}
        else:
            status = getattr(self.publisher, "status", None)
            detail = status() if callable(status) else {}
            running = bool(detail.get("running", True)) and not self._closed
            bus = {"ok": running, "enabled": True, "running": running, **detail}
        if self.outbox is not None:
            spool = self.outbox.status()
            behind = spool["spool_bytes"] >= READY_SPOOL_FRACTION * spool["spool_max_bytes"] or (
                (spool["spool_oldest_age_s"] or 0.0) > READY_SPOOL_AGE_S
            )
            healthy = spool["running"] and spool["spool_ok"] and not behind
            bus.update(spool, ok=bool(bus["ok"] and healthy), behind=behind)
        ready = bool(ledger["ok"] and bus["ok"])
        return ready, {"ready": ready, "ledger": ledger, "bus": bus, "counters": _bridge_counters()}

    def shutdown(self, timeout_millis: float = 10_000) -> None:
        """Flush the bus client (or spool what it holds). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for part in (self.publisher, self.outbox):
            if part is None:
                continue
            try:
                part.shutdown(timeout_millis)
            except Exception as exc:
                _log.error("bridge: bus client shutdown failed: %r", exc)


def _bridge_counters() -> dict[str, int]:
    return {k: v for k, v in counters.snapshot().items() if k.startswith("bridge_")}
