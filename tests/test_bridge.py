"""The bridge over real HTTP on 127.0.0.1: OTLP/HTTP in (protobuf, JSON, gzip), ledger lines and
envelopes out, the OTLP status codes for bad input, and a server that keeps serving."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from membrane_otel.bridge import Bridge, ServerOptions, make_server
from membrane_otel.bridge._server import serve_in_thread
from membrane_otel.ledger._writer import Ledger
from membrane_otel.membrane._bus import BusClient
from membrane_otel.membrane._publish import MembranePublisher
from membrane_otel.membrane._spool import Spool
from membrane_otel.settings import load_settings
from membrane_otel.translate._core import log_line, span_line
from membrane_otel.translate._records import log_from_sdk, span_from_sdk
from tests._bus_helpers import CLI, BusProcess, cli_env, read_record, self_signed_cert, wait_for
from tests._helpers import read_ledger
from tests.test_bridge_otlp import sdk_logs, sdk_spans, to_otlp_json

PB = "application/x-protobuf"
JS = "application/json"
CHAIN = ("seq", "prev_hash", "hash")

SEED_000_ENVELOPE: dict[str, Any] = {
    "type": "membrane.inject",
    "citizen_id": "code_substrate_orchestration_scripts_X_py",
    "channel": "signals.script.X",
    "content": "my_script: Error message",
    "severity": "error",
    "features_raw": {"urgency": 0.7, "novelty": 0.25, "trust": 0.9},
    "metadata": {
        "stimulus_id": "script_log_X_1234567890_abc123",
        "origin": "script_logger",
        "timestamp_ms": 1234567890000,
        "signal_type": "script_error",
        "dedupe_key": "sha1(script|error_type|msg|fingerprint)",
        "stack_fingerprint": "abc123def456",
        "script_name": "my_script",
        "script_path": "orchestration/scripts/my_script.py",
        "module": "my_module",
        "function": "my_function",
        "line": 42,
        "level": "ERROR",
        "error_type": "KeyError",
        "stack_trace": "Traceback (most recent call last):\n...",
    },
}


@dataclass
class Running:
    url: str
    port: int
    ledger: Path
    server: Any

    def lines(self) -> list[dict[str, Any]]:
        return read_ledger(self.ledger)


Start = Callable[..., Running]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start in-thread bridges on free ports; every one is stopped at the end of the test."""
    stops: list[Callable[[], None]] = []

    def _start(
        *,
        ledger: Path | None = None,
        publisher: Any = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        **options: Any,
    ) -> Running:
        path = ledger or tmp_path / f"ledger-{len(stops)}.jsonl"
        bridge = Bridge(Ledger(path), publisher)
        server = make_server(
            bridge,
            "127.0.0.1",
            0,
            ServerOptions(**options),
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
        )
        stop = serve_in_thread(server)
        stops.append(lambda: (stop(), bridge.shutdown(2000)))
        return Running(server.url, server.server_address[1], path, server)

    yield _start
    for stop in stops:
        stop()


def post(
    port: int,
    path: str,
    body: bytes,
    ctype: str | None = PB,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        hdrs = dict(headers or {})
        if ctype is not None:
            hdrs["Content-Type"] = ctype
        c.request("POST", path, body=body, headers=hdrs)
        resp = c.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        if conn is None:
            c.close()


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def logs_body() -> bytes:
    return encode_logs(sdk_logs()).SerializeToString()


def spans_body() -> bytes:
    return encode_spans(sdk_spans()).SerializeToString()


def rpc_status(body: bytes, ctype: str) -> status_pb2.Status:
    status = status_pb2.Status()
    if ctype == JS:
        data = json.loads(body)
        status.code, status.message = data.get("code", 0), data.get("message", "")
    else:
        status.ParseFromString(body)
    return status


def good_request_works(run: Running) -> None:
    status, _, _ = post(run.port, "/v1/logs", logs_body())
    assert status == 200


def without_chain(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in CHAIN}


# --------------------------------------------------------------------------- accepted input


def test_the_sdk_otlp_http_exporters_land_in_the_ledger_as_in_embedded_mode(start: Start) -> None:
    """Spans and logs sent by the real OTLP/HTTP exporters become exactly the embedded-mode lines."""
    # Authenticated: the SDK's own record ids are honoured only from a client with the token.
    run = start(token="tok")
    spans, logs = sdk_spans(), sdk_logs()
    auth = {"Authorization": "Bearer tok"}
    span_exporter = OTLPSpanExporter(endpoint=f"{run.url}/v1/traces", headers=auth)
    log_exporter = OTLPLogExporter(endpoint=f"{run.url}/v1/logs", headers=auth)
    assert span_exporter.export(spans) is SpanExportResult.SUCCESS
    assert log_exporter.export(logs) is LogRecordExportResult.SUCCESS
    span_exporter.shutdown()
    log_exporter.shutdown()
    expected = [span_line(span_from_sdk(s)) for s in spans] + [log_line(log_from_sdk(r)) for r in logs]
    got = [without_chain(line) for line in run.lines()]
    key = lambda ln: ln["record_id"]  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)


