"""The membrane bus wire protocol: one WebSocket connection, one JSON frame per batch, one ack.

Split from ``bus.py`` (which re-exports the public names) so the client's queueing and
spooling read apart from the bytes on the wire. The reference bus in ``busserver.py``
speaks the same protocol:

* the client sends one text frame per batch: a JSON array of ``membrane.inject`` envelopes
  (a single JSON object is accepted too);
* the bus answers every frame, in order: ``{"type": "ack", "ids": [...], "rejected": [...]}``
  with the accepted stimulus ids and, for arrays, ``{"index", "id", "error"}`` per rejected
  element; or ``{"type": "error", "error": "..."}`` when the frame as a whole is garbage;
* a bearer token, when configured, goes in the ``Authorization`` header of the handshake.

For a bus that never acks, ``require_ack=False`` counts a frame as delivered once it is
written to the socket; a crash of the bus can then lose the frames in flight.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import orjson

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

__all__ = [
    "Ack",
    "BusError",
    "BusRefused",
    "BusUnavailable",
    "Envelope",
    "Transport",
    "WsTransport",
]

Envelope = dict[str, Any]


class BusError(Exception):
    """The bus did not confirm a batch: unreachable, refused, or the connection broke."""


class BusUnavailable(BusError):
    """Nothing answered at the bus address (refused, unreachable, timed out)."""


class BusRefused(BusError):
    """Something answered but would not take envelopes (HTTP 401, TLS failure, not a bus)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ack:
    """The bus's answer to one frame: the stimulus ids it accepted, and why it refused any."""

    ids: frozenset[str]
    error: str | None = None


class Transport(Protocol):
    """How batches reach the bus; ``WsTransport`` in production, anything alike in tests."""

    def send(
        self,
        envelopes: Sequence[Envelope],
        timeout: float | None,
        *,
        encoded: Sequence[bytes] | None = None,
        frame: bytes | None = None,
    ) -> Ack:
        """Deliver one batch and wait for its ack, within ``timeout`` s (None: the defaults).
        ``encoded``: each envelope's :func:`encode_envelope` bytes, or ``frame``: the batch's
        :func:`encode_frame` bytes, when the caller has them."""
        ...

    def probe(self, timeout: float) -> bool:
        """Cheaply tell whether anything listens at the bus address."""
        ...

    def close(self) -> None: ...

    def reset_after_fork(self) -> None:
        """Forget the parent's connection without touching it."""
        ...


