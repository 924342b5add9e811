"""The real bridge as a process on 127.0.0.1 (free ports), and a watch on it while it is attacked."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

from tests._bus_helpers import CLI, cli_env, wait_for
from tests._helpers import read_ledger
from tests.test_bridge_otlp import sdk_logs

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PB = "application/x-protobuf"
MiB = 1024 * 1024


class BridgeProcess:
    """``membrane-otel bridge serve`` with a token file, both ports picked free; killed at exit."""

    def __init__(self, tmp: Path, *args: str, bus_url: str = "ws://127.0.0.1:9/api/ws", **env: str) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.ledger = tmp / "ledger.jsonl"
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        self.args = [
            *CLI,
            "bridge",
            "serve",
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--ledger",
            str(self.ledger),
            "--token-file",
            str(token_file),
            *args,
        ]
        self.env = cli_env(
            MEMBRANE_BUS_URL=bus_url,
            MEMBRANE_SPOOL_DIR=str(tmp / "state" / "spool"),
            XDG_STATE_HOME=str(tmp / "xdg-state"),
            MEMBRANE_THROTTLE="0",
            **env,
        )
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.port = self.grpc_port = 0

    def start(self) -> BridgeProcess:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        out = self.proc.stdout
        assert out is not None
        threading.Thread(target=lambda: self.lines.extend(out), daemon=True).start()
        line = wait_for(
            lambda: (
                next((ln for ln in self.lines if "listening on" in ln), None)
                or (self.proc is not None and self.proc.poll() is not None and "exited")
            ),
            timeout=30,
            what="the bridge to listen",
        )
        assert line != "exited", "".join(self.lines)
        match = re.search(r"listening on https?://[^:]+:(\d+) \(OTLP/gRPC on [^:]+:(\d+)", line)
        assert match, line
        self.port, self.grpc_port = int(match.group(1)), int(match.group(2))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def ledger_lines(self) -> list[dict[str, Any]]:
        return read_ledger(self.ledger)

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": PB, **AUTH, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def normal_body() -> bytes:
    return encode_logs(sdk_logs()).SerializeToString()


@contextmanager
def under_attack(
    bridge: BridgeProcess, max_growth: int = 128 * MiB, *, background: bool = True
) -> Iterator[Callable[[], None]]:
    """While the block runs: RSS sampled every 50 ms, and (``background``) a normal request
    answered within 2 s every 0.5 s. At the end: the RSS growth stays under ``max_growth``,
    every normal request was answered in time. Yields a function that checks one normal
    request right now."""
    base = bridge.rss()
    peak = base
    failures: list[str] = []
    stop = threading.Event()

    def normal() -> None:
        started = time.monotonic()
        try:
            status, _, _ = post(bridge.port, "/v1/logs", normal_body(), timeout=2)
        except OSError as exc:
            failures.append(f"normal request failed: {exc!r}")
            return
        took = time.monotonic() - started
        if status != 200 or took > 2:
            failures.append(f"normal request: {status} in {took:.2f}s")

    def watch() -> None:
        nonlocal peak
        last_normal = 0.0
        while not stop.is_set():
            try:
                peak = max(peak, bridge.rss())
            except psutil.Error:
                return
            if background and time.monotonic() - last_normal > 0.5:
                last_normal = time.monotonic()
                normal()
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield normal
    finally:
        stop.set()
        watcher.join(10)
    peak = max(peak, bridge.rss())
    assert bridge.proc is not None and bridge.proc.poll() is None, "the bridge died"
    assert peak - base < max_growth, f"RSS grew {(peak - base) / MiB:.0f} MiB"
    assert not failures, failures