@pytest.mark.parametrize("ctype", [PB, JS])
@pytest.mark.parametrize("gzipped", [False, True])
def test_protobuf_json_and_gzip_bodies_are_accepted(start: Start, ctype: str, gzipped: bool) -> None:
    """Each encoding answers 200 with an empty Export*ServiceResponse in the request's encoding."""
    run = start()
    for path, req, resp_type in (
        ("/v1/traces", encode_spans(sdk_spans()), ExportTraceServiceResponse),
        ("/v1/logs", encode_logs(sdk_logs()), ExportLogsServiceResponse),
    ):
        body = to_otlp_json(req) if ctype == JS else req.SerializeToString()
        headers = {"Content-Encoding": "gzip"} if gzipped else {}
        status, hdrs, answer = post(run.port, path, gzip.compress(body) if gzipped else body, ctype, headers)
        assert status == 200, answer
        assert hdrs["content-type"] == ctype
        if ctype == JS:
            assert json.loads(answer) == {}
        else:
            assert not resp_type.FromString(answer).HasField("partial_success")
    assert len(run.lines()) == 2 + 3  # sdk_spans makes two spans, sdk_logs three records
    assert {ln["event"] for ln in run.lines()} >= {"hrm_trace", "span", "script_error", "task_started"}


def test_chunked_bodies_are_accepted(start: Start) -> None:
    """A body sent with Transfer-Encoding: chunked is read as a whole."""
    run = start()
    body = logs_body()
    c = http.client.HTTPConnection("127.0.0.1", run.port, timeout=10)
    c.request("POST", "/v1/logs", body=iter([body[:10], body[10:]]), headers={"Content-Type": PB})
    resp = c.getresponse()
    assert resp.status == 200, resp.read()
    c.close()
    assert len(run.lines()) == 3


def test_a_batch_delivered_twice_is_written_once(start: Start) -> None:
    """The Collector's retry of the same batch puts no record twice into the ledger."""
    run = start()
    logs, spans = logs_body(), spans_body()
    for _ in range(2):
        assert post(run.port, "/v1/logs", logs)[0] == 200
        assert post(run.port, "/v1/traces", spans)[0] == 200
    lines = run.lines()
    assert len(lines) == 5
    assert len({ln["record_id"] for ln in lines}) == 5


def test_unreadable_records_are_a_partial_success(start: Start) -> None:
    """Records that cannot be translated are counted in partial_success with a message; the rest land."""
    run = start()
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    spans.add(
        name="good", trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2
    )
    spans.add(name="bad-id", trace_id=b"\x01" * 5, span_id=b"\x03" * 8)
    status, _, answer = post(run.port, "/v1/traces", req.SerializeToString())
    assert status == 200
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 1 and "bad-id" in partial.error_message

    logs = ExportLogsServiceRequest()
    records = logs.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1_700_000_000_000_000_000).body.string_value = "fine"
    records.add(time_unix_nano=1_700_000_000_000_000_000, span_id=b"\x09" * 4).body.string_value = "short id"
    status, _, answer = post(run.port, "/v1/logs", to_otlp_json(logs), JS)
    assert status == 200
    assert json.loads(answer)["partialSuccess"]["rejectedLogRecords"] == "1"
    assert sorted(ln.get("message", ln.get("name")) for ln in run.lines()) == ["fine", "good"]


