"""No secret leaves: plant a secret on each path out and search every output for it.

The user's path is the issue's own example: a FastAPI app under the real
``opentelemetry-instrument``, called with ``?token=sk_live_…``, its handler logging the token
and raising with it, ``setup_l2_logger`` and a narrative saying it too. Every exit is then
searched: the ledger file, the spool directory, stdout and stderr (the console tree, the
fallback handler, the L2 console), the envelopes a real reference bus (``membrane-otel bus
serve``) received, and the raw OTLP/HTTP bodies a local receiver got from the ``otlp``
exporters. ``membrane-otel emit`` is searched the same way.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._bus_helpers import BusProcess, read_record
from tests._helpers import INSTRUMENT, clean_env, read_ledger, wait_for

pytest.importorskip("fastapi", reason="fastapi (dev extra: pip install -e '.[dev]') runs the issue's example")
pytest.importorskip(
    "opentelemetry.instrumentation.fastapi", reason="opentelemetry-instrumentation-fastapi (dev extra)"
)

# Random per run, so nothing but this run's outputs can hold it; the type hint may stay.
BODY = "Zq" + os.urandom(12).hex()
SECRET = "sk_live_" + BODY
PASSWORD = "Gh" + os.urandom(6).hex() + "!9"


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A local OTLP/HTTP receiver that keeps the raw request bodies (protobuf keeps strings as UTF-8)."""

    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    bodies: list[tuple[str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


APP = textwrap.dedent(
    """
    import logging, sys
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    import membrane_otel
    from membrane_otel import narrative, setup_l2_logger

    SECRET, PASSWORD = sys.argv[1], sys.argv[2]
    l2 = setup_l2_logger("shop", __file__)
    app = FastAPI()

    @app.get("/pay")
    def pay(token: str) -> dict:
        logging.getLogger("shop.pay").error("payment failed for token=%s", token)
        try:
            raise ConnectionError(f"gateway refused api_key={token} password={PASSWORD}")
        except ConnectionError:
            l2.exception("charge failed: token=%s", token)
        narrative.narrate("shop", "charge", "pay", f"retry with token={token}", "gateway", {"api_key": token})
        membrane_otel.emit_event("payment_failed", {"password": PASSWORD, "note": f"token={token}"})
        raise RuntimeError(f"card declined, Authorization: Bearer {token}")

    client = TestClient(app, raise_server_exceptions=False)
    print("status", client.get("/pay", params={"token": SECRET}).status_code)
    membrane_otel.force_flush()
    """
)


def _everything(
    tmp: Path, proc: subprocess.CompletedProcess[str], extra: list[tuple[str, bytes]]
) -> dict[str, bytes]:
    """Every output of the run: files under ``tmp``, the streams, and ``extra`` (sockets)."""
    outputs = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}
    for path in tmp.rglob("*"):
        if path.is_file() and path.name != "app.py":
            outputs[str(path.relative_to(tmp))] = path.read_bytes()
    for i, (name, body) in enumerate(extra):
        outputs[f"{name}#{i}"] = body
    return outputs


def _leaks(outputs: dict[str, bytes]) -> dict[str, str]:
    """Each output holding a secret, with the text around its first one (what put it there)."""
    found = {}
    for name, data in outputs.items():
        for secret in (BODY.encode(), PASSWORD.encode()):
            i = data.find(secret)
            if i >= 0:
                found[name] = data[max(0, i - 300) : i + 60].decode(errors="replace")
                break
    return found


def run_leaky_app(
    tmp_path: Path, app_text: str, service: str, endpoint: str, expect: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``app_text`` under the real ``opentelemetry-instrument`` with every exit on (ledger, console
    tree, a real bus recording, OTLP/HTTP to ``endpoint``), given the secrets as arguments; returns
    once the app printed ``expect`` and the bus recorded something."""
    app = tmp_path / "app.py"
    app.write_text(app_text)
    with BusProcess(record=tmp_path / "bus-record.jsonl") as bus:
        settings = {
            "MEMBRANE_BUS_URL": bus.url,
            "MEMBRANE_TRACE": "1",
            "MEMBRANE_THROTTLE": "0",
            "OTEL_SERVICE_NAME": service,
            "OTEL_TRACES_EXPORTER": "ledger,console,otlp",
            "OTEL_LOGS_EXPORTER": "ledger,membrane,otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_COMPRESSION": "none",
        }
        env = clean_env(tmp_path, **(settings | extra_env))
        proc = subprocess.run(
            [str(INSTRUMENT), sys.executable, str(app), SECRET, PASSWORD],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert expect in proc.stdout, proc.stderr[-3000:]
        wait_for(lambda: read_record(tmp_path / "bus-record.jsonl"), timeout=15)
    return proc


@pytest.mark.timeout(120)
def test_a_fastapi_app_under_opentelemetry_instrument_leaks_on_no_exit(
    tmp_path: Path, otlp_receiver: tuple[str, list[tuple[str, bytes]]]
) -> None:
    """Ledger, spool, console tree, stderr, bus envelopes and OTLP bodies: the secret is nowhere."""
    if not INSTRUMENT.exists():
        pytest.skip("opentelemetry-instrument is missing: pip install -e '.[dev]'")
    endpoint, bodies = otlp_receiver
    proc = run_leaky_app(tmp_path, APP, "shop", endpoint, expect="status 500")
    wait_for(lambda: any(p.endswith("/v1/traces") for p, _ in bodies), timeout=10)
    wait_for(lambda: any(p.endswith("/v1/logs") for p, _ in bodies), timeout=10)

    outputs = _everything(tmp_path, proc, bodies)
    assert not _leaks(outputs), _leaks(outputs)

    # The secret did travel every path, redacted: the exits were exercised, not skipped.
    lines = read_ledger(tmp_path / "ledger.jsonl")
    spans = [ln for ln in lines if ln["event"] == "span"]
    urls = [str(ln["metadata"].get("url.query") or ln["metadata"].get("http.url") or "") for ln in spans]
    assert any("token=sk_live_<REDACTED>" in u or "token=<REDACTED>" in u for u in urls), urls
    assert any(ln["metadata"].get("membrane.redacted_count") for ln in spans)
    assert any(ln["event"] == "payment_failed" for ln in lines)
    assert any(ln["event"].startswith("narrative") for ln in lines), {ln["event"] for ln in lines}
    assert "charge failed" in proc.stderr and "<REDACTED>" in proc.stderr
    assert b"<REDACTED>" in b"".join(body for _, body in bodies)


def test_emit_writes_no_secret_to_the_ledger(tmp_path: Path) -> None:
    """``membrane-otel emit -p api_key=…`` writes the key, not the secret (nor to stdout with --echo)."""
    ledger = tmp_path / "ledger.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "membrane_otel.cli",
            "emit",
            "deploy",
            "-p",
            f"api_key={SECRET}",
            "-p",
            f"note=password is {PASSWORD}",
            "--payload",
            f'{{"db": "postgres://app:{PASSWORD}@db:5432/x"}}',
            "--session-id",
            f"s1 token={SECRET}",
            "--ledger",
            str(ledger),
            "--echo",
        ],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    outputs = _everything(tmp_path, proc, [])
    assert not _leaks(outputs), outputs
    line = read_ledger(ledger)[0]
    assert line["api_key"] == "<REDACTED>" and line["db"] == "postgres://<REDACTED>:<REDACTED>@db:5432/x"


def test_emit_names_a_bad_redaction_pattern(tmp_path: Path) -> None:
    """A bad MEMBRANE_REDACT_PATTERNS is one clear line, and nothing is written."""
    ledger = tmp_path / "ledger.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "membrane_otel.cli", "emit", "x", "-p", "a=b", "--ledger", str(ledger)],
        env=clean_env(tmp_path, MEMBRANE_REDACT_PATTERNS='["(unclosed"]'),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "MEMBRANE_REDACT_PATTERNS" in proc.stderr and "(unclosed" in proc.stderr
    assert not ledger.exists()
