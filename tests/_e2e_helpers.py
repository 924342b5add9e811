"""Helpers for tests/test_e2e.py: the bridge and the reference bus as real processes, a load
producer, Collector metrics, and the normalisation that compares embedded with collector mode.

Run as ``python -m tests._e2e_helpers produce ...`` (under ``opentelemetry-instrument``, from
the repository root) it is the load producer: plain ``logging.error`` calls that the distro
turns into OTLP log records, each carrying a unique ``e2e.id`` to count by in the ledger.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from membrane_otel.ledger._reader import ledger_files
from tests import _otel_binaries as ob
from tests._helpers import INSTRUMENT

ROOT = ob.ROOT
MEMBRANE_OTEL = Path(sys.executable).parent / "membrane-otel"
ID_KEY = "e2e.id"


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Bridge:
    """Where one bridge listens and writes."""

    port: int
    ledger: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def bridge_argv(b: Bridge) -> list[str]:
    return [
        str(MEMBRANE_OTEL), "bridge", "serve",
        "--host", "127.0.0.1", "--port", str(b.port), "--ledger", str(b.ledger),
    ]  # fmt: skip


@contextmanager
def bridge(
    tmp: Path, b: Bridge, *, bus_url: str | None = None, name: str = "bridge"
) -> Iterator[subprocess.Popen[bytes]]:
    """``membrane-otel bridge serve`` for ``b``, ready when ``/health`` answers; stopped by PID.

    With ``bus_url`` it publishes envelopes there (spooling under ``tmp``); without, ``--no-bus``.
    """
    env = ob.base_env() | {"MEMBRANE_SPOOL_DIR": str(tmp / f"{name}-spool")}
    argv = bridge_argv(b)
    if bus_url is None:
        argv.append("--no-bus")
    else:
        env["MEMBRANE_BUS_URL"] = bus_url
    # Each start logs to its own numbered file: what a killed one said stays readable.
    with ob.running(argv, env, _next_log(tmp, name), f"{b.url}/health") as proc:
        yield proc


def _next_log(tmp: Path, name: str) -> Path:
    n = 1
    while (tmp / f"{name}.{n}.log").exists():
        n += 1
    return tmp / f"{name}.{n}.log"


@contextmanager
def bus(tmp: Path, record: Path) -> Iterator[str]:
    """The reference bus recording every accepted envelope to ``record``; yields its ws:// URL."""
    (port,) = ob.free_ports(1)
    argv = [
        str(MEMBRANE_OTEL),
        "bus",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--record",
        str(record),
    ]
    with ob.running(argv, ob.base_env(), tmp / "bus.log", f"http://127.0.0.1:{port}/health"):
        yield f"ws://127.0.0.1:{port}/api/ws"


def otlp_env(ports: ob.CollectorPorts, protocol: str) -> dict[str, str]:
    """Standard OTEL_ variables pointing an instrumented program at a Collector's receiver."""
    if protocol == "grpc":
        endpoint = ports.grpc_endpoint
    elif protocol == "http/protobuf":
        endpoint = f"127.0.0.1:{ports.http}"
    else:
        raise ValueError(f"unknown OTLP protocol {protocol!r}")
    return {
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{endpoint}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }


