"""`make demo`: run the example agent under opentelemetry-instrument in the embedded default.

Nothing has to be started first: with no Collector and no bus, the agent's spans and its
error go to the ledger, its envelopes to the disk spool, and its span tree to the console.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OUT = ROOT / ".demo"


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    ledger = OUT / "resonance_ledger.jsonl"
    spool = OUT / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEMBRANE_"))}
    env.update(
        MEMBRANE_TRACE="1",
        MEMBRANE_LEDGER_PATH=str(ledger),
        MEMBRANE_SPOOL_DIR=str(spool),
        # The demo shows the embedded default: no bus is expected, so envelopes spool.
        MEMBRANE_BUS_URL=os.environ.get("MEMBRANE_BUS_URL", "ws://127.0.0.1:8000/api/ws"),
    )
    cmd = [str(BIN / "opentelemetry-instrument"), sys.executable, str(ROOT / "examples" / "hrm_agent.py")]
    print("$ MEMBRANE_TRACE=1 opentelemetry-instrument python examples/hrm_agent.py\n", flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT)
    if proc.returncode != 0:
        print(f"\nthe example agent exited with {proc.returncode}", file=sys.stderr)
        return proc.returncode

    lines = [json.loads(x) for x in ledger.read_text().splitlines() if x.strip()] if ledger.exists() else []
    events = Counter(line["event"] for line in lines)
    print(f"\nledger: {ledger.relative_to(ROOT)} — {len(lines)} lines: "
          + ", ".join(f"{n} {e}" for e, n in events.most_common()))
    for line in lines:
        if line["event"] == "script_error":
            print(f"  error: {line.get('message')!r} ({line.get('exception.type')}: "
                  f"{line.get('exception.message')}) fingerprint={line.get('membrane.fingerprint')} "
                  f"trace={line.get('otel_trace_id')}")
    spooled = sorted(spool.glob("*")) if spool.exists() else []
    print(f"spool:  {spool.relative_to(ROOT)} — {len(spooled)} file(s) of envelopes waiting for the bus")
    membrane = BIN / "membrane-otel"
    for sub in (["ledger", "verify", "--ledger", str(ledger)], ["traces", "stats", "--ledger", str(ledger)]):
        print(f"\n$ membrane-otel {' '.join(sub[:2])}", flush=True)
        subprocess.run([str(membrane), *sub], cwd=ROOT, env=env)
    print("\nnext: `membrane-otel traces view --ledger .demo/resonance_ledger.jsonl`, "
          "`membrane-otel bus serve` then `membrane-otel spool flush --dir .demo/spool`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
