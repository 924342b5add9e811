"""The reference bus as a real process: acks, error frames, broadcasts, health, token, TLS, tail."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from membrane_otel.cli.bus import _pretty
from membrane_otel.membrane._bus import BusClient, BusRefused, WsTransport
from membrane_otel.membrane._spool import Spool
from tests._bus_helpers import (
    CLI,
    BusProcess,
    Subscriber,
    cli_env,
    envelope,
    ids,
    read_record,
    self_signed_cert,
    wait_for,
)


def _ask(ws: ClientConnection, frame: str) -> dict[str, Any]:
    ws.send(frame)
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    return reply


def test_health_answers_200_json() -> None:
    """GET /health is 200 with a JSON body saying ok."""
    with BusProcess() as bus:
        with urllib.request.urlopen(f"http://127.0.0.1:{bus.port}/health", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            body = json.loads(resp.read())
    assert body["status"] == "ok"


def test_unknown_path_is_404() -> None:
    """Anything but /health and /api/ws is a 404."""
    with BusProcess() as bus, pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{bus.port}/nope", timeout=5)
    err.value.close()
    assert err.value.code == 404


def test_object_and_array_frames_are_acked_with_their_ids() -> None:
    """One envelope or a batch per frame; the ack lists the accepted stimulus ids."""
    with BusProcess() as bus, connect(bus.url) as ws:
        assert _ask(ws, json.dumps(envelope(1))) == {"type": "ack", "ids": ["s-000001"], "rejected": []}
        batch = [envelope(2), {"type": "membrane.inject", "metadata": {}}, envelope(3)]
        reply = _ask(ws, json.dumps(batch))
    assert reply["ids"] == ["s-000002", "s-000003"]
    assert reply["rejected"] == [{"index": 1, "id": None, "error": 'missing "metadata.stimulus_id"'}]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("not json {", "frame is not JSON"),
        ("42", "frame must be a JSON object or an array of objects, got int"),
        ('{"content": "x"}', 'missing "type"'),
        ('{"type": "membrane.nope"}', "unsupported type 'membrane.nope'"),
        ('{"type": "membrane.inject", "metadata": {}}', 'missing "metadata.stimulus_id"'),
        ("[]", "empty batch"),
        ("[" * 5000 + "]" * 5000, "frame is not JSON the bus reads: nested too deep"),  # was close 1011
    ],
)
def test_garbage_gets_an_error_frame_and_harms_no_one(frame: str, error: str) -> None:
    """A bad frame is answered with an error; its sender stays connected, others keep receiving."""
    with BusProcess() as bus, Subscriber(bus.url) as sub, connect(bus.url) as bad, connect(bus.url) as good:
        reply = _ask(bad, frame)
        assert reply["type"] == "error" and reply["error"].startswith(error)
        assert _ask(good, json.dumps(envelope(1)))["type"] == "ack"
        assert _ask(bad, json.dumps(envelope(2)))["type"] == "ack"  # still open
        got = sub.wait_for_count(2)
    assert ids(got) == ["s-000001", "s-000002"]


def test_subscribing_by_frame_works_like_the_query() -> None:
    """{"type": "subscribe"} makes a connection a subscriber, as ?subscribe=1 does."""
    with BusProcess() as bus, Subscriber(bus.url, via_frame=True) as sub, connect(bus.url) as pub:
        _ask(pub, json.dumps([envelope(1), envelope(2)]))
        assert ids(sub.wait_for_count(2)) == ["s-000001", "s-000002"]


def test_record_file_holds_every_accepted_envelope(tmp_path: Path) -> None:
    """--record appends each accepted envelope as one JSON line, rejected ones not."""
    record = tmp_path / "bus.jsonl"
    with BusProcess(record=record) as bus, connect(bus.url) as ws:
        _ask(ws, json.dumps([envelope(1), {"type": "x"}, envelope(2)]))
    assert ids(read_record(record)) == ["s-000001", "s-000002"]


def test_token_required_means_401_without_it() -> None:
    """With --token the handshake is 401 without or with a wrong bearer token, open with it."""
    with BusProcess(token="sekrit") as bus:
        for headers in (None, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as err:
                connect(bus.url, additional_headers=headers, open_timeout=5)
            assert err.value.response.status_code == 401
        with connect(bus.url, additional_headers={"Authorization": "Bearer sekrit"}) as ws:
            assert _ask(ws, json.dumps(envelope(1)))["type"] == "ack"
        # The scheme is case-insensitive (RFC 9110), as on the bridge: one check for both.
        for scheme in ("bearer", "BEARER"):
            with connect(bus.url, additional_headers={"Authorization": f"{scheme} sekrit"}) as ws:
                assert _ask(ws, json.dumps(envelope(2)))["type"] == "ack"
        for bad in ("Basic sekrit", "Bearer sekrit2", "sekrit", "Bearer"):
            with pytest.raises(InvalidStatus) as err:
                connect(bus.url, additional_headers={"Authorization": bad}, open_timeout=5)
            assert err.value.response.status_code == 401
        with urllib.request.urlopen(f"http://127.0.0.1:{bus.port}/health", timeout=5) as resp:
            assert resp.status == 200  # health stays open for probes


def test_client_presents_its_token(tmp_path: Path) -> None:
    """A BusClient with the right token delivers; the transport reports 401 as a refusal."""
    with BusProcess(token="sekrit") as bus, Subscriber(bus.url, token="sekrit") as sub:
        with pytest.raises(BusRefused) as err:
            WsTransport(bus.url, token="wrong").send([envelope(0)], 5.0)
        assert err.value.status == 401
        client = BusClient(bus.url, Spool(tmp_path), token="sekrit", register_atexit=False)
        client.publish(envelope(1))
        assert client.force_flush(5000)
        client.shutdown()
        assert ids(sub.wait_for_count(1)) == ["s-000001"]


def test_wss_with_a_verified_certificate(tmp_path: Path) -> None:
    """Over wss:// the client verifies the bus certificate: it delivers with the CA, refuses without."""
    pair = self_signed_cert(tmp_path)
    if pair is None:
        pytest.skip("the openssl CLI is not available to make a test certificate")
    cert, key = pair
    with BusProcess(certfile=cert, keyfile=key, record=tmp_path / "rec.jsonl") as bus:
        assert bus.url.startswith("wss://127.0.0.1:")
        with pytest.raises(BusRefused, match="TLS"):
            WsTransport(bus.url).send([envelope(0)], 5.0)
        ack = WsTransport(bus.url, ssl_ca=str(cert)).send([envelope(1)], 5.0)
        assert ack.ids == {"s-000001"}
    assert ids(read_record(tmp_path / "rec.jsonl")) == ["s-000001"]