class WsTransport:
    """One persistent WebSocket connection (``websockets`` sync client), stop-and-wait acks."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ssl_ca: str | None = None,
        connect_timeout: float = 3.0,
        ack_timeout: float = 5.0,
        require_ack: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"membrane bus URL must be ws://host[:port]/path or wss://..., got {url!r}")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "wss" else 80)
        # wss:// always verifies the certificate (hostname included); ssl_ca adds a private CA.
        self._ssl = ssl.create_default_context(cafile=ssl_ca) if parts.scheme == "wss" else None
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._connect_timeout = connect_timeout
        self._ack_timeout = ack_timeout
        self._require_ack = require_ack
        self._ws: ClientConnection | None = None

    def _connect(self, timeout: float) -> ClientConnection:
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
        from websockets.sync.client import connect

        try:
            ws = connect(
                self.url,
                additional_headers=self._headers,
                ssl=self._ssl,
                open_timeout=timeout,
                close_timeout=1.0,
                # Without acks nobody waits on replies; a bounded receive queue would, when
                # full, stop reading the socket, and with it pings and the closing handshake.
                max_queue=16 if self._require_ack else None,
                # permessage-deflate saves bandwidth a loopback connection does not have and
                # costs CPU on both ends: 2.1 ms vs 0.8 ms of the bridge's CPU per frame of
                # 100 error envelopes (203 KB), sent and acked, kernel copy included. Off
                # towards this host; on ("deflate", the default) across a network.
                compression=None if _is_loopback(self._host) else "deflate",
            )
            # Entered as a context manager (websockets >= 17.1 warns otherwise); close() exits it.
            return ws.__enter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise BusRefused(f"handshake refused with HTTP {status}", status) from exc
        except ssl.SSLError as exc:  # before OSError: a bad certificate is not "down"
            raise BusRefused(f"TLS failure: {exc}") from exc
        except TimeoutError as exc:
            # TCP may connect (a kernel backlog accepts for anyone) with nobody answering the
            # handshake: not "down", so no early retry on a successful probe.
            raise BusError(f"no handshake answer within {timeout:.1f}s") from exc
        except OSError as exc:
            raise BusUnavailable(f"unreachable ({exc})") from exc
        except (InvalidHandshake, InvalidURI) as exc:
            raise BusRefused(f"not a membrane bus: {exc}") from exc

    def send(
        self,
        envelopes: Sequence[Envelope],
        timeout: float | None,
        *,
        encoded: Sequence[bytes] | None = None,
        frame: bytes | None = None,
    ) -> Ack:
        from websockets.exceptions import ConnectionClosed

        start = time.monotonic()
        budget = timeout if timeout is not None else self._connect_timeout + self._ack_timeout
        if self._ws is None:
            self._ws = self._connect(min(self._connect_timeout, budget))
        ws = self._ws
        # The bridge's outbox has encoded each envelope to size it: joining those bytes is the
        # same frame as encoding the list (compact JSON), without encoding it all again.
        if frame is None:
            frame = b"[" + b",".join(encoded) + b"]" if encoded is not None else encode_frame(envelopes)
        try:
            ws.send(frame, text=True)  # a text frame, as the bus expects, without decoding
            if not self._require_ack:
                return self._assume_delivered(ws, envelopes)
            while True:
                left = min(self._ack_timeout, budget - (time.monotonic() - start))
                if left <= 0:
                    raise TimeoutError
                reply = ws.recv(timeout=left)
                ack = _parse_reply(reply)
                if ack is not None:
                    return ack
        except TimeoutError as exc:
            self.close()
            raise BusError(f"no ack within {budget:.1f}s") from exc
        except ConnectionClosed as exc:
            self.close()
            if exc.rcvd is not None and exc.rcvd.code == 1009:
                # The bus will never take a frame this big; resending it would loop forever.
                return Ack(frozenset(), "frame too big for the bus (close code 1009)")
            raise BusError(f"connection lost ({exc})") from exc
        except OSError as exc:
            self.close()
            raise BusError(f"connection failed ({exc})") from exc

    def _assume_delivered(self, ws: ClientConnection, envelopes: Sequence[Envelope]) -> Ack:
        """For buses that never ack: sent is delivered (a crash can lose what is in flight).
        Whatever the bus does send is discarded at each send, so it never piles up."""
        while True:
            try:
                ws.recv(timeout=0)
            except TimeoutError:
                break
        return Ack(frozenset(sid for e in envelopes if (sid := _stimulus_id(e)) is not None))

    def probe(self, timeout: float) -> bool:
        try:
            with socket.create_connection((self._host, self._port), timeout=timeout):
                return True
        except OSError:
            return False

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.__exit__(None, None, None)
            except Exception:  # closing a broken connection may fail in many ways; it is gone
                pass

    def reset_after_fork(self) -> None:
        self._ws = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return False


def encode_frame(envelopes: Sequence[Envelope]) -> bytes:
    """One batch as the bytes of a JSON array (UTF-8, compact).

    orjson: encoding the frame with the stdlib cost the bridge ~2.5 ms per 100 error
    envelopes, an eighth of its ingest CPU. The same compact JSON; datetimes and dataclasses
    are passed to ``default=str`` as the stdlib did (a stray one in a payload must not make a
    batch unsendable forever); what orjson refuses (an int past 64 bits, a non-str key) the
    stdlib encodes.
    """
    try:
        return orjson.dumps(list(envelopes), default=str, option=_ORJSON_OPTS)
    except (TypeError, orjson.JSONEncodeError):
        return _stdlib_encode(list(envelopes)).encode("utf-8")


def encode_envelope(envelope: Envelope) -> bytes:
    """One envelope as it appears in :func:`encode_frame`'s array (raises if it cannot be)."""
    try:
        return orjson.dumps(envelope, default=str, option=_ORJSON_OPTS)
    except (TypeError, orjson.JSONEncodeError):
        return _stdlib_encode(envelope).encode("utf-8")


_ORJSON_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_stdlib_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _parse_reply(reply: str | bytes) -> Ack | None:
    """An ``ack`` or ``error`` frame as an Ack; None for anything else (keep waiting)."""
    try:
        # orjson: the ack of a 100-envelope frame lists 100 ids, and the stdlib parse of it
        # was ~3 % of the bridge's ingest CPU. What orjson refuses (NaN, Infinity, lone surrogates)
        # the stdlib reads, as it always did.
        msg = orjson.loads(reply)
    except orjson.JSONDecodeError:
        try:
            msg = json.loads(reply)
        except ValueError:
            return None
    if not isinstance(msg, dict):
        return None
    if msg.get("type") == "ack":
        ids = msg.get("ids")
        rejected = msg.get("rejected") or []
        error = "; ".join(str(r.get("error")) for r in rejected if isinstance(r, dict)) or None
        return Ack(
            frozenset(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else frozenset(), error
        )
    if msg.get("type") == "error":
        return Ack(frozenset(), str(msg.get("error", "frame refused")))
    return None


def _stimulus_id(envelope: object) -> str | None:
    if not isinstance(envelope, dict):
        return None
    md = envelope.get("metadata")
    sid = md.get("stimulus_id") if isinstance(md, dict) else None
    return sid if isinstance(sid, str) and sid else None
