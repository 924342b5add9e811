"""OTLP/gRPC on the real bridge process: the SDK's gRPC exporters land like HTTP; the token is checked;
/ready and /metrics tell what the bridge holds."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from membrane_otel.bridge import Bridge
from membrane_otel.bridge._ingest import Ingest
from membrane_otel.bridge._limits import Limits
from membrane_otel.bridge._otlp import parse_json
from membrane_otel.ledger._writer import Ledger
from tests._bridge_proc import TOKEN, BridgeProcess
from tests.test_bridge_otlp import sdk_logs, sdk_spans

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    with BridgeProcess(tmp_path_factory.mktemp("grpc"), "--no-bus") as proc:
        yield proc


def call(port: int, body: bytes, token: str | None = TOKEN) -> tuple[grpc.StatusCode, bytes]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(LOGS_EXPORT)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        try:
            return grpc.StatusCode.OK, export(body, metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return err.code(), b""


def test_the_sdk_grpc_exporters_land_in_the_ledger(bridge: BridgeProcess) -> None:
    """Spans and logs over OTLP/gRPC with the token are written, as over HTTP."""
    before = len(bridge.ledger_lines())
    headers = (("authorization", f"Bearer {TOKEN}"),)
    endpoint = f"127.0.0.1:{bridge.grpc_port}"
    spans = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)
    logs = OTLPLogExporter(endpoint=endpoint, insecure=True, headers=headers)
    try:
        assert spans.export(sdk_spans()) is SpanExportResult.SUCCESS
        assert logs.export(sdk_logs()) is LogRecordExportResult.SUCCESS
    finally:
        spans.shutdown()
        logs.shutdown()
    assert len(bridge.ledger_lines()) - before == 5


def test_grpc_without_the_token_is_unauthenticated(bridge: BridgeProcess) -> None:
    """No or wrong token: UNAUTHENTICATED (not retried by the Collector)."""
    body = encode_logs(sdk_logs()).SerializeToString()
    assert call(bridge.grpc_port, body, None)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert call(bridge.grpc_port, body, "wrong")[0] == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_answers_partial_success_and_invalid_argument_like_http(bridge: BridgeProcess) -> None:
    """One bad record: OK with partial_success; garbage: INVALID_ARGUMENT."""
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=5).body.string_value = "grpc fine"
    records.add(time_unix_nano=6, span_id=b"\x01" * 3).body.string_value = "grpc bad id"
    code, answer = call(bridge.grpc_port, req.SerializeToString())
    assert code == grpc.StatusCode.OK
    assert ExportLogsServiceResponse.FromString(answer).partial_success.rejected_log_records == 1
    assert call(bridge.grpc_port, b"\xff\xff\xff")[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_and_ready_are_served(bridge: BridgeProcess) -> None:
    """/metrics is Prometheus text with the bridge's counters; /ready reports the ledger and the bus."""
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge.port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "# TYPE membrane_bridge_written_total counter" in text
    assert "membrane_bridge_inflight " in text
    with urllib.request.urlopen(f"http://127.0.0.1:{bridge.port}/ready", timeout=10) as resp:
        detail = json.loads(resp.read())
    assert detail["ready"] is True and detail["ledger"]["ok"] is True


# --------------------------------------------------------------------------- property-based


def _any_value(depth: int) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.text(max_size=20).map(lambda s: {"stringValue": s}),
        st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda i: {"intValue": str(i)}),
        st.booleans().map(lambda b: {"boolValue": b}),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: {"doubleValue": f}),
    )
    if depth <= 0:
        return scalars
    inner = _any_value(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3).map(lambda vs: {"arrayValue": {"values": vs}}),
        st.dictionaries(st.text(max_size=5), inner, max_size=3).map(
            lambda d: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in d.items()]}}
        ),
    )


_ids = st.one_of(st.none(), st.text(alphabet="0123456789abcdefxyz", min_size=0, max_size=34))
_record = st.fixed_dictionaries(
    {
        "timeUnixNano": st.integers(min_value=0, max_value=2**64 - 1).map(str),
        "severityNumber": st.integers(min_value=0, max_value=24),
        "body": _any_value(3),
        "attributes": st.lists(
            st.fixed_dictionaries({"key": st.text(max_size=10), "value": _any_value(3)}), max_size=4
        ),
    },
    optional={"traceId": _ids, "spanId": _ids, "eventName": st.text(max_size=10)},
)


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Ingest:
    path: Path = tmp_path_factory.mktemp("prop") / "l.jsonl"
    return Ingest(Bridge(Ledger(path)), Limits(max_depth=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_record, max_size=5), mangle=st.integers(min_value=0, max_value=3))
def test_no_otlp_body_yields_a_500(ingest: Ingest, records: list[dict[str, object]], mangle: int) -> None:
    """Arbitrary OTLP/JSON and protobuf (valid, truncated, bit-flipped) get 200, 400 or 413: never 500."""
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    raw = json.dumps(body).encode()
    answer = ingest.export("logs", raw, encoding=None, as_json=True, trusted=False)
    assert answer.status in (200, 400, 413), answer.message
    if answer.status != 200:
        return
    req, _ = parse_json(raw, ExportLogsServiceRequest(), "logs")
    pb = req.SerializeToString()
    if mangle == 1:
        pb = pb[: len(pb) // 2]
    elif mangle == 2 and pb:
        pb = bytes([pb[0] ^ 0xFF]) + pb[1:]
    elif mangle == 3:
        pb = pb.replace(b"a", b"\xff")
    answer = ingest.export("logs", pb, encoding=None, as_json=False, trusted=False)
    assert answer.status in (200, 400, 413), answer.message