# --------------------------------------------------------------------------- refused input


BAD_REQUESTS: list[tuple[str, str, bytes, str | None, dict[str, str], int]] = [
    ("garbage protobuf", "/v1/logs", b"\xff\xff\xff\xff\xff", PB, {}, 400),
    ("invalid JSON", "/v1/traces", b"{oops", JS, {}, 400),
    ("JSON array", "/v1/logs", b"[]", JS, {}, 400),
    ("not gzip", "/v1/logs", b"plain bytes", PB, {"Content-Encoding": "gzip"}, 400),
    ("truncated gzip", "/v1/logs", gzip.compress(b"x" * 10_000)[:40], PB, {"Content-Encoding": "gzip"}, 400),
    ("text/plain", "/v1/logs", b"hello", "text/plain", {}, 415),
    ("no content type", "/v1/traces", b"hello", None, {}, 415),
    ("brotli", "/v1/logs", b"\x00", PB, {"Content-Encoding": "br"}, 415),
    ("unknown path", "/v1/metrics", b"\x00", PB, {}, 404),
    ("bad Content-Length", "/v1/logs", b"", PB, {"Content-Length": "ten"}, 400),
    ("ingest not JSON", "/ingest", b"<xml/>", JS, {}, 400),
    ("ingest scalar", "/ingest", b"42", JS, {}, 400),
]


@pytest.mark.parametrize(
    ("what", "path", "body", "ctype", "headers", "expected"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS]
)
def test_bad_requests_get_their_status_and_the_server_keeps_serving(
    start: Start, what: str, path: str, body: bytes, ctype: str | None, headers: dict[str, str], expected: int
) -> None:
    """Each bad request gets its 4xx with a google.rpc.Status body; a good request works after it."""
    run = start()
    conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=10)
    status, hdrs, answer = post(run.port, path, body, ctype, headers, conn=conn)
    assert status == expected, answer
    if path != "/ingest" and what != "bad Content-Length":  # that one the HTTP parser refuses itself
        assert rpc_status(answer, hdrs["content-type"]).message
    # The same keep-alive connection, unless the server said it would close it, and a new one.
    if hdrs.get("connection", "").lower() != "close":
        assert post(run.port, "/v1/logs", logs_body(), conn=conn)[0] == 200
    conn.close()
    good_request_works(run)


def test_a_body_over_the_limit_is_413(start: Start) -> None:
    """A raw body over --max-body is refused with 413, and the server keeps serving."""
    run = start(max_body=64 * 1024)
    status, hdrs, answer = post(run.port, "/v1/logs", b"\x00" * (200 * 1024))
    assert status == 413
    assert rpc_status(answer, hdrs["content-type"]).code == 8  # RESOURCE_EXHAUSTED
    good_request_works(run)


