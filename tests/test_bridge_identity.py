"""Identity on ingest: a retry is recognised, a legitimate twin is kept; client fields stay in their lane;
secrets are redacted whoever the client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from membrane_otel.bridge import Bridge
from membrane_otel.bridge._otlp import decode_logs, decode_traces
from membrane_otel.bridge._seen import SeenIds
from membrane_otel.ledger._writer import Ledger
from tests._helpers import read_ledger

GH_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def request(*services: str, n: int = 1, body: str = "boom", attrs: dict[str, str] | None = None) -> bytes:
    """One record per service (n identical ones each, no timestamp: telemetrygen's shape)."""
    req = ExportLogsServiceRequest()
    for service in services:
        rl = req.resource_logs.add()
        kv = rl.resource.attributes.add(key="service.name")
        kv.value.string_value = service
        records = rl.scope_logs.add().log_records
        for _ in range(n):
            rec = records.add(severity_number=17, severity_text="ERROR")
            rec.body.string_value = body
            for key, value in (attrs or {}).items():
                rec.attributes.add(key=key).value.string_value = value
    return req.SerializeToString()


def lines(path: Path) -> list[dict[str, Any]]:
    return read_ledger(path)


def test_identical_records_from_two_services_are_two_records(tmp_path: Path) -> None:
    """Record ids cover the resource: the same line from a second service is not a duplicate."""
    bridge = Bridge(Ledger(tmp_path / "l.jsonl"))
    out = bridge.accept_logs(decode_logs(request("svc-a", "svc-b"), json_body=False))
    assert out.written == 2
    assert {ln["service"] for ln in lines(tmp_path / "l.jsonl")} == {"svc-a", "svc-b"}


def test_identical_records_in_one_request_stay_distinct_and_a_retry_is_recognised(tmp_path: Path) -> None:
    """100 identical records are 100 lines; the same request again writes nothing."""
    bridge = Bridge(Ledger(tmp_path / "l.jsonl"))
    body = request("svc", n=100)
    assert bridge.accept_logs(decode_logs(body, json_body=False)).written == 100
    again = bridge.accept_logs(decode_logs(body, json_body=False))
    assert again.written == 0 and again.duplicates == 100
    assert len({ln["record_id"] for ln in lines(tmp_path / "l.jsonl")}) == 100


def test_a_retry_after_70000_other_records_is_written_once(tmp_path: Path) -> None:
    """The memory of what was written is bounded by time and bytes, not by a count a busy minute passes."""
    bridge = Bridge(Ledger(tmp_path / "l.jsonl"), seen=SeenIds(tmp_path / "seen"))
    first = request("svc", body="the retried one")
    bridge.accept_logs(decode_logs(first, json_body=False))
    for i in range(7):
        assert (
            bridge.accept_logs(decode_logs(request(f"busy-{i}", n=10_000), json_body=False)).written == 10_000
        )
    assert bridge.accept_logs(decode_logs(first, json_body=False)).written == 0


def test_a_retry_after_a_restart_is_recognised(tmp_path: Path) -> None:
    """The seen ids survive the process: a new bridge (ledger tail scan off) still skips the retry."""
    body = request("svc", n=3)
    Bridge(Ledger(tmp_path / "l.jsonl"), seen=SeenIds(tmp_path / "seen")).accept_logs(
        decode_logs(body, json_body=False)
    )
    restarted = Bridge(Ledger(tmp_path / "l.jsonl", recent_scan_bytes=0), seen=SeenIds(tmp_path / "seen"))
    assert restarted.accept_logs(decode_logs(body, json_body=False)).written == 0
    assert len(lines(tmp_path / "l.jsonl")) == 3


def test_seen_ids_are_forgotten_by_age_and_by_bytes(tmp_path: Path) -> None:
    """Past the retention, or past max_bytes (oldest segment first), ids and their files go."""
    now = [1_000_000.0]
    seen = SeenIds(tmp_path / "seen", retention_s=600, segment_s=60, max_bytes=10_000, clock=lambda: now[0])
    seen.add(["lold"])
    now[0] += 700
    seen.add(["lnew"])
    assert "lold" not in seen and "lnew" in seen
    for i in range(20):
        now[0] += 60
        seen.add([f"l{i:04d}" + "x" * 1000])
    assert seen.status()["bytes"] <= 10_000 + 1100
    assert len(list((tmp_path / "seen").iterdir())) == seen.status()["segments"]


def test_client_attributes_never_overwrite_the_ledger_fields(tmp_path: Path) -> None:
    """message, level, service and record_id sent as attributes are kept as payload_<name>."""
    bridge = Bridge(Ledger(tmp_path / "l.jsonl"))
    attrs = {"message": "forged", "level": "DEBUG", "service": "forged-svc", "record_id": "forged-id"}
    bridge.accept_logs(decode_logs(request("svc", body="real", attrs=attrs), json_body=False))
    (line,) = lines(tmp_path / "l.jsonl")
    assert (line["message"], line["level"], line["service"]) == ("real", "ERROR", "svc")
    assert line["record_id"] != "forged-id"
    assert line["payload_message"] == "forged" and line["payload_level"] == "DEBUG"


def test_a_wire_record_id_is_honoured_only_from_an_authenticated_client(tmp_path: Path) -> None:
    """membrane.record_id picks the id for a trusted client; from anyone else it is dropped."""
    body = request("svc", attrs={"membrane.record_id": "lchosen0000000000000000"})
    bridge = Bridge(Ledger(tmp_path / "l.jsonl"))
    bridge.accept_logs(decode_logs(body, json_body=False), trusted=False)
    bridge.accept_logs(decode_logs(body, json_body=False), trusted=True)
    assert [ln["record_id"] == "lchosen0000000000000000" for ln in lines(tmp_path / "l.jsonl")] == [
        False,
        True,
    ]


def test_secrets_are_redacted_on_ingest_in_bodies_attributes_and_span_events(tmp_path: Path) -> None:
    """password=… and a GitHub token, from a client that never redacted, never reach the ledger."""
    bridge = Bridge(Ledger(tmp_path / "l.jsonl"))
    body = request(
        "svc", body=f"login failed password=hunter2 token {GH_TOKEN}", attrs={"note": f"t={GH_TOKEN}"}
    )
    bridge.accept_logs(decode_logs(body, json_body=False))
    traces = ExportTraceServiceRequest()
    span = (
        traces.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            name="op",
            trace_id=b"\x01" * 16,
            span_id=b"\x02" * 8,
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        )
    )
    span.attributes.add(key="password").value.string_value = "hunter2"
    event = span.events.add(name="exception", time_unix_nano=1)
    event.attributes.add(key="exception.message").value.string_value = "bad password=hunter2"
    bridge.accept_spans(decode_traces(traces.SerializeToString(), json_body=False))
    text = (tmp_path / "l.jsonl").read_text()
    assert "hunter2" not in text and GH_TOKEN not in text
    assert len(lines(tmp_path / "l.jsonl")) == 2
