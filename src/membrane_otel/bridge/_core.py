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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.bridge._legacy import envelope_line, normalise
from membrane_otel.bridge._otlp import Decoded
from membrane_otel.membrane._envelope import Envelope
from membrane_otel.translate._core import log_line, span_line
from membrane_otel.translate._records import LogData

__all__ = ["Bridge", "LedgerUnavailable", "LedgerWriter", "Outcome", "Publisher"]

_log = RateLimitedLogger(logging.getLogger("membrane_otel.bridge"))


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
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.errors) < 5:
            self.errors.append(why)

    @property
    def message(self) -> str:
        if not self.rejected:
            return ""
        more = f" (and {self.rejected - len(self.errors)} more)" if self.rejected > len(self.errors) else ""
        return f"{self.rejected} record(s) rejected: " + "; ".join(self.errors) + more


def _probe_writable(path: Path) -> str | None:
    """None when ``path`` can be appended to now (created if missing), else why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(fd)
    except OSError as exc:
        return f"{exc.strerror or exc} ({path})"
    return None


class Bridge:
    """Received records → ledger lines (durably) → envelopes for the membrane."""

    def __init__(
        self,
        ledger: LedgerWriter,
        publisher: Publisher | None = None,
        *,
        legacy_format: bool = False,
        default_scope: str = "organizational",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.publisher = publisher
        self._legacy = legacy_format
        self._scope = default_scope
        self._clock = clock
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._closed = False

    # -- the three inputs ----------------------------------------------------------------

    def accept_spans(self, decoded: Decoded) -> Outcome:
        out = self._start(decoded)
        try:
            lines = [span_line(span) for span in decoded.records]
        except Exception:  # one bad span must not cost the batch: go again, one by one
            lines = []
            for span in decoded.records:
                try:
                    lines.append(span_line(span))
                except Exception as exc:
                    out.reject(f"span {span.name!r}: {exc!r}")
        self._write(lines, out)
        counters.incr("bridge_spans", out.received)
        return out

    def accept_logs(self, decoded: Decoded) -> Outcome:
        out = self._start(decoded)
        good: list[LogData] = decoded.records
        try:
            lines = [log_line(log) for log in good]
        except Exception:  # one bad record must not cost the batch: go again, one by one
            lines, good = [], []
            for log in decoded.records:
                try:
                    lines.append(log_line(log))
                except Exception as exc:
                    out.reject(f"log record {log.event_name or log.severity_text or ''!r}: {exc!r}")
                    continue
                good.append(log)
        self._write(lines, out)
        counters.incr("bridge_logs", out.received)
        # A batch the ledger had entirely already is a re-delivery: its envelopes went out
        # the first time. (Consumers dedupe by stimulus id anyway; this saves the bus.)
        if self.publisher is not None and good and out.written:
            try:
                self.publisher.submit_logs(good)
            except Exception as exc:  # the ledger has the records; the bus client spools its own
                counters.incr("bridge_publish_failed", len(good))
                _log.error("bridge: publishing envelopes failed: %r", exc)
        return out

    def accept_envelopes(self, items: Sequence[Any]) -> Outcome:
        """``/ingest``: already-built envelopes → ledger lines → the bus, as they are."""
        out = Outcome(received=len(items))
        envelopes: list[Envelope] = []
        lines: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                env = normalise(item, default_scope=self._scope)
                lines.append(envelope_line(env))
            except ValueError as exc:
                out.reject(f"[{index}] {exc}")
                continue
            envelopes.append(env)
        self._write(lines, out)
        counters.incr("bridge_envelopes", out.received)
        if self.publisher is not None and out.written:
            for env in envelopes:
                try:
                    self.publisher.publish(env.to_json_dict(legacy=self._legacy))
                except Exception as exc:
                    counters.incr("bridge_publish_failed")
                    _log.error("bridge: publishing an ingested envelope failed: %r", exc)
        return out

    # -- helpers -------------------------------------------------------------------------

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
        out.written = written
        if written < len(lines):
            counters.incr("bridge_duplicates", len(lines) - written)

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
        ready = bool(ledger["ok"] and bus["ok"])
        return ready, {"ready": ready, "ledger": ledger, "bus": bus, "counters": _bridge_counters()}

    def shutdown(self, timeout_millis: float = 10_000) -> None:
        """Flush the bus client (or spool what it holds). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.publisher is not None:
            try:
                self.publisher.shutdown(timeout_millis)
            except Exception as exc:
                _log.error("bridge: bus client shutdown failed: %r", exc)


def _bridge_counters() -> dict[str, int]:
    return {k: v for k, v in counters.snapshot().items() if k.startswith("bridge_")}
