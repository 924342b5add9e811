"""Hostile clients against the real bridge process: each attack gets its status, RSS stays bounded
(< 128 MiB growth) and a normal request is answered within 2 s meanwhile."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from google.protobuf.internal.encoder import _VarintBytes
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests._bridge_proc import AUTH, TOKEN, BridgeProcess, normal_body, post, under_attack
from tests.test_bridge import SEED_000_ENVELOPE

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    tmp = tmp_path_factory.mktemp("hostile")
    with BridgeProcess(
        tmp, "--no-bus", "--read-deadline", "3", "--max-connections", "100", "--max-records", "10000"
    ) as proc:
        yield proc


def raw_request(port: int, head: bytes, body_parts: list[bytes], pause: float = 0.0) -> bytes:
    """Send a hand-made request; return what the server answers (b"" if it just closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        try:
            for part in body_parts:
                s.sendall(part)
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # the server hung up mid-body: what it said is still readable
        s.settimeout(10)
        try:
            return s.recv(4096)
        except OSError:
            return b""


def head(path: str = "/v1/logs", extra: str = "", auth: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/x-protobuf"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def post_json(bridge: BridgeProcess, path: str, data: object) -> tuple[int, bytes]:
    """``data`` as an OTLP/JSON (or /ingest) body: the status and the answer's body."""
    status, _, answer = post(
        bridge.port, path, json.dumps(data).encode(), {"Content-Type": "application/json"}
    )
    return status, answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("path", ["/v1/logs", "/nowhere"])
@pytest.mark.parametrize("auth", [True, False])
@pytest.mark.parametrize("size", [b"-1", b"-ffff", b"ffffffffffffffffffffffff"])
def test_negative_and_overflowing_chunk_sizes_are_400_without_reading_on(
    bridge: BridgeProcess, path: str, auth: bool, size: bytes
) -> None:
    """A chunk size that is negative or overflows is refused at once, on every path, with or without a token."""
    with under_attack(bridge):
        body = [size + b"\r\n"] + [b"x" * 65536] * 200  # 13 MiB more if the server kept reading
        answer = raw_request(bridge.port, head(path, "Transfer-Encoding: chunked\r\n", auth), body)
    assert status_of(answer) in (400, 401, 404), answer[:200]


@pytest.mark.parametrize("size", [b"-1", b"-ffff", b"zz", b"ffffffffffffffffffffffff"])
def test_a_bad_chunk_size_after_the_headers_is_400_at_once_not_a_late_408(
    bridge: BridgeProcess, size: bytes
) -> None:
    """Headers first, the bad size line once the handler waits on the body: still 400, at once.

    aiohttp queues a parse error in a body as the connection's next message; the handler
    already reading the body used to wait for the read deadline (3 s here) and answer as for a slow body.
    """
    with under_attack(bridge), socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as s:
        s.sendall(head("/v1/logs", "Transfer-Encoding: chunked\r\n"))
        # Not a wait for an outcome: the pause creates the case (the handler waiting on the body).
        time.sleep(0.3)
        t0 = time.monotonic()
        s.sendall(size + b"\r\n" + b"x" * 65536)
        answer = s.recv(4096)
        took = time.monotonic() - t0
    assert status_of(answer) == 400, answer[:200]
    assert b"malformed request body" in answer
    assert took < 2.0, f"answered after {took:.1f} s: the read deadline, not the framing error"


def test_duplicate_content_length_headers_are_400(bridge: BridgeProcess) -> None:
    """Two Content-Length headers (request smuggling) are refused by the HTTP parser."""
    with under_attack(bridge):
        answer = raw_request(bridge.port, head(extra="Content-Length: 3\r\nContent-Length: 30\r\n"), [b"abc"])
    assert status_of(answer) == 400


def test_duplicate_authorization_headers_are_401(bridge: BridgeProcess) -> None:
    """Two Authorization headers, one right, are not a way in."""
    extra = "Authorization: Bearer wrong\r\nContent-Length: 0\r\n"
    answer = raw_request(bridge.port, head(extra=extra), [])
    assert status_of(answer) == 401


def test_an_unauthenticated_large_body_is_401_before_it_is_read(bridge: BridgeProcess) -> None:
    """The token is checked before the body: a 1 GiB announced body gets 401 and costs nothing."""
    with under_attack(bridge):
        answer = raw_request(
            bridge.port, head(extra="Content-Length: 1073741824\r\n", auth=False), [b"\0" * 65536] * 100
        )
    assert status_of(answer) == 401


def test_the_bearer_scheme_is_case_insensitive(bridge: BridgeProcess) -> None:
    """'bearer' and 'BEARER' work like 'Bearer'."""
    for scheme in ("bearer", "BEARER"):
        assert post(bridge.port, "/v1/logs", normal_body(), {"Authorization": f"{scheme} {TOKEN}"})[0] == 200


# --------------------------------------------------------------------------- slow clients and floods


def test_slow_bodies_hold_no_decode_slot_and_get_a_retryable_503(bridge: BridgeProcess) -> None:
    """Four clients sending a byte at a time hold nothing others need; each gets 503 + Retry-After at
    the read deadline (a slow network is not a bad batch: a 408 is not retried, and the batch is lost)."""
    answers: list[bytes] = []

    def slow() -> None:
        answers.append(
            raw_request(bridge.port, head(extra="Content-Length: 1000\r\n"), [b"\0"] * 40, pause=0.15)
        )

    with under_attack(bridge) as normal:
        threads = [threading.Thread(target=slow) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        normal()
        for t in threads:
            t.join(20)
    assert [status_of(a) for a in answers] == [503] * 4
    assert all(b"\r\nRetry-After: " in a for a in answers)


def test_a_connection_flood_does_not_lock_out_a_normal_client(bridge: BridgeProcess) -> None:
    """300 idle connections held open (limit 100): the oldest idle ones make room, normal requests are served.

    (While connections are still pouring in faster than the limit per event-loop turn, a new
    client may itself be evicted before its request is read; it retries, as the Collector does.)
    """
    socks: list[socket.socket] = []
    with under_attack(bridge, background=False) as normal:
        try:
            for _ in range(300):
                socks.append(socket.create_connection(("127.0.0.1", bridge.port), timeout=5))
            for _ in range(5):
                normal()
        finally:
            for s in socks:
                s.close()


# --------------------------------------------------------------------------- amplification


def _ld(field: int, payload: bytes) -> bytes:
    return bytes([(field << 3) | 2]) + _VarintBytes(len(payload)) + payload


def test_a_million_empty_records_in_2_kb_of_gzip_are_413(bridge: BridgeProcess) -> None:
    """Record-count amplification: refused by count before anything is decoded or written."""
    body = gzip.compress(_ld(1, _ld(2, b"\x12\x00" * 1_000_000)), 9)
    assert len(body) < 8 * 1024
    with under_attack(bridge):
        status, _, _ = post(bridge.port, "/v1/logs", body, {"Content-Encoding": "gzip"})
    assert status == 413
    assert not any(ln.get("message") == "" for ln in bridge.ledger_lines())  # no empty record written


def test_a_gzip_bomb_is_413_without_being_inflated(bridge: BridgeProcess) -> None:
    """1 GiB of zeros in ~1 MiB of gzip: refused one byte past the cap."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    body = b"".join(comp.compress(chunk) for _ in range(1024)) + comp.flush()
    with under_attack(bridge):
        status, _, _ = post(bridge.port, "/v1/logs", body, {"Content-Encoding": "gzip"})
    assert status == 413


def _deep(levels: int) -> AnyValue:
    value = AnyValue(string_value="bottom")
    for _ in range(levels):
        outer = AnyValue()
        outer.array_value.values.add().CopyFrom(value)
        value = outer
    return value


@pytest.mark.parametrize("levels", [20, 60, 200])
def test_a_record_nested_too_deep_is_rejected_alone(bridge: BridgeProcess, levels: int) -> None:
    """Nesting past max_depth (or past protobuf's own limit): that record in partial_success, the rest written."""
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1_700_000_000_000_000_001).body.string_value = f"good before {levels}"
    records.add(time_unix_nano=1_700_000_000_000_000_002).body.CopyFrom(_deep(levels))
    records.add(time_unix_nano=1_700_000_000_000_000_003).body.string_value = f"good after {levels}"
    with under_attack(bridge):
        status, _, answer = post(bridge.port, "/v1/logs", req.SerializeToString())
    assert status == 200
    assert ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records == 1
    messages = {ln.get("message") for ln in bridge.ledger_lines()}
    assert {f"good before {levels}", f"good after {levels}"} <= messages


def test_json_nested_900_deep_is_400_not_500(bridge: BridgeProcess) -> None:
    """Deep JSON is malformed input (400), not a crash (500)."""
    body = b'{"resourceLogs":' + b"[" * 900 + b"]" * 900 + b"}"
    with under_attack(bridge):
        status, _, _ = post(bridge.port, "/v1/logs", body, {"Content-Type": "application/json"})
        ingest, _, _ = post(
            bridge.port, "/ingest", b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}
        )
    assert status == 400 and ingest == 400


# --------------------------------------------------------------------------- bad records


def test_invalid_utf8_rejects_only_that_record(bridge: BridgeProcess) -> None:
    """A string that is not UTF-8 makes protobuf refuse the message; the bridge salvages the others."""
    good = ExportLogsServiceRequest()
    records = good.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1_700_000_000_000_000_011).body.string_value = "utf8 neighbour one"
    records.add(time_unix_nano=1_700_000_000_000_000_012).body.string_value = "PLACEHOLDER-XYZ"
    records.add(time_unix_nano=1_700_000_000_000_000_013).body.string_value = "utf8 neighbour two"
    body = good.SerializeToString().replace(b"PLACEHOLDER-XYZ", b"bad \xff\xfe bytes!!!")  # same length
    status, _, answer = post(bridge.port, "/v1/logs", body)
    assert status == 200
    assert ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records == 1
    messages = {ln.get("message") for ln in bridge.ledger_lines()}
    assert {"utf8 neighbour one", "utf8 neighbour two"} <= messages


def test_wrong_ids_reject_only_their_record(bridge: BridgeProcess) -> None:
    """A non-hex trace id in OTLP/JSON and a short span id in protobuf: that record alone is rejected."""
    body = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": "1700000000000000021", "body": {"stringValue": "id ok"}},
                            {
                                "timeUnixNano": "1700000000000000022",
                                "traceId": "zz" * 16,
                                "body": {"stringValue": "id not hex"},
                            },
                        ]
                    }
                ]
            }
        ]
    }
    status, answer = post_json(bridge, "/v1/logs", body)
    assert status == 200, answer
    assert json.loads(answer)["partialSuccess"]["rejectedLogRecords"] == "1"
    messages = {ln.get("message") for ln in bridge.ledger_lines()}
    assert "id ok" in messages and "id not hex" not in messages


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("logs", {"timeUnixNano": "1e400"}),  # not an integer
        ("logs", {"timeUnixNano": "9" * 40}),  # past 64 bits
        ("logs", {"timeUnixNano": "-5"}),  # a fixed64 cannot be negative
        ("logs", {"body": {"intValue": "9" * 30}}),
        ("logs", {"body": {"stringValue": "\ud800 lone surrogate"}}),
        ("logs", {"attributes": [{"key": "k", "value": {"doubleValue": "not a number"}}]}),
        ("traces", {"startTimeUnixNano": "1e400"}),
        ("traces", {"name": "\ud800"}),
    ],
)
def test_one_unreadable_otlp_json_record_is_rejected_alone(
    bridge: BridgeProcess, kind: str, bad: dict[str, object]
) -> None:
    """A value protobuf's JSON reader refuses costs its own record, not the request (a 400
    made the Collector drop the neighbours with it)."""
    tag = f"{kind}-{abs(hash(json.dumps(bad))) % 10**9:09d}"
    body: dict[str, object]
    if kind == "logs":
        records = [
            {"timeUnixNano": "1700000000000000031", "body": {"stringValue": f"json neighbour one {tag}"}},
            {"timeUnixNano": "1700000000000000032", "body": {"stringValue": "json bad one"}, **bad},
            {"timeUnixNano": "1700000000000000033", "body": {"stringValue": f"json neighbour two {tag}"}},
        ]
        body = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    else:
        span = {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "kind": 1,
            "endTimeUnixNano": "1700000000000000099",
        }
        spans = [
            # Span ids are a span's identity: each case its own, or the next case's are re-deliveries.
            {**span, "spanId": f"{tag[-9:]}0000001", "name": f"json span one {tag}"},
            {**span, "spanId": f"{tag[-9:]}0000002", "name": "json bad span", **bad},
            {**span, "spanId": f"{tag[-9:]}0000003", "name": f"json span two {tag}"},
        ]
        body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    # json.dumps' ensure_ascii: a lone surrogate goes as its \\ud800 escape
    status, answer = post_json(bridge, f"/v1/{kind}", body)
    assert status == 200, answer
    partial = json.loads(answer)["partialSuccess"]
    assert partial["rejectedLogRecords" if kind == "logs" else "rejectedSpans"] == "1", partial
    text = json.dumps(bridge.ledger_lines())
    assert text.count(tag) == 2, "both neighbours are in the ledger"