def test_a_gzip_bomb_is_refused_with_413(start: Start) -> None:
    """10 MB of zeros, gzip-compressed to a few KB, is over a 4 MiB decompressed cap: 413."""
    run = start(max_body=4 * 1024 * 1024)
    bomb = gzip.compress(b"\x00" * (10 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 64 * 1024
    started = time.monotonic()
    status, _, answer = post(run.port, "/v1/logs", bomb, PB, {"Content-Encoding": "gzip"})
    assert status == 413
    assert b"decompressed" in answer
    assert time.monotonic() - started < 5
    good_request_works(run)


def test_a_wrong_or_missing_token_is_401(start: Start) -> None:
    """With a token configured, no/wrong/non-bearer credentials get 401; the right one gets 200."""
    run = start(token="s3cret-token")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic czNjcmV0LXRva2Vu"},
        {"Authorization": "Bearer s3cret-token-and-more"},
    ):
        status, hdrs, _ = post(run.port, "/v1/logs", logs_body(), PB, headers)
        assert status == 401
        assert hdrs["www-authenticate"].startswith("Bearer")
        status, _, _ = post(run.port, "/ingest", json.dumps([SEED_000_ENVELOPE]).encode(), JS, headers)
        assert status == 401
    assert run.lines() == []
    assert post(run.port, "/v1/logs", logs_body(), PB, {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert get(f"{run.url}/health")[0] == 200  # probes need no token


def test_an_unwritable_ledger_answers_503_with_retry_after_and_recovers(start: Start, tmp_path: Path) -> None:
    """Ledger write failure → 503 + Retry-After (the Collector retries); the retry then lands."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the ledger's directory should be")
    run = start(ledger=blocker / "ledger.jsonl", retry_after_s=2)
    body = logs_body()
    status, hdrs, answer = post(run.port, "/v1/logs", body)
    assert status == 503
    assert hdrs["retry-after"] == "2"
    assert rpc_status(answer, PB).code == 14  # UNAVAILABLE
    ready, detail = get(f"{run.url}/ready")
    assert ready == 503 and detail["ledger"]["ok"] is False
    blocker.unlink()
    blocker.mkdir()
    assert post(run.port, "/v1/logs", body)[0] == 200
    assert len(run.lines()) == 3  # the retried batch was not taken for a duplicate
    assert get(f"{run.url}/ready")[0] == 200


def test_a_stalled_client_holds_no_slot_and_gets_503_at_the_read_deadline(start: Start) -> None:
    """A client that stops mid-body holds no decode slot: others are served; it gets 503 + Retry-After
    at the deadline (retried by OTLP clients, which drop a batch answered 408)."""
    import socket

    run = start(max_inflight=1, read_deadline_s=1.5, retry_after_s=1)
    stalled = socket.create_connection(("127.0.0.1", run.port), timeout=10)
    try:
        stalled.sendall(
            b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"\x00" * 10
        )
        good_request_works(run)
        assert run.server.ingest.inflight == 0
        stalled.settimeout(10)
        answer = stalled.recv(300)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
    finally:
        stalled.close()


# --------------------------------------------------------------------------- /ingest and the bus


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[BusProcess, Path]]:
    record = tmp_path / "bus-record.jsonl"
    with BusProcess(record=record) as proc:
        yield proc, record


def publisher_for(bus_url: str, tmp: Path) -> MembranePublisher:
    settings = load_settings({}, bus_url=bus_url, spool_dir=str(tmp / "spool"), throttle=False)
    client = BusClient(bus_url, Spool(tmp / "spool"), flush_interval_ms=20, register_atexit=False)
    return MembranePublisher(settings, client, None)


def test_errors_and_stimuli_become_envelopes_spans_and_events_never(
    start: Start, bus: tuple[BusProcess, Path], tmp_path: Path
) -> None:
    """Through the bridge, only the error and the stimulus reach the bus; a re-delivery sends nothing new."""
    proc, record = bus
    publisher = publisher_for(proc.url, tmp_path)
    run = start(publisher=publisher)
    batch = logs_body()
    assert post(run.port, "/v1/traces", spans_body())[0] == 200
    assert post(run.port, "/v1/logs", batch)[0] == 200
    envelopes = wait_for(lambda: len(read_record(record)) >= 2 and read_record(record), what="2 envelopes")
    assert sorted(e["metadata"]["signal_type"] for e in envelopes) == ["metric", "script_error"]
    error = next(e for e in envelopes if e["metadata"]["signal_type"] == "script_error")
    assert error["metadata"]["stack_fingerprint"] == "abc123" and error["severity"] == "error"
    assert error["metadata"]["node_id"] == "code_substrate_orchestration_scripts_my_script_py"
    assert post(run.port, "/v1/logs", batch)[0] == 200  # the same batch again
    assert publisher.force_flush(5000)  # anything wrongly re-sent has reached the bus now
    assert len(read_record(record)) == 2


def test_ingest_takes_a_seed_000_envelope_array(
    start: Start, bus: tuple[BusProcess, Path], tmp_path: Path
) -> None:
    """Legacy envelopes (citizen_id on top) are validated, published and written; a resend is a no-op."""
    proc, record = bus
    run = start(publisher=publisher_for(proc.url, tmp_path))
    second = json.loads(json.dumps(SEED_000_ENVELOPE))
    second["metadata"]["stimulus_id"] = "script_log_X_1234567891_def456"
    body = json.dumps([SEED_000_ENVELOPE, second]).encode()
    status, _, answer = post(run.port, "/ingest", body, JS)
    assert status == 200
    assert json.loads(answer) == {"accepted": 2, "written": 2, "duplicates": 0, "rejected": 0, "errors": []}
    envelopes = wait_for(lambda: len(read_record(record)) >= 2 and read_record(record), what="2 envelopes")
    first = envelopes[0]
    assert "citizen_id" not in first
    assert first["metadata"]["node_id"] == "code_substrate_orchestration_scripts_X_py"
    assert (first["source"], first["scope"]) == ("script:my_script", "organizational")
    lines = run.lines()
    assert [ln["event"] for ln in lines] == ["script_error", "script_error"]
    assert lines[0]["message"] == "my_script: Error message"
    assert lines[0]["metadata"]["stack_fingerprint"] == "abc123def456"
    status, _, answer = post(run.port, "/ingest", body, JS)
    assert status == 200 and json.loads(answer)["duplicates"] == 2
    assert len(run.lines()) == 2


def test_ingest_rejects_invalid_envelopes_one_by_one(start: Start) -> None:
    """An invalid element is named in the answer; the valid ones land; all invalid is a 400."""
    run = start()
    bad = {"type": "membrane.inject", "channel": "x", "content": "no metadata", "severity": "error"}
    status, _, answer = post(run.port, "/ingest", json.dumps([SEED_000_ENVELOPE, bad]).encode(), JS)
    assert status == 200
    reply = json.loads(answer)
    assert (reply["accepted"], reply["rejected"]) == (1, 1) and reply["errors"][0].startswith("[1]")
    status, _, answer = post(run.port, "/ingest", json.dumps([bad, "text"]).encode(), JS)
    assert status == 400 and json.loads(answer)["rejected"] == 2
    assert len(run.lines()) == 1


# --------------------------------------------------------------------------- probes, TLS, CLI


def test_health_and_ready_report_per_component(
    start: Start, bus: tuple[BusProcess, Path], tmp_path: Path
) -> None:
    """/health is 200; /ready is 200 with ledger and bus detail; an unknown GET is 404."""
    run = start(publisher=publisher_for(bus[0].url, tmp_path))
    assert get(f"{run.url}/health") == (200, {"status": "ok"})
    status, detail = get(f"{run.url}/ready")
    assert status == 200
    assert detail["ready"] is True
    assert detail["ledger"] == {"ok": True, "path": str(run.ledger)}
    assert detail["bus"]["ok"] is True and detail["bus"]["enabled"] is True
    assert get(f"{run.url}/nothing")[0] == 404


def test_tls_serves_https(start: Start, tmp_path: Path) -> None:
    """With a certificate and key the bridge speaks HTTPS; a plain-HTTP client does not get in."""
    pair = self_signed_cert(tmp_path)
    if pair is None:
        pytest.skip("the openssl command is not available to make a test certificate")
    cert, key = pair
    run = start(certfile=cert, keyfile=key)
    assert run.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", run.port, context=context, timeout=10)
    assert post(run.port, "/v1/logs", logs_body(), conn=conn)[0] == 200
    conn.close()
    with pytest.raises((http.client.HTTPException, OSError)):
        post(run.port, "/v1/logs", logs_body())
    conn = http.client.HTTPSConnection("127.0.0.1", run.port, context=context, timeout=10)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()


def test_cli_bridge_serve_runs_until_sigterm(tmp_path: Path) -> None:
    """`membrane-otel bridge serve --port 0` announces its URL, takes OTLP with a token, exits 0 on SIGTERM."""
    ledger = tmp_path / "cli-ledger.jsonl"
    env = cli_env(
        MEMBRANE_BRIDGE_TOKEN="tok",
        MEMBRANE_BUS_URL="ws://127.0.0.1:9/api/ws",
        MEMBRANE_SPOOL_DIR=str(tmp_path / "spool"),
    )
    proc = subprocess.Popen(
        [*CLI, "bridge", "serve", "--port", "0", "--grpc-port", "0", "--ledger", str(ledger)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines: list[str] = []
        out = proc.stdout
        assert out is not None
        reader = threading.Thread(target=lambda: lines.extend(out), daemon=True)
        reader.start()
        announced = wait_for(
            lambda: next((ln for ln in lines if "listening on" in ln), None),
            timeout=20,
            what="the bridge's URL",
        )
        url = announced.split("listening on ", 1)[1].split()[0]
        port = int(url.rsplit(":", 1)[1])
        assert get(f"{url}/health")[0] == 200
        assert post(port, "/v1/logs", logs_body())[0] == 401
        assert post(port, "/v1/logs", logs_body(), PB, {"Authorization": "Bearer tok"})[0] == 200
        assert len(ledger.read_text().splitlines()) == 3
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


# --------------------------------------------------------------------------- bodies


def test_a_gzip_bomb_is_not_inflated_past_the_cap() -> None:
    """Decoding a 10 MB bomb with a 1 MiB cap raises BodyTooLarge having allocated about the cap only."""
    import tracemalloc

    from membrane_otel.bridge._body import BodyTooLarge, decode_content

    bomb = gzip.compress(b"\x00" * (10 * 1024 * 1024), compresslevel=9)
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge):
            decode_content(bomb, "gzip", 1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_concatenated_gzip_members_decode_as_one_body() -> None:
    """RFC 1952 allows several gzip members in a row; they decode to the concatenation."""
    from membrane_otel.bridge._body import decode_content

    assert decode_content(gzip.compress(b"abc") + gzip.compress(b"def"), "gzip", 100) == b"abcdef"


# --------------------------------------------------------------------------- one program, two modes

# What legitimately differs between two runs of one program: ids, times, durations.
_VOLATILE = frozenset(
    (
        "ts",
        "ts_unix",
        "first_ts",
        "last_ts",
        "timestamp",
        "duration_ms",
        "otel_trace_id",
        "otel_span_id",
        "otel_parent_span_id",
        "record_id",
        "seq",
        "prev_hash",
        "hash",
        "trace_id",
        "parent_id",
        "stimulus_id",
        "timestamp_ms",
    )
)


def _stable(obj: dict[str, Any]) -> str:
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {
            k: strip(v) if isinstance(v, dict) else v
            for k, v in d.items()
            if k not in _VOLATILE and not k.endswith(("record_id", "event_id"))
        }

    return json.dumps(strip(obj), sort_keys=True, default=str)


def test_the_example_agent_gives_the_same_lines_and_envelopes_embedded_and_through_the_bridge(
    start: Start, tmp_path: Path
) -> None:
    """examples/hrm_agent.py embedded, and exporting OTLP/HTTP to the bridge: equal ledger lines and envelopes."""
    from collections import Counter

    from membrane_otel.membrane._publish import build_publisher
    from tests._helpers import EXAMPLE, clean_env, read_ledger, run_instrumented

    results = {}
    for mode in ("embedded", "bridge"):
        work = tmp_path / mode
        work.mkdir()
        with BusProcess(record=work / "bus.jsonl") as proc:
            env = clean_env(work, MEMBRANE_TRACE="1", MEMBRANE_BUS_URL=proc.url)
            publisher = None
            if mode == "bridge":
                settings = load_settings({}, bus_url=proc.url, spool_dir=str(work / "bridge-spool"))
                publisher = build_publisher(settings)
                run = start(ledger=work / "bridge.jsonl", publisher=publisher)
                env.update(
                    OTEL_TRACES_EXPORTER="otlp",
                    OTEL_LOGS_EXPORTER="otlp",
                    OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                    OTEL_EXPORTER_OTLP_ENDPOINT=run.url,
                )
            done = run_instrumented(EXAMPLE, env)
            assert done.returncode == 0, done.stderr[-2000:]
            if publisher is not None:
                assert publisher.force_flush(10_000)
            ledger = work / ("bridge.jsonl" if mode == "bridge" else "ledger.jsonl")
            results[mode] = (read_ledger(ledger), read_record(work / "bus.jsonl"))
    (lines_a, envs_a), (lines_b, envs_b) = results["embedded"], results["bridge"]
    assert len(lines_a) > 10 and envs_a, "the example should produce spans, events and an error envelope"
    assert Counter(map(_stable, lines_b)) == Counter(map(_stable, lines_a))
    assert Counter(map(_stable, envs_b)) == Counter(map(_stable, envs_a))
