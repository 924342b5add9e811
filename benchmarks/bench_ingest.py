"""Row 5: bridge ingest vs bare OTLP protobuf decode, publisher on, over HTTP and gRPC.

If the bridge's own benchmark (``benchmarks/bench_bridge.py``) is there, its ``run(quick)``
result is used as this row. Otherwise this measures, per OTLP logs request of 100 error
records (16 attributes each, a 7-frame stack trace), side by side:

* ceiling: ``ExportLogsServiceRequest.FromString`` and reading every record's fields into
  Python — what any Python consumer of the same bytes pays;
* bridge over HTTP: one kept-alive connection POSTing to ``/v1/logs`` of a real bridge
  server (aiohttp), which redacts, translates, builds the 100 envelopes, publishes them to
  a live reference bus (``membrane-otel bus serve``, acked) and appends the ledger before
  it answers;
* bridge over gRPC: the same, through one channel to the bridge's OTLP/gRPC port;

each timed in CPU time of this process, as records per second per core. The bridge runs in
this process (its server threads, event loop and bus connection included); the clients run
in a process of their own (:mod:`benchmarks._ingest_client`, told over a pipe which body to
send, answering when the bridge has answered), so their CPU — ``http.client``, the gRPC
channel's threads — is not charged to the bridge; nor is the bus's, in its own process.
What this process spends besides the bridge is one short pipe write and read per request.

Also reported: requests per second on one kept-alive connection for a one-record OTLP/JSON
request (the latency of a small answer; headers and body go out in one write).
Every request carries distinct record ids (the bridge skips ids it has written).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import (
    ROOT,
    interleave,
    module_available,
    ratio,
    round_spread,
    row,
    variant,
)
from benchmarks._ingest_client import save_bodies
from membrane_otel._internal import counters

GLOBAL_STATE = False
PER_REQUEST = 100
TOKEN = "bench-token"
TITLE = "Bridge ingest (publisher on, HTTP and gRPC) vs bare OTLP protobuf decode (records/s)"


def _from_bridge_bench(quick: bool) -> dict[str, Any]:
    """The bridge engineer's row, in this report's shape."""
    result = importlib.import_module("benchmarks.bench_bridge").run(quick)
    if not isinstance(result, dict):
        raise TypeError(f"bench_bridge.run returned {type(result).__name__}, expected a dict")
    if "ratios" in result and "key" in result:
        result.setdefault("title", TITLE)
        result["key"] = "ingest"
        return result
    # A free-form dict: keep its numbers; find the two rates if it names them.
    rates = {k: v for k, v in result.items() if isinstance(v, int | float)}
    decode = next((v for k, v in rates.items() if "decode" in k), None)
    ingest = next((v for k, v in rates.items() if "ingest" in k or "bridge" in k), None)
    value = ingest / decode if decode and ingest else None
    return row(
        "ingest",
        TITLE,
        variants=[variant(k, None, median=float(v), unit="") for k, v in rates.items()],
        ratios=[ratio("bridge ingest / bare decode", value, 0.5, ">=", "issue 7")],
        note="From benchmarks/bench_bridge.py.",
        context={k: v for k, v in result.items() if k not in rates},
    )


def _read_all(req: Any) -> int:
    """Touch every field of every record, as a consumer turning them into Python would."""
    n = 0
    for rl in req.resource_logs:
        resource = {
            kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
            for kv in rl.resource.attributes
        }
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for lr in sl.log_records:
                rec = {
                    "time": lr.time_unix_nano,
                    "observed": lr.observed_time_unix_nano,
                    "severity": lr.severity_number,
                    "severity_text": lr.severity_text,
                    "body": getattr(lr.body, lr.body.WhichOneof("value") or "string_value"),
                    "trace_id": lr.trace_id.hex(),
                    "span_id": lr.span_id.hex(),
                    "attrs": {
                        kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                        for kv in lr.attributes
                    },
                    "resource": resource,
                    "scope": scope,
                }
                n += len(rec)
    return n


def _bodies(count: int) -> list[bytes]:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    from benchmarks.bench_ledger import make_records

    return [encode_logs(make_records(PER_REQUEST)).SerializeToString() for _ in range(count)]


@contextmanager
def _bus() -> Iterator[str]:
    """A reference bus process on a free port; yields its ws:// URL."""
    argv = [sys.executable, "-c", "import sys; from membrane_otel.cli import main; sys.exit(main())"]
    proc = subprocess.Popen(
        [*argv, "bus", "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out = proc.stdout
        if out is None:
            raise RuntimeError("no bus output")
        for line in out:
            if line.startswith("membrane bus listening on "):
                threading.Thread(target=lambda: [None for _ in out], daemon=True).start()
                yield line.split()[4]
                break
        else:
            raise RuntimeError("the reference bus did not start")
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def _clients(
    http_port: int, grpc_port: int, bodies: dict[str, list[bytes]], tmp: Path
) -> Iterator[Callable[[str], str]]:
    """The OTLP clients in a process of their own; yields ``ask(command) -> answer``."""
    files = []
    for kind in ("http", "grpc"):
        save_bodies(tmp / f"{kind}.bodies", bodies[kind])
        files.append(str(tmp / f"{kind}.bodies"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._ingest_client", str(http_port), str(grpc_port), TOKEN, *files],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        stdin, stdout = proc.stdin, proc.stdout
        if stdin is None or stdout is None or stdout.readline().strip() != "ready":
            raise RuntimeError("the ingest benchmark's client did not start")

        def ask(command: str) -> str:
            stdin.write(command + "\n")
            stdin.flush()
            answer = stdout.readline().strip()
            if not answer or answer.startswith("error"):
                raise RuntimeError(f"client, {command!r}: {answer or 'no answer'}")
            return answer

        yield ask
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run(quick: bool) -> dict[str, Any]:
    if (ROOT / "benchmarks" / "bench_bridge.py").exists():
        return _from_bridge_bench(quick)
    if not module_available("membrane_otel.bridge._ingest"):
        return row(
            "ingest",
            TITLE,
            status="pending",
            note="membrane_otel.bridge is not built yet (issue 13).",
            ratios=[ratio("bridge ingest / bare decode", None, 0.5, ">=", "issue 13")],
        )
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from membrane_otel.bridge import Bridge, ServerOptions, make_server
    from membrane_otel.bridge._grpc import make_grpc_server
    from membrane_otel.bridge._outbox import Outbox
    from membrane_otel.bridge._server import serve_in_thread
    from membrane_otel.ledger._writer import Ledger
    from membrane_otel.membrane._bus_wire import WsTransport
    from membrane_otel.membrane._publish import MembranePublisher
    from membrane_otel.membrane._spool import Spool
    from membrane_otel.settings import load_settings

    rounds, per_round, warmup = (3, 4, 3) if quick else (12, 10, 10)
    # CPU time of this process (the bridge's threads), not wall time: the target is records
    # per second per core. The clients and the reference bus run in processes of their own,
    # so the wait for an answer or an ack costs the bridge no CPU (and on a shared 2-core
    # machine, wall time would mostly measure the neighbours).
    clock = time.process_time_ns
    with tempfile.TemporaryDirectory(prefix="membrane-bench-ingest-") as tmp, _bus() as bus_url:
        count = warmup + rounds * per_round + 1
        bodies = _bodies(count)
        # HTTP and gRPC each need their own bodies: a body sent twice is a re-delivery (the
        # bare decode sends nothing: it reads HTTP's).
        wire = {"http": bodies, "grpc": _bodies(count)}
        settings = load_settings({}, bus_url=bus_url, throttle=False)
        outbox = Outbox(WsTransport(bus_url), Spool(Path(tmp) / "spool"))
        ledger = Ledger(Path(tmp) / "bridge.jsonl")
        bridge = Bridge(ledger, MembranePublisher(settings, outbox, None), outbox=outbox)
        # With a token, as behind a Collector: the SDK's own record ids (distinct per record) are
        # honoured only from an authenticated client.
        server = make_server(bridge, "127.0.0.1", 0, ServerOptions(token=TOKEN))
        stop = serve_in_thread(server)
        grpc_server = make_grpc_server(server.ingest, "127.0.0.1", 0)
        cursor = {"decode": 0, "http": 0, "grpc": 0}

        def bare() -> int:
            body = bodies[cursor["decode"]]
            cursor["decode"] += 1
            t0 = clock()
            _read_all(ExportLogsServiceRequest.FromString(body))
            return clock() - t0

        try:
            with _clients(server.server_address[1], grpc_server.port, wire, Path(tmp)) as ask:

                def sender(kind: str) -> Callable[[], int]:
                    def send() -> int:
                        i = cursor[kind]
                        cursor[kind] += 1
                        t0 = clock()
                        ask(f"{kind} {i}")
                        return clock() - t0

                    return send

                samples = interleave(
                    {"decode": bare, "http": sender("http"), "grpc": sender("grpc")},
                    rounds=rounds,
                    per_round=per_round,
                    warmup=warmup,
                )
                small_rps = float(ask(f"small {50 if quick else 500}"))
            published = counters.get("bridge_envelopes_published")
        finally:
            grpc_server.stop(0.5)
            stop()
            bridge.shutdown(5000)
            ledger.close()
        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        rate = {k: PER_REQUEST / (v / 1e9) for k, v in med.items()}
        vs = []
        for name, label in (
            ("decode", "bare decode: FromString + read every field"),
            ("http", "bridge over OTLP/HTTP, publisher on (one kept-alive connection)"),
            ("grpc", "bridge over OTLP/gRPC, publisher on (one channel)"),
        ):
            v = variant(label, samples[name])
            v["note"] = f"{rate[name]:,.0f} records/s (median request of {PER_REQUEST})"
            vs.append(v)
        vs.append(
            variant(
                "one-record OTLP/JSON requests, one kept-alive connection", median=small_rps, unit="req/s"
            )
        )
        return row(
            "ingest",
            TITLE,
            variants=vs,
            ratios=[
                ratio(
                    f"bridge ingest ({kind}) / bare decode",
                    rate[kind] / rate["decode"],
                    0.5,
                    ">=",
                    "issue 13",
                    round_spread(samples["decode"], samples[kind], per_round),
                )
                for kind in ("http", "grpc")
            ],
            note=f"Per OTLP logs request of {PER_REQUEST} error records, CPU time of the bridge's process "
            "(records/s per core; the clients run in a process of their own); the bridge redacts, "
            f"translates, publishes every record's envelope to a live reference bus (acked) and appends "
            f"the ledger before answering ({published} envelopes published). "
            f"Small requests: {small_rps:,.0f} req/s on one kept-alive connection.",
        )
