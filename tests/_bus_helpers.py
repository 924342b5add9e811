"""Shared helpers for the bus, busserver and spool tests: a real bus process, a subscriber,
envelopes with known ids, polling with a deadline."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests._otel_binaries import free_ports

T = TypeVar("T")

# The CLI as a subprocess, without depending on the console script being installed.
CLI = [sys.executable, "-c", "import sys; from membrane_otel.cli import main; sys.exit(main())"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMBRANE_", "OTEL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy; fail clearly at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or getattr(fn, '__name__', fn)}")
        time.sleep(interval)


def free_port() -> int:
    return free_ports(1)[0]


def envelope(i: int, prefix: str = "s", **fields: Any) -> dict[str, Any]:
    """A minimal valid ``membrane.inject`` envelope with stimulus id ``{prefix}-{i:06d}``."""
    env: dict[str, Any] = {
        "type": "membrane.inject",
        "scope": "organizational",
        "source": "test:bus",
        "channel": "test.bus",
        "content": f"envelope {i}",
        "severity": "error",
        "metadata": {"stimulus_id": f"{prefix}-{i:06d}", "timestamp_ms": 1_700_000_000_000 + i},
    }
    env.update(fields)
    return env


def ids(envelopes: Sequence[dict[str, Any]]) -> list[str]:
    return [str(e["metadata"]["stimulus_id"]) for e in envelopes]


def read_record(path: Path) -> list[dict[str, Any]]:
    """Envelopes a bus recorded, complete lines only (the bus may be writing right now)."""
    if not path.exists():
        return []
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in text.splitlines() if line]


class BusProcess:
    """``membrane-otel bus serve`` as a child process; ended by PID (SIGTERM, or SIGKILL)."""

    def __init__(
        self,
        port: int = 0,
        *,
        token: str | None = None,
        record: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
    ) -> None:
        self.args = ["bus", "serve", "--port", str(port)]
        self.token = token  # in the environment: a token never goes on the command line
        if record is not None:
            self.args += ["--record", str(record)]
        if certfile is not None:
            self.args += ["--certfile", str(certfile)]
        if keyfile is not None:
            self.args += ["--keyfile", str(keyfile)]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = port

    def start(self, timeout: float = 15.0) -> BusProcess:
        self.proc = subprocess.Popen(
            [*CLI, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(**({"MEMBRANE_BUS_TOKEN": self.token} if self.token else {})),
        )
        lines: queue.Queue[str] = queue.Queue()
        out = self.proc.stdout
        assert out is not None

        def pump() -> None:  # keep draining so the child never blocks on a full pipe
            with out:
                for line in out:
                    lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.05)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            seen.append(line)
            if line.startswith("membrane bus listening on "):
                self.url = line.split()[4]
                self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
                return self
        self.kill()
        raise AssertionError(f"bus did not start: {''.join(seen)!r}")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush — a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> BusProcess:
        return self.start() if self.proc is None else self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Subscriber:
    """A test consumer: subscribes (``?subscribe=1``) and collects every envelope broadcast."""

    def __init__(self, url: str, token: str | None = None, *, via_frame: bool = False) -> None:
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        target = url if via_frame else url + "?subscribe=1"
        self.ws = connect(target, additional_headers=headers, open_timeout=5).__enter__()
        if via_frame:
            self.ws.send(json.dumps({"type": "subscribe"}))
            reply = json.loads(self.ws.recv(timeout=5))
            if reply != {"type": "subscribed"}:
                raise AssertionError(f"unexpected reply to subscribe: {reply}")
        self.received: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.ws:
                self.received.append(json.loads(message))
        except ConnectionClosed:
            pass

    def wait_for_count(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        wait_for(lambda: len(self.received) >= n, timeout, what=f"{n} envelopes at the subscriber")
        return list(self.received)

    def close(self) -> None:
        self.ws.__exit__(None, None, None)
        self._thread.join(5)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def self_signed_cert(tmp: Path) -> tuple[Path, Path] | None:
    """A throwaway certificate for 127.0.0.1 made with the openssl CLI, or None without it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    done = subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        capture_output=True,
        timeout=30,
    )
    return (cert, key) if done.returncode == 0 else None