def start_producer(
    env: Mapping[str, str],
    log: Path,
    *,
    count: int,
    prefix: str,
    fingerprints: int,
    rate: float,
    traceback_chars: int = 0,
) -> subprocess.Popen[bytes]:
    """This module's ``produce`` under ``opentelemetry-instrument`` (output in ``log``)."""
    argv = [
        str(INSTRUMENT), sys.executable, "-m", "tests._e2e_helpers", "produce",
        "--count", str(count), "--prefix", prefix, "--fingerprints", str(fingerprints), "--rate", str(rate),
        "--traceback-chars", str(traceback_chars),
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=dict(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_exit(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait for ``proc`` to exit 0; on a deadline kill it (by PID) and fail with its log."""
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args!r} still running after {timeout}s:\n{_tail(log)}") from None
    assert rc == 0, f"{proc.args!r} exited {rc}:\n{_tail(log)}"


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` (by its PID) if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def wait_growth(path: Path, timeout: float) -> None:
    """Return as soon as ``path`` grows (polled every half millisecond), fail at the deadline."""
    size = path.stat().st_size
    deadline = time.monotonic() + timeout
    while path.stat().st_size == size:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not grow within {timeout}s")
        time.sleep(0.0005)


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def verify_ledger(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MEMBRANE_OTEL), "ledger", "verify", "--ledger", str(path), "--json"],
        env=ob.base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- ledgers


_ID_RE = re.compile(rb'"e2e\.id":"([^"]+)"')
# A whole ledger line ends with its hash: ,"hash":"<64 hex>"}
_WHOLE = re.compile(rb',"hash":"[0-9a-f]{64}"\}$')


def _whole(path: Path) -> Iterator[bytes]:
    """The whole lines of every file of the ledger at ``path`` (rotated ones first).

    A torn line (a writer killed mid-write) is no ledger record, whatever it contains, and
    neither is a line still being written: both are left out.
    """
    for file in ledger_files(path):
        for raw in file.read_bytes().split(b"\n")[:-1]:
            if _WHOLE.search(raw):
                yield raw


def ledger_ids(path: Path) -> Counter[str]:
    """How often each ``e2e.id`` appears in the ledger's whole lines."""
    return Counter(m.group(1).decode() for raw in _whole(path) if (m := _ID_RE.search(raw)))


def whole_lines(path: Path) -> list[dict[str, Any]]:
    """The ledger's whole lines, parsed."""
    return [json.loads(raw) for raw in _whole(path)]


def collector_metric(ports: ob.CollectorPorts, name: str, **labels: str) -> float | None:
    """Sum of a Prometheus metric of the Collector over the series matching ``labels``."""
    status, body = ob.http_get(ports.metrics_url)
    if status != 200:
        return None
    total: float | None = None
    for line in body.decode().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total = (total or 0.0) + float(value)
    return total


# --------------------------------------------------------------------------- comparison

# What differs between two runs of the same program by nature: ids, clocks, chain positions.
_VOLATILE_LINE = frozenset(
    {
        "ts", "ts_unix", "timestamp", "duration_ms", "seq", "prev_hash", "hash", "record_id",
        "first_ts", "last_ts",  # when the error (and its coalesced twins) happened
        "otel_trace_id", "otel_span_id", "otel_parent_span_id",
        "trace_id", "parent_id",  # the HRM event ids (hrm.event_id / hrm.parent_event_id)
    }
)  # fmt: skip
_VOLATILE_META = frozenset({"stimulus_id", "timestamp_ms", "otel_trace_id", "otel_span_id"})


def freeze(value: Any) -> Any:
    """A hashable, order-independent form of JSON data (for multisets of lines)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


def normal_lines(lines: list[dict[str, Any]]) -> Counter[Any]:
    """Ledger lines without their ids, times and chain fields, as a multiset.

    The links the ids make are kept, by what they point at: an HRM line's parent and a log
    line's span become that span's (name, input summary), so the tree and the log-to-span
    correlation are compared too.
    """
    spans = {line["otel_span_id"]: line for line in lines if line.get("otel_span_id") and "name" in line}
    by_event = {line["trace_id"]: line for line in lines if line.get("event") == "hrm_trace"}

    def key(target: Mapping[str, Any] | None) -> Any:
        return None if target is None else (target.get("name"), target.get("input_summary"))

    out: Counter[Any] = Counter()
    for line in lines:
        norm = {k: v for k, v in line.items() if k not in _VOLATILE_LINE}
        if line.get("event") == "hrm_trace":
            norm["parent"] = key(by_event.get(line.get("parent_id") or ""))
            norm["otel_parent"] = key(spans.get(line.get("otel_parent_span_id") or ""))
        elif line.get("otel_span_id"):
            norm["in_span"] = key(spans.get(line["otel_span_id"]))
        out[freeze(norm)] += 1
    return out


def normal_envelope(env: Mapping[str, Any]) -> Any:
    """An envelope without its stimulus id, timestamp and OTel ids."""
    out = dict(env)
    out["metadata"] = {k: v for k, v in env.get("metadata", {}).items() if k not in _VOLATILE_META}
    return freeze(out)


def diff(left: Counter[Any], right: Counter[Any]) -> str:
    """The items of two multisets that are not in both, readable (for assertion messages)."""

    def show(items: Counter[Any]) -> str:
        return (
            "\n".join(f"  {n} x {dict(k) if isinstance(k, tuple) else k}" for k, n in items.items()) or "  -"
        )

    return f"only left:\n{show(left - right)}\nonly right:\n{show(right - left)}"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- the producer


def produce(count: int, prefix: str, fingerprints: int, rate: float, traceback_chars: int = 0) -> None:
    """``count`` error records, ``fingerprints`` distinct fingerprints, about ``rate`` a second.

    With ``traceback_chars`` each record carries a stack trace of about that size.
    """
    import logging

    log = logging.getLogger("e2e_producer")
    started = time.monotonic()
    for i in range(count):
        uid = f"{prefix}-{i:06d}"
        extra = {ID_KEY: uid, "membrane.fingerprint": f"{prefix}-fp{i % fingerprints}"}
        if traceback_chars:
            try:
                raise RuntimeError("x" * traceback_chars)
            except RuntimeError:
                log.exception("e2e record %s failed", uid, extra=extra)
        else:
            log.error("e2e record %s failed", uid, extra=extra)
        if rate > 0 and i % 100 == 99:
            # Paced, so that the run lasts long enough to kill a bridge in the middle of it.
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests._e2e_helpers")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--fingerprints", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0, help="records per second (0: as fast as possible)")
    p.add_argument("--traceback-chars", type=int, default=0, help="give each record a stack trace this long")
    args = parser.parse_args(argv)
    produce(args.count, args.prefix, args.fingerprints, args.rate, args.traceback_chars)
    return 0


if __name__ == "__main__":
    sys.exit(main())
