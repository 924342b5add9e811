"""The bridge's documented memory bound (README, "The bridge"), measured on the real process."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests._bridge_proc import BridgeProcess, MiB, post

pytestmark = pytest.mark.timeout(180)

MAX_BODY = 4 * MiB
MAX_RECORDS = 4000
INFLIGHT = 2
READ_BUDGET = 16 * MiB
CONNECTIONS = 64
RECORD_COST = 4 * 1024  # R in the README's formula
CONNECTION_COST = 16 * 1024  # C


def bound() -> int:
    return READ_BUDGET + INFLIGHT * (6 * MAX_BODY + MAX_RECORDS * RECORD_COST) + CONNECTIONS * CONNECTION_COST


def big_body(seed: int) -> bytes:
    """Just under both limits: MAX_RECORDS - 10 records filling most of MAX_BODY."""
    req = ExportLogsServiceRequest()
    records = req.resource_logs.add().scope_logs.add().log_records
    n = MAX_RECORDS - 10
    text = "y" * (MAX_BODY // n - 120)
    for i in range(n):
        rec = records.add(time_unix_nano=1_700_000_000_000_000_000 + seed * 100_000 + i, severity_number=17)
        rec.body.string_value = f"{seed}-{i} {text}"
        rec.attributes.add(key="k").value.string_value = f"v{i}"
    body = req.SerializeToString()
    assert len(body) < MAX_BODY
    return body


def test_peak_memory_stays_within_the_documented_formula(tmp_path: Path) -> None:
    """Concurrent maximal requests plus a full house of connections: RSS growth ≤ the formula."""
    args = [
        "--no-bus",
        "--max-body", str(MAX_BODY),
        "--max-records", str(MAX_RECORDS),
        "--max-inflight", str(INFLIGHT),
        "--read-budget", str(READ_BUDGET),
        "--max-connections", str(CONNECTIONS),
    ]  # fmt: skip
    bodies = [big_body(i) for i in range(6)]
    with BridgeProcess(tmp_path, *args) as bridge:
        assert post(bridge.port, "/v1/logs", big_body(99))[0] == 200  # warm: imports, first allocations
        base = bridge.rss()
        peak = base
        statuses: list[int] = []
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, bridge.rss())
                time.sleep(0.02)

        def send(body: bytes) -> None:
            statuses.append(post(bridge.port, "/v1/logs", body, timeout=60)[0])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        idle = [socket.create_connection(("127.0.0.1", bridge.port)) for _ in range(CONNECTIONS - 8)]
        try:
            senders = [threading.Thread(target=send, args=(b,)) for b in bodies]
            for t in senders:
                t.start()
            for t in senders:
                t.join(120)
        finally:
            done.set()
            sampler.join(5)
            for s in idle:
                s.close()
        growth = peak - base
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 2, statuses
    assert growth <= bound(), f"RSS grew {growth / MiB:.0f} MiB, the formula allows {bound() / MiB:.0f} MiB"