def test_tail_prints_one_json_envelope_per_line_when_piped() -> None:
    """`bus tail` piped: each broadcast envelope is one JSON line on stdout."""
    with BusProcess() as bus:
        tail = subprocess.Popen(
            [*CLI, "bus", "tail", "--count", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(MEMBRANE_BUS_URL=bus.url),
        )
        try:
            health = f"http://127.0.0.1:{bus.port}/health"
            wait_for(lambda: json.loads(urllib.request.urlopen(health, timeout=5).read())["subscribers"] == 1)
            with connect(bus.url) as ws:
                _ask(ws, json.dumps([envelope(1), envelope(2)]))
            out, _ = tail.communicate(timeout=15)
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()
    assert [json.loads(line) for line in out.splitlines()] == [envelope(1), envelope(2)]


def test_pretty_line_shows_time_severity_channel_content() -> None:
    """The terminal form is one readable line: time, severity, channel, content, source."""
    env = envelope(3, content="Bootstrap\nfailed", severity="critical")
    line = _pretty(env, color=False)
    assert line.endswith(" CRITICAL test.bus  Bootstrap failed  [test:bus]")
    assert len(line.split()[0]) == len("HH:MM:SS.mmm")


def test_tail_prints_readable_lines_on_a_terminal() -> None:
    """`bus tail` on a TTY prints one readable line per envelope instead of JSON."""
    parent, child = pty.openpty()
    with BusProcess() as bus:
        tail = subprocess.Popen(
            [*CLI, "bus", "tail", "--url", bus.url, "--count", "1"],
            stdout=child,
            stderr=subprocess.DEVNULL,
            env=cli_env(NO_COLOR="1"),
        )
        os.close(child)
        try:
            health = f"http://127.0.0.1:{bus.port}/health"
            wait_for(lambda: json.loads(urllib.request.urlopen(health, timeout=5).read())["subscribers"] == 1)
            with connect(bus.url) as ws:
                _ask(ws, json.dumps(envelope(1, content="Bootstrap failed")))
            assert tail.wait(15) == 0
            out = b""
            while chunk := _read_pty(parent):
                out += chunk
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()
            os.close(parent)
    line = out.decode().strip()
    assert line.endswith(" ERROR    test.bus  Bootstrap failed  [test:bus]"), line


def _read_pty(fd: int) -> bytes:
    if not select.select([fd], [], [], 0.5)[0]:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the child side is closed and drained
        return b""
