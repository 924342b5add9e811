"""``membrane-otel demo``: the example HRM agent under opentelemetry-instrument, embedded default.

Nothing has to be started first: with no Collector and no bus, the agent's spans and its
error go to the ledger, its envelopes to the disk spool, and its span tree to the console.
``make demo`` runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from membrane_otel._internal.tables import DEFAULT_BUS_URL

__all__ = ["HELP", "build_parser", "run"]

HELP = "run the example HRM agent in the embedded default"


def _example() -> Path | None:
    # A source checkout (editable install): <repo>/src/membrane_otel/cli/demo.py → <repo>/examples.
    here = Path(__file__).resolve()
    for base in (Path.cwd(), here.parents[3]):
        candidate = base / "examples" / "hrm_agent.py"
        if candidate.exists():
            return candidate
    return None


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path(".demo"), help="where the ledger and spool go")


def run(args: argparse.Namespace) -> int:
    example = _example()
    if example is None:
        print(
            "membrane-otel demo: examples/hrm_agent.py not found (run it from a source checkout)",
            file=sys.stderr,
        )
        return 2
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ledger, spool = out / "resonance_ledger.jsonl", out / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEMBRANE_"))}
    env.update(
        MEMBRANE_TRACE="1",
        MEMBRANE_LEDGER_PATH=str(ledger),
        MEMBRANE_SPOOL_DIR=str(spool),
        MEMBRANE_BUS_URL=os.environ.get("MEMBRANE_BUS_URL", DEFAULT_BUS_URL),
    )
    bindir = Path(sys.executable).parent
    print("$ MEMBRANE_TRACE=1 opentelemetry-instrument python examples/hrm_agent.py\n", flush=True)
    proc = subprocess.run([str(bindir / "opentelemetry-instrument"), sys.executable, str(example)], env=env)
    if proc.returncode != 0:
        print(f"\nthe example agent exited with {proc.returncode}", file=sys.stderr)
        return proc.returncode
    lines = [json.loads(x) for x in ledger.read_text().splitlines() if x.strip()] if ledger.exists() else []
    events = Counter(line["event"] for line in lines)
    print(
        f"\nledger: {ledger} — {len(lines)} lines: " + ", ".join(f"{n} {e}" for e, n in events.most_common())
    )
    for line in lines:
        if line["event"] == "script_error":
            print(
                f"  error: {line.get('message')!r} ({line.get('exception.type')}: {line.get('exception.message')})"
                f" fingerprint={line.get('membrane.fingerprint')} trace={line.get('otel_trace_id')}"
            )
    spooled = sorted(spool.glob("*.json")) if spool.exists() else []
    print(f"spool:  {spool} — {len(spooled)} file(s) of envelopes waiting for the bus")
    me = [sys.executable, "-m", "membrane_otel.cli"]
    for sub in (["ledger", "verify", "--ledger", str(ledger)], ["traces", "stats", "--ledger", str(ledger)]):
        print(f"\n$ membrane-otel {' '.join(sub[:2])}", flush=True)
        subprocess.run([*me, *sub], env=env)
    print(
        f"\nnext: `membrane-otel traces view --ledger {ledger}`, "
        f"`membrane-otel bus serve` then `membrane-otel spool flush --dir {spool}`"
    )
    return 0