def test_an_unreadable_otlp_json_resource_costs_its_own_records_only(bridge: BridgeProcess) -> None:
    """A resource whose attribute protobuf refuses: its two records are rejected, the next block's is written."""
    bad_resource = {"attributes": [{"key": "service.name", "value": {"intValue": "1e400"}}]}
    records = [
        {"timeUnixNano": f"17000000000000000{n}", "body": {"stringValue": f"under bad {n}"}} for n in (41, 42)
    ]
    body = {
        "resourceLogs": [
            {"resource": bad_resource, "scopeLogs": [{"logRecords": records}]},
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": "1700000000000000043", "body": {"stringValue": "good block"}}
                        ]
                    }
                ]
            },
        ]
    }
    status, answer = post_json(bridge, "/v1/logs", body)
    assert status == 200, answer
    assert json.loads(answer)["partialSuccess"]["rejectedLogRecords"] == "2"
    messages = {ln.get("message") for ln in bridge.ledger_lines()}
    assert "good block" in messages and "under bad 41" not in messages


def test_huge_timestamps_are_rejected_alone_not_500(bridge: BridgeProcess) -> None:
    """/ingest with a timestamp_ms past any calendar: that envelope rejected, its neighbour written."""
    good = {**SEED_000_ENVELOPE, "content": "ts fine"}
    good["metadata"] = {**SEED_000_ENVELOPE["metadata"], "stimulus_id": "ts-ok"}
    bad = {**SEED_000_ENVELOPE, "content": "ts huge"}
    bad["metadata"] = {**SEED_000_ENVELOPE["metadata"], "stimulus_id": "ts-huge", "timestamp_ms": 10**30}
    status, answer = post_json(bridge, "/ingest", [good, bad])
    assert status == 200, answer
    assert json.loads(answer)["rejected"] == 1
    assert "ts fine" in {ln.get("message") for ln in bridge.ledger_lines()}
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add(
        time_unix_nano=2**64 - 1
    ).body.string_value = "far future"
    assert post(bridge.port, "/v1/logs", req.SerializeToString())[0] == 200


def test_the_auth_header_is_required_on_every_otlp_path(bridge: BridgeProcess) -> None:
    """No token, no entry (and the answer says so)."""
    for path in ("/v1/logs", "/v1/traces", "/ingest"):
        status, hdrs, _ = post(bridge.port, path, b"", {"Authorization": ""})
        assert status == 401 and "bearer" in hdrs["www-authenticate"].lower()
    assert AUTH  # the fixture's token is what normal requests use
