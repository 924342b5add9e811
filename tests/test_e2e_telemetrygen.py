"""A client nobody here wrote: the Collector project's telemetrygen, through the real Collector and
straight into the bridge's gRPC port, with exact counts; and gateway.yaml over two bridges."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests import _otel_binaries as ob
from tests._bridge_proc import TOKEN, BridgeProcess
from tests._bus_helpers import wait_for

TELEMETRYGEN = ob.ROOT / ".tools" / "telemetrygen"
BODY = "payment failed: card declined"

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not TELEMETRYGEN.exists(),
        reason="needs telemetrygen: install Go and run `make telemetrygen` (tools/build_telemetrygen.sh)",
    ),
]


def telemetrygen(signal: str, endpoint: str, *args: str, token: str | None = TOKEN) -> None:
    argv = [str(TELEMETRYGEN), signal, "--otlp-endpoint", endpoint, "--otlp-insecure", "--rate", "0", *args]
    if token:
        argv += ["--otlp-header", f'authorization="Bearer {token}"']
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def send_errors_and_traces(endpoint: str, service: str, token: str | None = TOKEN) -> None:
    """5,000 error logs with one identical body (telemetrygen's records differ only by time), 1,000 traces."""
    telemetrygen(
        "logs", endpoint, "--logs", "5000", "--body", BODY, "--severity-text", "ERROR",
        "--severity-number", "17", "--service", service, token=token,
    )  # fmt: skip
    telemetrygen(
        "traces", endpoint, "--traces", "1000", "--child-spans", "1", "--service", service, token=token
    )


def counts(bridge: BridgeProcess) -> Counter[str]:
    return Counter(ln["event"] for ln in bridge.ledger_lines())


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[BridgeProcess]:
    with BridgeProcess(tmp_path / "bridge", "--no-bus") as proc:
        yield proc


def test_telemetrygen_straight_into_the_bridge_grpc_port_counts_exactly(bridge: BridgeProcess) -> None:
    """5,000 identical-body error logs and 1,000 traces (2,000 spans) over OTLP/gRPC: every one written once."""
    send_errors_and_traces(f"127.0.0.1:{bridge.grpc_port}", "tg-direct")
    got = counts(bridge)
    assert (got["script_error"], got["span"]) == (5000, 2000), got
    assert len({ln["record_id"] for ln in bridge.ledger_lines()}) == 7000


@pytest.mark.skipif(not ob.OTELCOL.exists(), reason=ob.COLLECTOR_MISSING)
def test_telemetrygen_through_the_real_collector_counts_exactly(
    bridge: BridgeProcess, tmp_path: Path
) -> None:
    """The same load through otelcol.yaml (batching, redaction, persistent queue) into the bridge: exact."""
    with ob.collector(tmp_path, bridge_url=f"http://127.0.0.1:{bridge.port}", bridge_token=TOKEN) as (
        _,
        ports,
    ):
        send_errors_and_traces(ports.grpc_endpoint, "tg-collector", token=None)
        wait_for(lambda: sum(counts(bridge).values()) >= 7000, timeout=60, what="7000 ledger lines")
        time.sleep(1)  # anything extra (a double) would arrive now
    got = counts(bridge)
    assert (got["script_error"], got["span"]) == (5000, 2000), got


@pytest.mark.skipif(not ob.OTELCOL.exists(), reason=ob.COLLECTOR_MISSING)
def test_gateway_straight_to_two_bridges_and_a_kill_9_loses_nothing(tmp_path: Path) -> None:
    """gateway.yaml → 2 bridges over gRPC: each fingerprint on one bridge, the union exact, a bridge
    killed with SIGKILL mid-stream and restarted on its port loses and doubles nothing."""
    with ExitStack() as stack:
        bridges = [stack.enter_context(BridgeProcess(tmp_path / f"b{i}", "--no-bus")) for i in range(2)]
        backends = [f"127.0.0.1:{b.grpc_port}" for b in bridges]
        _, gateway = stack.enter_context(
            ob.collector(tmp_path, config=ob.GATEWAY_CONFIG, backends=backends, bridge_token=TOKEN, name="gw")
        )
        fingerprints = [f"fp{i:02d}" for i in range(8)]
        for fp in fingerprints[:4]:
            telemetrygen(
                "logs", gateway.grpc_endpoint, "--logs", "500", "--body", BODY, "--severity-text", "ERROR", "--severity-number", "17",
                "--service", "tg-gw", "--telemetry-attributes", f'membrane.fingerprint="{fp}"', token=None,
            )  # fmt: skip
        # The ring places fingerprints by the backends' (random) ports, so the first four may all
        # land on one bridge: the victim is whichever bridge writes first.
        wait_for(lambda: any(b.ledger_lines() for b in bridges), timeout=60, what="a bridge to write")
        victim, other = (bridges[0], bridges[1]) if bridges[0].ledger_lines() else (bridges[1], bridges[0])
        victim.kill()
        for fp in fingerprints[4:]:
            telemetrygen(
                "logs", gateway.grpc_endpoint, "--logs", "500", "--body", BODY, "--severity-text", "ERROR", "--severity-number", "17",
                "--service", "tg-gw", "--telemetry-attributes", f'membrane.fingerprint="{fp}"', token=None,
            )  # fmt: skip
        # Same ledger, same state directory, same gRPC port (the later flag wins): the
        # gateway's queue drains into it.
        restarted = BridgeProcess(victim.tmp, "--no-bus", "--grpc-port", str(victim.grpc_port))
        stack.enter_context(restarted)
        total = lambda: sum(len(b.ledger_lines()) for b in (restarted, other))  # noqa: E731
        wait_for(lambda: total() >= 4000, timeout=120, what="4000 lines across both bridges")
        time.sleep(2)
        per_bridge = [
            Counter(ln.get("membrane.fingerprint") for ln in b.ledger_lines()) for b in (restarted, other)
        ]
    union = per_bridge[0] + per_bridge[1]
    assert union == Counter(dict.fromkeys(fingerprints, 500)), union
    for fp in fingerprints:
        assert sum(1 for c in per_bridge if c[fp]) == 1, f"{fp} split across bridges"
