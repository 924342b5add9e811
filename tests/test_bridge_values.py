"""Attribute-value amplification: a million values in one record, in a few MiB of gzip.

``max_records`` bounds the records of a request, but one record can hold a million attributes,
an array of a million elements, a kvlist of a million entries; one span a million events.
Each costs ~400-500 bytes once decoded, and the ledger line of such a record is a
15 MiB JSON object: on the code before ``max_values`` a 2.6 MiB gzip request of one record took
the bridge ~350 MiB up and 13 s of a decode slot, and was written. Now the values are counted
as each container is read, before its values are made: 413 (RESOURCE_EXHAUSTED on gRPC), the
memory under the hostile bound, a normal request answered meanwhile, nothing written.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints
import pytest
from google.protobuf.internal.encoder import _VarintBytes

from tests._bridge_proc import BridgeProcess, post, under_attack
from tests.test_bridge import SEED_000_ENVELOPE
from tests.test_bridge_grpc import call

MILLION = 1_000_000


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    with BridgeProcess(tmp_path_factory.mktemp("values"), "--no-bus") as proc:
        yield proc


def _ld(field: int, payload: bytes) -> bytes:
    return bytes([(field << 3) | 2]) + _VarintBytes(len(payload)) + payload


def _int(i: int) -> bytes:
    return _ld(2, b"\x18" + _VarintBytes(i))  # KeyValue.value = AnyValue{int_value}


def _logs_request(record: bytes) -> bytes:
    # ExportLogsServiceRequest.resource_logs(1) → ResourceLogs.scope_logs(2) → ScopeLogs.log_records(2)
    return _ld(1, _ld(2, _ld(2, b"\x09" + (1_700_000_000_000_000_000).to_bytes(8, "little") + record)))


def many_attributes(n: int) -> bytes:
    """One log record with ``n`` distinct integer attributes (LogRecord.attributes = 6)."""
    return _logs_request(b"".join(_ld(6, _ld(1, f"k{i}".encode()) + _int(i)) for i in range(n)))


def long_array_body(n: int) -> bytes:
    """One log record whose body is an array of ``n`` integers (body = 5, array_value = 5)."""
    values = b"".join(_ld(1, b"\x18" + _VarintBytes(i)) for i in range(n))
    return _logs_request(_ld(5, _ld(5, values)))


def long_kvlist_attribute(n: int) -> bytes:
    """One attribute whose value is a kvlist of ``n`` entries (kvlist_value = 6)."""
    entries = b"".join(_ld(1, _ld(1, f"k{i}".encode()) + _int(i)) for i in range(n))
    return _logs_request(_ld(6, _ld(1, b"payload") + _ld(2, _ld(6, entries))))


def many_events(n: int) -> bytes:
    """One span with ``n`` empty events (Span.events = 11)."""
    span = _ld(1, b"\x01" * 16) + _ld(2, b"\x02" * 8) + _ld(5, b"amplified") + b"\x5a\x00" * n
    return _ld(1, _ld(2, _ld(2, span)))


def _ledger_size(bridge: BridgeProcess) -> int:
    return bridge.ledger.stat().st_size if bridge.ledger.exists() else 0


_ATTACKS = {
    "a million attributes": ("/v1/logs", lambda: many_attributes(900_000)),
    "an array body of a million": ("/v1/logs", lambda: long_array_body(MILLION)),
    "a kvlist of a million": ("/v1/logs", lambda: long_kvlist_attribute(800_000)),
    "a million events": ("/v1/traces", lambda: many_events(MILLION)),
}


@pytest.mark.parametrize("attack", list(_ATTACKS))
def test_a_million_values_in_one_record_are_413_within_the_memory_bound(
    bridge: BridgeProcess, attack: str
) -> None:
    path, build = _ATTACKS[attack]
    raw = build()
    assert len(raw) <= 16 * 1024 * 1024, len(raw)  # within max_body: only the values limit stops it
    wire = gzip.compress(raw, 6)
    before = _ledger_size(bridge)
    with under_attack(bridge):
        status, _, answer = post(bridge.port, path, wire, {"Content-Encoding": "gzip"}, timeout=60)
    assert status == 413, answer[:200]
    assert b"max_values" in answer
    # Nothing of it written: the normal requests meanwhile add a few KiB; the record, ~15 MiB.
    assert _ledger_size(bridge) - before < 256 * 1024


def test_over_grpc_too_many_values_is_resource_exhausted(bridge: BridgeProcess) -> None:
    """The same limit on the gRPC port (one core behind both): RESOURCE_EXHAUSTED, not retried."""
    before = _ledger_size(bridge)
    with under_attack(bridge):
        code, _ = call(bridge.grpc_port, many_attributes(600_000))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _ledger_size(bridge) - before < 256 * 1024


def test_a_record_with_many_attributes_under_the_limit_is_written(bridge: BridgeProcess) -> None:
    """The limit counts values, it does not refuse a wide record: 5,000 attributes are written."""
    status, _, _ = post(bridge.port, "/v1/logs", many_attributes(5_000))
    assert status == 200
    lines = bridge.ledger_lines()
    assert lines[-1]["k4999"] == 4999


def test_an_ingest_envelope_of_a_million_metadata_keys_is_413_before_it_is_parsed(
    bridge: BridgeProcess,
) -> None:
    """``/ingest`` takes free-form JSON: one envelope whose metadata holds 850,000 keys is one JSON
    object (``max_json_objects`` does not see it) in 4 MiB of gzip; parsed, normalised and redacted
    it cost 7.7 s and ~280 MiB. Its values are counted before parsing: 413."""
    envelope = {
        "type": "membrane.inject",
        "scope": "organizational",
        "source": "amplified",
        "channel": "signals.test",
        "content": "metadata of a million keys",
        "severity": "error",
        "metadata": {f"k{i}": i for i in range(850_000)},
    }
    wire = gzip.compress(json.dumps([envelope]).encode(), 6)
    before = _ledger_size(bridge)
    with under_attack(bridge):
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        status, _, answer = post(bridge.port, "/ingest", wire, headers, timeout=60)
    assert status == 413, answer[:200]
    assert b"max_values" in answer
    assert _ledger_size(bridge) - before < 256 * 1024
    # A normal envelope on the same path is still written.
    small = json.dumps([SEED_000_ENVELOPE]).encode()
    assert post(bridge.port, "/ingest", small, {"Content-Type": "application/json"})[0] == 200
