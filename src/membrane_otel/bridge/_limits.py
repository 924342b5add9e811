"""The bridge's hard limits, and the cheap checks that enforce them before memory is spent.

Every limit is a setting (``membrane-otel bridge serve --help`` names the flags) with a
default sized for a Collector's batches on a small machine. Together they bound what the
bridge can hold at once (README, "The bridge", gives the formula; ``tests/test_bridge_memory.py`` measures it)::

    memory ≤ read_budget                                  raw bodies being read or decoded
           + max_inflight × (6 × max_body                 decompressed body, protobuf, records'
                                                          strings, ledger lines and their encoding
                             + max_records × ~4 KiB       per-record objects
                             + max_values × ~400 B)       attribute values, decoded
           + max_connections × ~16 KiB                    per-connection buffers (HTTP)
           + (2 × max_inflight + 2) × max_body            gRPC messages held by grpc-core
           + max_connections × ~17 KiB                    per-connection state (gRPC)

A request that would pass a limit is refused with the status OTLP gives it: 413 (not
retried: the batch can never fit) for sizes, counts and nesting, 503 + ``Retry-After``
(retried) for momentary pressure: the read budget, the decode slots, the connections.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_BODY",
    "Limits",
    "TooMany",
    "TooManyValues",
    "ValueBudget",
    "count_records",
    "json_objects_over",
    "json_values_over",
]

DEFAULT_MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    # Largest body, raw and again after decompression (a gzip bomb stops one byte past it).
    max_body: int = DEFAULT_MAX_BODY
    # Records (log records or spans, plus their resource and scope blocks) in one request.
    # The Collector's batch processor sends 8192 by default.
    max_records: int = 10_000
    # Nesting of attribute values (kvlist / array inside each other); a deeper record is
    # rejected alone (partial_success), its neighbours are written.
    max_depth: int = 16
    # Attribute values (attributes, array elements, kvlist entries, span events) in one
    # request: each costs ~400 bytes decoded, and a million of them fit in 3 MiB of gzip.
    # A Collector batch of 8192 records of ~16 attributes (an SDK error record) holds ~131,000.
    max_values: int = 200_000
    # Requests decoded at once (decoding holds the GIL: more would not be faster).
    max_inflight: int = 2
    # How long a request waits for a decode slot before it is told to retry (503).
    slot_wait_s: float = 5.0
    # Bytes of raw bodies held at once, across every request being read or decoded.
    read_budget: int = 64 * 1024 * 1024
    # Open connections on each port. HTTP: past it the oldest idle one is closed, else the
    # new one; gRPC: grpc-core closes the new one (it cannot evict).
    max_connections: int = 512
    # A request's body must be in within this long (slow clients), and a new connection
    # must send its first request (gRPC: its HTTP/2 SETTINGS) within first_request_s; a gRPC
    # connection with no RPC for first_request_s is closed too.
    read_deadline_s: float = 30.0
    first_request_s: float = 10.0
    # OTLP/JSON: JSON objects and arrays in one body (each costs ~100 bytes parsed).
    max_json_objects: int = 200_000
    retry_after_s: int = 5


class TooMany(ValueError):
    """The request holds more records than ``max_records`` (HTTP 413 / gRPC RESOURCE_EXHAUSTED)."""


class TooManyValues(Exception):  # not a ValueError: no per-record handler may take it for one bad record
    """The request holds more attribute values than ``max_values`` (HTTP 413): one record of a
    million attributes (or an array of a million elements) is a few MiB of gzip on the wire
    and ~400 bytes a value once decoded."""


class ValueBudget:
    """The attribute values (attributes, array elements, kvlist entries, span events) a request
    may still hold: spent as each container is read, before its values are made."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.left = self.limit = limit

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise TooManyValues(f"request holds more than {self.limit} attribute values (max_values)")


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("bad varint")


def _children(buf: bytes, start: int, end: int, field: int) -> list[tuple[int, int]]:
    """(start, end) of each length-delimited ``field`` between ``start`` and ``end``."""
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            if key >> 3 == field:
                out.append((pos, pos + length))
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("unexpected wire type")
    if pos != end:
        raise ValueError("truncated field")
    return out


def count_records(body: bytes, limit: int) -> int:
    """How many records (plus resource and scope blocks) an OTLP protobuf request holds.

    Reads only the wire framing of the three outer levels, and stops as soon as the count
    passes ``limit`` (raising :class:`TooMany`), so a request of a million empty records
    costs ``limit`` steps and no memory. A record needs at least two bytes, so a body of at
    most ``2 × limit`` bytes is not scanned at all. Malformed framing counts what it could
    read: the protobuf parser that follows gives the precise 400.
    """
    if len(body) <= 2 * limit:
        return 0
    count = 0
    try:
        # ExportXServiceRequest.resource_X = 1 → ResourceX.scope_X = 2 → ScopeX.records = 2
        for r_start, r_end in _children(body, 0, len(body), 1):
            for s_start, s_end in _children(body, r_start, r_end, 2):
                count += 2 + _count_field(body, s_start, s_end, 2, limit - count)
                if count > limit:
                    break
            if count > limit:
                break
    except ValueError:
        return count
    if count > limit:
        raise TooMany(f"request holds more than {limit} records (max_records)")
    return count


def _count_field(buf: bytes, start: int, end: int, field: int, budget: int) -> int:
    n = 0
    pos = start
    while pos < end and n <= budget:
        # Short varints read inline (a record's key is one byte, its length one or two):
        # this loop runs once per record of every request, before it is decoded.
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == 2:
            if pos + 1 < end and buf[pos] >= 0x80 and buf[pos + 1] < 0x80:
                length = (buf[pos] & 0x7F) | buf[pos + 1] << 7
                pos += 2
            elif pos < end and buf[pos] < 0x80:
                length = buf[pos]
                pos += 1
            else:
                length, pos = _varint(buf, pos, end)
            n += key >> 3 == field
            pos += length
        elif wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError("unexpected wire type")
    return n


def json_objects_over(body: bytes, limit: int) -> bool:
    """True when a JSON body holds more than ``limit`` objects and arrays (counted in C,
    before parsing: ``[{},{},…]`` costs ~3 bytes a record on the wire and ~100 parsed)."""
    return len(body) > limit and body.count(b"{") + body.count(b"[") > limit


def json_values_over(body: bytes, limit: int) -> bool:
    """True when a JSON body may hold more than ``limit`` values: each member of an object has a
    ``:``, each array element after the first a ``,`` (counted in C, before parsing; those inside
    strings count too, so this is an upper bound). ``{"metadata": {"k0": 0, …}}`` is one object
    of a million values in 15 MiB; parsed and redacted it cost 7.7 s and ~280 MiB."""
    return len(body) > limit and body.count(b":") + body.count(b",") > limit
