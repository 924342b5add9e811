"""The bridge's lossless path to the bus: an envelope is delivered or durably spooled before 200.

The bridge must not answer an OTLP request with success while its envelopes sit in a
memory queue (a full queue drops, a crash loses): the Collector would drop a batch the bus
never saw. So the bridge does not use the bus client's queue. Per request, on the request's
own thread:

1. each envelope is serialised and sized alone: one over ``max_envelope_bytes`` (the bus
   closes a frame past its limit, losing the neighbours) or not serialisable is rejected
   alone, counted, with its reason;
2. the rest go to the bus in one frame and wait for its ack (a short, separate synchronous
   call over :class:`~membrane_otel.membrane._bus_wire.WsTransport`), unless the spool holds
   a backlog (order is kept: new envelopes queue behind it);
3. whatever the bus did not confirm is written to the :class:`~membrane_otel.membrane._spool.Spool`
   (fsync'd, renamed into place) and replayed by this outbox's thread, oldest first.

If neither works (disk full, spool past its high-water mark) ``deliver`` says so and the
bridge answers 503 with Retry-After: the Collector keeps the batch.

The MembranePublisher still builds the envelopes (throttle included): this outbox is the
"bus" it publishes to, collecting per thread what one request produced.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.membrane._bus_wire import BusError, Transport, encode_envelope, encode_frame
from membrane_otel.membrane._spool import Spool

__all__ = ["Delivery", "Outbox"]

_log = RateLimitedLogger(logging.getLogger("membrane_otel.bridge.outbox"))
# Once the spool was seen empty, and this outbox has not spooled since, a request skips the
# directory listing (~0.1 ms each) for this long: another process sharing the directory may
# spool meanwhile, and its batches are noticed (queued behind) within this time.
_BACKLOG_RECHECK_S = 1.0


@dataclass(slots=True)
class Delivery:
    ok: bool = True  # every envelope published or durably spooled (or rejected alone)
    published: int = 0
    spooled: int = 0
    rejected: list[str] = field(default_factory=list)


class Outbox:
    """Collects a request's envelopes, then delivers them to the bus or the spool."""

    def __init__(
        self,
        transport: Transport | None,
        spool: Spool,
        *,
        max_envelope_bytes: int = 1024 * 1024,
        send_timeout_s: float = 2.0,
        high_water: float = 0.8,
        replay_interval_s: float = 0.5,
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.max_envelope_bytes = max_envelope_bytes
        self.send_timeout_s = send_timeout_s
        self.high_water = high_water
        self._local = threading.local()
        self._send_lock = threading.Lock()
        self._bus_down = False
        self._spool_writes = 0  # batches this outbox spooled
        # (spool_writes, monotonic time) when the spool was last seen empty; never, to begin
        # with: a restart may find one.
        self._seen_empty: tuple[int, float] | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval = replay_interval_s
        if transport is not None:
            self._thread = threading.Thread(target=self._replay_loop, name="bridge-outbox", daemon=True)
            self._thread.start()

    # -- the "bus" the publisher writes to -----------------------------------------------

    def publish(self, envelope: dict[str, Any]) -> None:
        batch = getattr(self._local, "batch", None)
        if batch is None:
            raise RuntimeError("Outbox.publish outside Outbox.collect()")
        batch.append(envelope)

    def publish_many(self, envelopes: list[dict[str, Any]]) -> None:
        batch = getattr(self._local, "batch", None)
        if batch is None:
            raise RuntimeError("Outbox.publish_many outside Outbox.collect()")
        batch.extend(envelopes)

    @contextmanager
    def collect(self) -> Iterator[list[dict[str, Any]]]:
        """``with outbox.collect() as batch: publisher.submit_logs(...)``; then ``deliver(batch)``."""
        batch: list[dict[str, Any]] = []
        self._local.batch = batch
        try:
            yield batch
        finally:
            self._local.batch = None

    # -- delivery ------------------------------------------------------------------------

    def deliver(self, envelopes: list[dict[str, Any]]) -> Delivery:
        out = Delivery()
        # Most often the whole batch encodes, and within the size limit: then so does each of
        # its envelopes (each is a part of the frame), and the frame is encoded once.
        frame = _frame_within(envelopes, self.max_envelope_bytes)
        if frame is not None:
            return self._after_sizing(envelopes, out, None, frame)
        good: list[dict[str, Any]] = []
        encoded: list[bytes] = []  # each envelope's bytes: sized here, joined into the frame
        for env in envelopes:
            try:
                data = encode_envelope(env)
            except (TypeError, ValueError, RecursionError) as exc:
                out.rejected.append(f"envelope not serialisable: {exc}")
                continue
            if len(data) > self.max_envelope_bytes:
                out.rejected.append(
                    f"envelope of {len(data)} bytes is over the {self.max_envelope_bytes}-byte limit"
                )
                continue
            good.append(env)
            # An exact-size copy: orjson's own result holds a buffer of at least 4 KiB, and a
            # request may carry thousands of envelopes.
            encoded.append(bytes(memoryview(data)))
        if out.rejected:
            counters.incr("bridge_envelopes_rejected", len(out.rejected))
            _log.error("bridge: %d envelope(s) rejected: %s", len(out.rejected), out.rejected[0])
        return self._after_sizing(good, out, encoded, None)

    def _after_sizing(
        self, good: list[dict[str, Any]], out: Delivery, encoded: list[bytes] | None, frame: bytes | None
    ) -> Delivery:
        """Send what passed the size check, or spool it."""
        if not good:
            return out
        rest = good
        if self.transport is not None and not self._bus_down and not self._backlog_known():
            rest = self._send(good, out, encoded, frame)
        if rest:
            if self._spool_full():
                counters.incr("bridge_spool_full", len(rest))
                out.ok = False
                return out
            try:
                self.spool.write(rest)
            except OSError as exc:
                counters.incr("bridge_spool_failed", len(rest))
                _log.error("bridge: spool %s cannot be written: %r", self.spool.directory, exc)
                out.ok = False
                return out
            self._spool_writes += 1
            out.spooled = len(rest)
            counters.incr("bridge_envelopes_spooled", len(rest))
            self._wake.set()
        return out

    def _send(
        self, envelopes: list[dict[str, Any]], out: Delivery, encoded: list[bytes] | None, frame: bytes | None
    ) -> list[dict[str, Any]]:
        """Send one frame; returns what the bus did not confirm (to be spooled)."""
        transport = self.transport
        if transport is None:
            return envelopes
        with self._send_lock:
            try:
                ack = transport.send(envelopes, self.send_timeout_s, encoded=encoded, frame=frame)
            except BusError as exc:
                self._bus_down = True
                _log.warning("bridge: bus unavailable, spooling: %s", exc)
                return envelopes
        ids = ack.ids
        missing = [e for e in envelopes if _sid(e) not in ids]
        out.published = len(envelopes) - len(missing)
        counters.incr("bridge_envelopes_published", out.published)
        if missing and ack.error:
            # The bus read the frame and refused these: resending would loop forever.
            counters.incr("bridge_envelopes_rejected", len(missing))
            out.rejected.extend(f"bus refused an envelope: {ack.error}" for _ in missing)
            return []
        return missing

    def _spool_status(self) -> dict[str, Any] | None:
        try:
            return self.spool.status()
        except OSError:
            return None  # the spool directory is unusable: nothing waits there, nothing fits

    def _backlog(self) -> bool:
        status = self._spool_status()
        return bool(status and status["files"])

    def _backlog_known(self) -> bool:
        """:meth:`_backlog`, without listing the spool directory on every request: only while
        this outbox may have spooled something not yet seen gone, and once a second otherwise."""
        now, writes = time.monotonic(), self._spool_writes
        seen = self._seen_empty  # one read: another request's thread may replace it
        if seen is not None and seen[0] == writes and now - seen[1] < _BACKLOG_RECHECK_S:
            return False
        if self._backlog():
            return True
        # Taken before the listing: a batch spooled meanwhile makes the next request look again.
        self._seen_empty = (writes, now)
        return False

    def _spool_full(self) -> bool:
        # A batch claimed for replay still holds its bytes on disk: past the cap the spool
        # would drop its oldest batches, envelopes this bridge already answered 200 for.
        status = self._spool_status()
        if status is None:
            return True
        return bool(status["bytes"] + status.get("claimed_bytes", 0) >= self.high_water * status["max_bytes"])

    # -- replay --------------------------------------------------------------------------

    def _replay_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            try:
                self.replay()
            except Exception as exc:  # the loop must survive anything one batch does
                _log.error("bridge: replaying the spool failed: %r", exc)

    def replay(self, max_batches: int = 1000) -> int:
        """Send spooled batches, oldest first, until the spool is empty or the bus fails."""
        sent = 0
        transport = self.transport
        if transport is None:
            return 0
        for _ in range(max_batches):
            try:
                batch = self.spool.claim_oldest()
            except OSError:
                return sent  # an unusable spool holds nothing to replay
            if batch is None:
                self._bus_down = False
                return sent
            with self._send_lock:
                try:
                    transport.send(batch.envelopes, self.send_timeout_s)
                except BusError:
                    self.spool.release(batch)
                    self._bus_down = True
                    return sent
            self.spool.ack(batch)
            sent += len(batch.envelopes)
            counters.incr("bridge_envelopes_replayed", len(batch.envelopes))
        return sent

    def status(self) -> dict[str, Any]:
        """The spool as readiness sees it: a batch claimed for replay but not yet acked by the bus
        is still undelivered, so it counts in the files, bytes and age (a replay stuck on a slow
        bus must turn ``/ready`` false like a growing spool does)."""
        status = self._spool_status()
        spool = status or {"files": 0, "bytes": 0, "max_bytes": 1, "oldest_age_s": None}
        ages = [a for a in (spool["oldest_age_s"], spool.get("claimed_oldest_age_s")) if a is not None]
        return {
            "spool_ok": status is not None,
            "running": self._thread is None or self._thread.is_alive(),
            "bus_down": self._bus_down,
            "spool_files": spool["files"] + spool.get("claimed", 0),
            "spool_bytes": spool["bytes"] + spool.get("claimed_bytes", 0),
            "spool_max_bytes": spool["max_bytes"],
            "spool_oldest_age_s": max(ages) if ages else None,
        }

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        if self.transport is None:
            return True
        self.replay()
        return not self._backlog()

    def shutdown(self, timeout_millis: float = 30000) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_millis / 1000)
        if self.transport is not None:
            self.transport.close()


def _frame_within(envelopes: list[dict[str, Any]], limit: int) -> bytes | None:
    """The batch's frame, when it encodes and is within ``limit`` bytes; else None."""
    try:
        frame = encode_frame(envelopes)
    except (TypeError, ValueError, RecursionError):
        return None  # sized and refused one by one
    return frame if len(frame) <= limit else None


def _sid(envelope: dict[str, Any]) -> str | None:
    # One subscript each, no type tests on the way (once per envelope on the hot path): a
    # missing or odd "metadata" raises, and means no id.
    try:
        sid = envelope["metadata"]["stimulus_id"]
    except (KeyError, TypeError):
        return None
    return sid if isinstance(sid, str) else None
