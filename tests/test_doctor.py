"""``membrane-otel doctor``: real processes and sockets, diagnosed from a real CLI run."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from membrane_otel.ledger._writer import ledger_for
from membrane_otel.membrane._spool import Spool
from tests._bus_helpers import CLI, BusProcess, cli_env, envelope, free_port, wait_for


def doctor(tmp: Path, *args: str, **env: str) -> tuple[int, str, dict[str, dict[str, Any]]]:
    """Run doctor twice (text and --json) in a clean env; the exit code, the text and checks by name."""
    defaults = {
        "MEMBRANE_LEDGER_PATH": str(tmp / "ledger.jsonl"),
        "MEMBRANE_SPOOL_DIR": str(tmp / "spool"),
        "OTEL_LOGS_EXPORTER": "ledger",
    }
    full = cli_env(**{**defaults, **env})
    text = subprocess.run([*CLI, "doctor", *args], env=full, capture_output=True, text=True, timeout=30)
    assert "Traceback" not in text.stderr, text.stderr
    js = subprocess.run(
        [*CLI, "doctor", "--json", *args], env=full, capture_output=True, text=True, timeout=30
    )
    doc = json.loads(js.stdout)
    assert js.returncode == text.returncode
    assert doc["ok"] is (text.returncode == 0)
    return text.returncode, text.stdout, {c["name"]: c for c in doc["checks"]}


def test_a_clean_embedded_setup_is_all_good(tmp_path: Path) -> None:
    """Ledger-only embedded mode: nothing to probe, ledger and spool fine, exit 0."""
    code, out, checks = doctor(tmp_path)
    assert code == 0, out
    assert checks["settings"]["status"] == "OK"
    assert checks["exporters"]["status"] == "OK" and "logs: ledger" in checks["exporters"]["detail"]
    assert checks["collector"]["status"] == "SKIP"
    assert checks["bus"]["status"] == "SKIP"
    assert checks["ledger"]["status"] == "OK"
    assert out.strip().endswith("all good")


def test_doctor_diagnoses_a_stopped_bus(tmp_path: Path) -> None:
    """With the reference bus up the bus check is OK; once it is killed, FAIL with the command to start it."""
    bus = BusProcess().start()
    url = bus.url
    try:
        code, out, checks = doctor(tmp_path, MEMBRANE_BUS_URL=url, OTEL_LOGS_EXPORTER="ledger,membrane")
        assert checks["bus"]["status"] == "OK", out
        assert code == 0, out
    finally:
        bus.kill()
    code, out, checks = doctor(tmp_path, MEMBRANE_BUS_URL=url, OTEL_LOGS_EXPORTER="ledger,membrane")
    assert code == 1
    assert checks["bus"]["status"] == "FAIL"
    assert url in checks["bus"]["detail"] and "unreachable" in checks["bus"]["detail"]
    assert f"membrane-otel bus serve --port {bus.port}" in checks["bus"]["fix"]
    assert "FAIL  bus" in out and "→ start a bus" in out


def test_doctor_diagnoses_a_wrong_collector_endpoint(tmp_path: Path) -> None:
    """An OTLP endpoint nobody listens on is a FAIL naming the endpoint; a listening one is OK."""
    dead = free_port()
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    code, out, checks = doctor(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{dead}", **env)
    assert code == 1, out
    assert checks["collector"]["status"] == "FAIL"
    assert f"127.0.0.1:{dead}" in checks["collector"]["detail"]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in checks["collector"]["fix"]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        code, out, checks = doctor(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}", **env)
    assert checks["collector"]["status"] == "OK", out


class _Health(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def unhealthy() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health"
    server.shutdown()
    server.server_close()


def test_a_collector_whose_health_check_fails_is_reported(tmp_path: Path, unhealthy: str) -> None:
    """The Collector port answers but its health_check URL says 503: FAIL, pointing at the health check."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        code, _, checks = doctor(
            tmp_path,
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            MEMBRANE_COLLECTOR_HEALTH_URL=unhealthy,
        )
    assert code == 1
    assert checks["collector"]["status"] == "FAIL" and "HTTP 503" in checks["collector"]["detail"]


