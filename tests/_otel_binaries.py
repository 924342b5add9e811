"""Running the Go-built Collector and Jaeger (``make collector jaeger``) on free loopback ports.

Both read every address from environment variables (collector-config/otelcol.yaml,
gateway.yaml and jaeger.yaml list them), so each test picks its own ports and several
instances can run side by side. Processes are ended by their own PID, never by name.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "collector-config"
OTELCOL_CONFIG = CONFIG_DIR / "otelcol.yaml"
GATEWAY_CONFIG = CONFIG_DIR / "gateway.yaml"
JAEGER_CONFIG = CONFIG_DIR / "jaeger.yaml"
OTELCOL = ROOT / ".tools" / "otelcol-membrane"
JAEGER = ROOT / ".tools" / "jaeger"

COLLECTOR_MISSING = "needs the Go-built Collector: install Go and run `make collector`"
JAEGER_MISSING = "needs the Go-built Jaeger: install Go and run `make jaeger`"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports handed out by this test process: never handed out twice, even once released.
_handed_out: set[int] = set()
_PORT_FLOOR = 20000


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago, below the kernel's ephemeral range.

    A port is often chosen seconds before its server binds it (the bridge's, before the
    Collector that sends to it starts). A port the kernel would hand out to an outgoing
    connection (the Collector's, a producer's, a poll of ours) or to the next ``bind(0)``
    could be taken meanwhile, and a ``/health`` poll would then be answered by someone else:
    so these come from below that range, and none twice in one run.
    """
    ceiling = max(_ephemeral_low(), _PORT_FLOOR + 1000)
    ports: list[int] = []
    with ExitStack() as stack:
        for _ in range(200 * n):
            if len(ports) == n:
                break
            port = random.randrange(_PORT_FLOOR, ceiling)
            if port in _handed_out or port in ports:
                continue
            s = stack.enter_context(socket.socket())
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
    if len(ports) < n:
        raise RuntimeError(f"no {n} free loopback ports between {_PORT_FLOOR} and {ceiling}")
    _handed_out.update(ports)
    return ports


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on 127.0.0.1/0.0.0.0 ``port`` (from /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            inodes.add(inode)
    return inodes


def owns_port(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Whether ``proc`` itself holds the listening socket of ``port`` (True where /proc cannot tell)."""
    try:
        inodes = _listening_inodes(port)
        fds = os.listdir(f"/proc/{proc.pid}/fd")
    except OSError:
        return True
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def base_env() -> dict[str, str]:
    """The caller's environment without MEMBRANE_/JAEGER_/OTEL_ settings, which would steer the configs."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MEMBRANE_", "JAEGER_", "OTEL_"))}


@dataclass(frozen=True)
class CollectorPorts:
    """The loopback ports of one Collector running otelcol.yaml or gateway.yaml."""

    grpc: int
    http: int
    health: int
    metrics: int

    @classmethod
    def pick(cls) -> CollectorPorts:
        grpc, http, health, metrics = free_ports(4)
        return cls(grpc, http, health, metrics)

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health}/"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics}/metrics"

    def env(self, storage_dir: Path) -> dict[str, str]:
        return {
            "MEMBRANE_COLLECTOR_GRPC_ENDPOINT": self.grpc_endpoint,
            "MEMBRANE_COLLECTOR_HTTP_ENDPOINT": f"127.0.0.1:{self.http}",
            "MEMBRANE_COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{self.health}",
            "MEMBRANE_COLLECTOR_METRICS_PORT": str(self.metrics),
            "MEMBRANE_COLLECTOR_STORAGE_DIR": str(storage_dir),
        }


@dataclass(frozen=True)
class JaegerPorts:
    """The loopback ports of one Jaeger running jaeger.yaml."""

    otlp_grpc: int
    otlp_http: int
    query_http: int
    query_grpc: int
    health: int
    metrics: int

    @classmethod
    def pick(cls) -> JaegerPorts:
        return cls(*free_ports(6))

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.otlp_grpc}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_http}"

    def env(self) -> dict[str, str]:
        return {
            "JAEGER_OTLP_GRPC_ENDPOINT": self.otlp_grpc_endpoint,
            "JAEGER_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{self.otlp_http}",
            "JAEGER_QUERY_HTTP_ENDPOINT": f"127.0.0.1:{self.query_http}",
            "JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{self.query_grpc}",
            "JAEGER_HEALTH_ENDPOINT": f"127.0.0.1:{self.health}",
            "JAEGER_METRICS_PORT": str(self.metrics),
        }


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> None:
    """Poll ``url`` until it answers 200; fail with the process log if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(
                f"process exited with {proc.returncode} before {url} answered:\n{log.read_text()}"
            )
        if http_get(url, timeout=1.0)[0] == 200:
            # Answered by this process, not by another server that took the port first.
            port = urllib.parse.urlsplit(url).port
            if port is None or owns_port(proc, port):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout}s:\n{log.read_text()}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM (the Collector then drains and closes its queue), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running(
    argv: list[str], env: Mapping[str, str], log: Path, ready_url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in ``log`` until ``ready_url`` answers 200; stop it on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_http_ok(ready_url, proc, log)
        yield proc
    finally:
        stop(proc)


@contextmanager
def collector(
    tmp: Path,
    *,
    config: Path = OTELCOL_CONFIG,
    jaeger_otlp: str = "127.0.0.1:9",
    bridge_url: str = "http://127.0.0.1:9",
    bridge_token: str | None = None,
    backends: list[str] | None = None,
    name: str = "otelcol",
) -> Iterator[tuple[subprocess.Popen[bytes], CollectorPorts]]:
    """A Collector on free ports (its queue under ``tmp``), ready when its health_check answers."""
    ports = CollectorPorts.pick()
    env = base_env() | ports.env(tmp / f"{name}-queue")
    env["MEMBRANE_JAEGER_OTLP_ENDPOINT"] = jaeger_otlp
    env["MEMBRANE_BRIDGE_URL"] = bridge_url
    if bridge_token is not None:
        env["MEMBRANE_BRIDGE_TOKEN"] = bridge_token
    if backends is not None:
        env["MEMBRANE_GATEWAY_BACKENDS"] = "[" + ", ".join(backends) + "]"
    argv = [str(OTELCOL), "--config", str(config)]
    with running(argv, env, tmp / f"{name}.log", ports.health_url) as proc:
        yield proc, ports


@contextmanager
def jaeger(tmp: Path, name: str = "jaeger") -> Iterator[tuple[subprocess.Popen[bytes], JaegerPorts]]:
    """Jaeger v2 with in-memory storage on free ports, ready when its query API answers."""
    ports = JaegerPorts.pick()
    argv = [str(JAEGER), "--config", str(JAEGER_CONFIG)]
    with running(
        argv, base_env() | ports.env(), tmp / f"{name}.log", f"{ports.query_url}/api/v3/services"
    ) as proc:
        yield proc, ports


def jaeger_spans(
    query_url: str, service: str, lookback: timedelta = timedelta(hours=1)
) -> list[dict[str, Any]]:
    """Every span Jaeger holds for ``service`` (API v3, OTLP JSON), each with a flat ``attrs`` dict.

    Jaeger v2.13 answers 404 with an error body while it has no trace for the service.
    """
    now = datetime.now(UTC)
    query = urllib.parse.urlencode(
        {
            "query.service_name": service,
            "query.start_time_min": (now - lookback).isoformat().replace("+00:00", "Z"),
            "query.start_time_max": (now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
            "query.num_traces": "1000",
        }
    )
    status, body = http_get(f"{query_url}/api/v3/traces?{query}")
    if status != 200:
        return []
    spans: list[dict[str, Any]] = []
    for rs in json.loads(body).get("result", {}).get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                attrs = {a["key"]: next(iter(a["value"].values()), None) for a in span.get("attributes", [])}
                spans.append(span | {"attrs": attrs})
    return spans
