"""The ingest row's OTLP clients, in a process of their own (driven by ``bench_ingest.py``).

The row charges the bridge the CPU time of the process the bridge runs in. With the clients
in that process too, their cost landed on the bridge: ``http.client`` building and reading
each request (~0.65 ms per 100-record request) and the gRPC channel's own threads. A user
pays for the bridge, not for the benchmark's clients; here they run apart.

Started as ``python -m benchmarks._ingest_client HTTP_PORT GRPC_PORT TOKEN HTTP_BODIES GRPC_BODIES``
(each bodies file: 4-byte big-endian length + body, repeated). One line each way over
stdin/stdout: ``http I`` / ``grpc I`` sends body I of that transport's list once and answers
``ok`` when the bridge has answered (``error …`` otherwise); ``small N`` sends N one-record
OTLP/JSON requests on the kept-alive connection and answers their rate in requests per
second (wall time). End of input ends the process.
"""

from __future__ import annotations

import http.client
import json
import struct
import sys
import time
from pathlib import Path

LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def load_bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        out.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def save_bodies(path: Path, bodies: list[bytes]) -> None:
    path.write_bytes(b"".join(struct.pack(">I", len(b)) + b for b in bodies))


def small_requests_per_second(conn: http.client.HTTPConnection, headers: dict[str, str], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        body = json.dumps(
            {
                "resourceLogs": [
                    {
                        "scopeLogs": [
                            {"logRecords": [{"timeUnixNano": str(i + 1), "body": {"stringValue": "x"}}]}
                        ]
                    }
                ]
            }
        ).encode()
        conn.request("POST", "/v1/logs", body=body, headers={"Content-Type": "application/json", **headers})
        conn.getresponse().read()
    return n / (time.perf_counter() - t0)


def main(argv: list[str]) -> int:
    import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints

    http_port, grpc_port, token, http_file, grpc_file = argv
    bodies = {"http": load_bodies(Path(http_file)), "grpc": load_bodies(Path(grpc_file))}
    auth = {"Authorization": f"Bearer {token}"}
    conn = http.client.HTTPConnection("127.0.0.1", int(http_port), timeout=30)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    export = channel.unary_unary(LOGS_EXPORT)
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            try:
                if cmd == "http":
                    conn.request(
                        "POST",
                        "/v1/logs",
                        body=bodies["http"][int(arg)],
                        headers={"Content-Type": "application/x-protobuf", **auth},
                    )
                    resp = conn.getresponse()
                    resp.read()
                    reply = "ok" if resp.status == 200 else f"error HTTP {resp.status}"
                elif cmd == "grpc":
                    export(
                        bodies["grpc"][int(arg)],
                        timeout=30,
                        metadata=[("authorization", auth["Authorization"])],
                    )
                    reply = "ok"
                elif cmd == "small":
                    reply = f"{small_requests_per_second(conn, auth, int(arg)):.1f}"
                else:
                    reply = f"error unknown command {cmd!r}"
            except Exception as exc:  # reported to the driver, which raises it there
                reply = f"error {exc!r}"
            sys.stdout.write(reply.replace("\n", " ") + "\n")
            sys.stdout.flush()
    finally:
        conn.close()
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
