"""The reference bus survives slow subscribers (bounded outboxes, the stuck one dropped and counted);
`bus tail --pretty` prints what envelopes carry escaped.

Before issue 15 the bus broadcast with websockets' ``broadcast()``, which has no backpressure:
three subscribers that never read cost +357 MiB for 104 MB published, and were never
disconnected (this test's asserts on ``slow_dropped`` and on RSS both failed).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests._bus_helpers import BusProcess, Subscriber, wait_for

psutil = pytest.importorskip("psutil", reason="psutil measures the bus's RSS: pip install psutil")

MiB = 1024 * 1024


def _stuck_subscriber(port: int) -> socket.socket:
    """A subscriber that completes the handshake and then never reads a byte (small receive buffer)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /api/ws?subscribe=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n", 1)[0], head
    return s


def _health(bus: BusProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{bus.port}/health", timeout=5) as r:
        return json.loads(r.read())


def _batch(start: int, n: int, pad: int) -> str:
    return json.dumps(
        [
            {
                "type": "membrane.inject",
                "content": "x",
                "metadata": {"stimulus_id": f"s-{i}", "pad": "p" * pad},
            }
            for i in range(start, start + n)
        ]
    )


def _publish(url: str, total_bytes: int, deadline: float, pad: int = 1000, per_frame: int = 100) -> int:
    """Publish about ``total_bytes`` of envelopes, waiting for each frame's ack; return how many."""
    from websockets.sync.client import connect

    sent = 0
    with connect(url, open_timeout=5, max_size=None) as ws:
        while sent * pad < total_bytes and time.monotonic() < deadline:
            ws.send(_batch(sent, per_frame, pad))
            reply = json.loads(ws.recv(timeout=30))
            assert reply["type"] == "ack" and len(reply["ids"]) == per_frame
            sent += per_frame
    return sent


def test_subscriber_that_never_reads_is_dropped_and_memory_stays_bounded() -> None:
    """Three stuck subscribers, 100 MB published: each dropped within 10 s, bus RSS grows < 64 MiB."""
    with BusProcess() as bus:
        assert bus.proc is not None
        proc = psutil.Process(bus.proc.pid)
        stuck = [_stuck_subscriber(bus.port) for _ in range(3)]
        wait_for(lambda: _health(bus)["subscribers"] == 3, what="3 subscribers")
        baseline = proc.memory_info().rss
        peak = [baseline]
        dropped_at: list[float] = []
        done = threading.Event()
        start = time.monotonic()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                if not dropped_at and _health(bus).get("slow_dropped", 0) >= 3:
                    dropped_at.append(time.monotonic() - start)
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            sent = _publish(bus.url, 100 * 1000 * 1000, deadline=start + 180)
        finally:
            done.set()
            sampler.join(10)
            for s in stuck:
                s.close()
        health = _health(bus)
        grown = (peak[0] - baseline) / MiB
        print(
            f"published {sent} envelopes (~{sent * 1000 / 1e6:.0f} MB); RSS +{grown:.1f} MiB; dropped {dropped_at}"
        )
        assert sent * 1000 >= 100 * 1000 * 1000, "the publisher did not get through 100 MB in time"
        assert health["slow_dropped"] == 3 and health["subscribers"] == 0
        assert dropped_at and dropped_at[0] < 10.0
        assert grown < 64, f"bus RSS grew by {grown:.1f} MiB"


def test_a_reading_subscriber_gets_everything_in_order_while_a_stuck_one_is_dropped() -> None:
    """Bounded outboxes don't cost a subscriber that keeps up: 10000 envelopes (10 MB), all, in order."""
    bus = BusProcess()
    bus.args += ["--subscriber-buffer", "1000000"]
    with bus:
        stuck = _stuck_subscriber(bus.port)
        reader = Subscriber(bus.url)
        try:
            wait_for(lambda: _health(bus)["subscribers"] == 2, what="2 subscribers")
            sent = _publish(bus.url, 10_000 * 1000, deadline=time.monotonic() + 120)
            got = reader.wait_for_count(sent, timeout=30)
            assert [e["metadata"]["stimulus_id"] for e in got] == [f"s-{i}" for i in range(sent)]
            assert _health(bus)["slow_dropped"] == 1
        finally:
            stuck.close()
            reader.close()


ESCAPE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil"


def test_bus_tail_pretty_prints_terminal_escapes_escaped() -> None:
    """`bus tail --pretty`: ESC, BEL, C1 CSI and a bidi override in an envelope come out visible
    (before issue 15 they reached the terminal raw, retitling and clearing it)."""
    import subprocess

    from websockets.sync.client import connect

    from tests._bus_helpers import CLI, cli_env, envelope

    with BusProcess() as bus:
        tail = subprocess.Popen(
            [*CLI, "bus", "tail", "--pretty", "--count", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(MEMBRANE_BUS_URL=bus.url, NO_COLOR="1"),
        )
        try:
            wait_for(lambda: _health(bus)["subscribers"] == 1, what="bus tail subscribed")
            hostile = envelope(1, content="boom" + ESCAPE, channel="ch" + ESCAPE, source="src" + ESCAPE)
            with connect(bus.url, open_timeout=5) as ws:
                ws.send(json.dumps(hostile))
                ws.recv(timeout=5)
            out, _ = tail.communicate(timeout=15)
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()
    text = out.decode()
    assert "\\x1b]0;pwned\\x07" in text and "\\u202e" in text and "\\x9b" in text
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in text)