def test_bridge_ready_then_gone(tmp_path: Path) -> None:
    """A running bridge answers /ready (OK); once stopped, the configured bridge is a FAIL."""
    port = free_port()
    env = cli_env(MEMBRANE_LEDGER_PATH=str(tmp_path / "bridge-ledger.jsonl"))
    proc = subprocess.Popen(
        [*CLI, "bridge", "serve", "--port", str(port), "--no-bus"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(port), timeout=20, what="bridge listening")
        code, out, checks = doctor(tmp_path, MEMBRANE_BRIDGE_URL=url)
        assert checks["bridge"]["status"] == "OK", out
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)
    code, out, checks = doctor(tmp_path, MEMBRANE_BRIDGE_URL=url)
    assert code == 1 and checks["bridge"]["status"] == "FAIL"
    assert "membrane-otel bridge serve" in checks["bridge"]["fix"]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def test_a_bad_setting_is_reported_not_a_traceback(tmp_path: Path) -> None:
    """MEMBRANE_QUEUE_SIZE=lots is one FAIL line naming the variable; the other checks still run."""
    code, out, checks = doctor(tmp_path, MEMBRANE_QUEUE_SIZE="lots")
    assert code == 1
    assert checks["settings"]["status"] == "FAIL"
    assert "MEMBRANE_QUEUE_SIZE" in checks["settings"]["detail"]
    assert "MEMBRANE_QUEUE_SIZE" in checks["settings"]["fix"]
    assert "ledger" in checks


def test_an_unknown_exporter_name_fails(tmp_path: Path) -> None:
    """A typo in OTEL_LOGS_EXPORTER is named with what is installed."""
    code, _, checks = doctor(tmp_path, OTEL_LOGS_EXPORTER="ledgr")
    assert code == 1
    assert checks["exporters"]["status"] == "FAIL"
    assert "'ledgr'" in checks["exporters"]["detail"] and "ledger" in checks["exporters"]["detail"]


def test_a_tampered_ledger_fails_verification(tmp_path: Path) -> None:
    """A ledger whose chain verifies is OK with its line count; an edited line is a FAIL naming where."""
    path = tmp_path / "ledger.jsonl"
    ledger_for(path).append_many([{"event": "task_started", "n": i} for i in range(5)])
    code, _, checks = doctor(tmp_path)
    assert code == 0 and checks["ledger"]["status"] == "OK"
    assert "5 lines" in checks["ledger"]["detail"]
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"n":2', '"n":7')
    path.write_text("\n".join(lines) + "\n")
    code, _, checks = doctor(tmp_path)
    assert code == 1 and checks["ledger"]["status"] == "FAIL"
    assert "ledger.jsonl:3" in checks["ledger"]["detail"]


def test_an_unwritable_ledger_location_fails(tmp_path: Path) -> None:
    """A ledger path under a read-only directory is a FAIL."""
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as root: permissions do not bind
            pytest.skip("permissions are not enforced for this user (root)")
        code, _, checks = doctor(tmp_path, MEMBRANE_LEDGER_PATH=str(locked / "sub" / "ledger.jsonl"))
    finally:
        locked.chmod(0o700)
    assert code == 1 and checks["ledger"]["status"] == "FAIL"


def test_waiting_envelopes_in_the_spool_are_a_warning(tmp_path: Path) -> None:
    """Spooled envelopes are WARN (they will replay), with how to flush them; exit stays 0."""
    Spool(tmp_path / "spool", fsync=False).write([envelope(i) for i in range(3)])
    code, out, checks = doctor(tmp_path)
    assert code == 0, out
    assert checks["spool"]["status"] == "WARN"
    assert "3 envelopes waiting" in checks["spool"]["detail"]
    assert "spool flush" in checks["spool"]["fix"]


def test_probes_are_bounded_in_time(tmp_path: Path) -> None:
    """A bus address that never answers the handshake costs at most the probe timeout."""
    with socket.socket() as closed:  # a port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    started = time.monotonic()
    doctor(
        tmp_path, "--timeout", "0.5",
        MEMBRANE_BUS_URL=f"ws://127.0.0.1:{closed_port}/api/ws", OTEL_LOGS_EXPORTER="ledger,membrane",
    )  # fmt: skip
    baseline = time.monotonic() - started  # interpreter start-up and the other checks, on this machine now
    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks WebSocket
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        started = time.monotonic()
        code, _, checks = doctor(
            tmp_path, "--timeout", "0.5",
            MEMBRANE_BUS_URL=f"ws://127.0.0.1:{port}/api/ws", OTEL_LOGS_EXPORTER="ledger,membrane",
        )  # fmt: skip
    assert code == 1 and checks["bus"]["status"] == "FAIL"
    # Two runs, each probe bounded by 0.5 s: well under the ~20 s an unbounded handshake wait costs,
    # judged against the same runs with an instantly refused port, so a loaded machine does not fail it.
    assert time.monotonic() - started < baseline + 8
