"""What the bus acknowledged, counted; and the spool replayed to the bus on demand."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from membrane_otel._internal import counters
from membrane_otel._internal.ratelog import RateLimitedLogger
from membrane_otel.membrane._bus_wire import Ack, BusError, Envelope, Transport, WsTransport, _stimulus_id
from membrane_otel.membrane._spool import Spool

__all__ = ["account", "flush_spool"]

_log = logging.getLogger("membrane_otel.membrane._bus")


def account(
    batch: Sequence[Envelope],
    ack: Ack,
    problems: RateLimitedLogger,
    on_published: Callable[[list[Envelope]], None] | None,
) -> int:
    """Count what the bus took and what it refused; return how many were delivered."""
    delivered = [e for e in batch if _stimulus_id(e) in ack.ids]
    refused = len(batch) - len(delivered)
    if delivered:
        counters.incr("published", len(delivered))
    if refused:
        counters.incr("bus_rejected", refused)
        problems.log(
            logging.WARNING, "rejected", "membrane bus rejected %d envelope(s): %s", refused, ack.error
        )
    if on_published is not None and delivered:
        try:
            on_published(delivered)
        except Exception:
            problems.log(
                logging.ERROR, "callback", "membrane bus on_published callback failed", exc_info=True
            )
    return len(delivered)


def flush_spool(
    url: str,
    spool: Spool,
    token: str | None = None,
    *,
    ssl_ca: str | None = None,
    connect_timeout: float = 5.0,
    ack_timeout: float = 10.0,
    require_ack: bool = True,
    transport: Transport | None = None,
) -> int:
    """Replay every spooled batch to the bus now; return how many envelopes it accepted.

    Raises ``BusError`` when the bus cannot be reached or stops answering; the batch in hand
    is put back, and what was acknowledged before stays delivered.
    """
    tr = transport or WsTransport(
        url,
        token=token,
        ssl_ca=ssl_ca,
        connect_timeout=connect_timeout,
        ack_timeout=ack_timeout,
        require_ack=require_ack,
    )
    problems = RateLimitedLogger(_log)
    delivered = 0
    try:
        while (batch := spool.claim_oldest()) is not None:
            try:
                ack = tr.send(batch.envelopes, None)
            except BusError:
                spool.release(batch)
                raise
            spool.ack(batch)
            delivered += account(batch.envelopes, ack, problems, None)
    finally:
        tr.close()
    return delivered
