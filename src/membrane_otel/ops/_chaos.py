"""Chaos scenarios users can run (``seeds/002``'s Layer 2 chaos, on this pipeline).

Each scenario runs a real application process under ``membrane_otel.configure()`` in a
scratch directory (its own ledger and spool; nothing of the user's is touched), then checks
what the design promises to keep and reports the figures:

* ``error_storm`` — identical errors in a burst: the ledger keeps every one (as lines or
  ``occurrences``), the membrane sees a throttled few, and the rest is counted, not lost;
* ``queue_flood`` — a tiny queue under a fast producer: the oldest drop, and produced ==
  exported + dropped exactly, with the newest record kept;
* ``ledger_writers`` — several processes append at once: every line is there and the hash
  chain verifies;
* ``bus_outage`` — errors while the membrane bus is down: every envelope that is not
  throttled waits in the spool, none is lost.

``membrane-otel chaos list`` / ``chaos run NAME|all [--scale N]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Report:
    """One scenario's outcome: passed or not, the figures measured, and what failed."""

    name: str
    ok: bool = True
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.ok = False
            self.problems.append(problem)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEMBRANE_", "AGI_", "DOPEJAR_"))
    }
    env.update(
        MEMBRANE_LEDGER_PATH=str(tmp / "ledger.jsonl"),
        MEMBRANE_SPOOL_DIR=str(tmp / "spool"),
        MEMBRANE_BUS_URL="ws://127.0.0.1:9/api/ws",  # a port nobody listens on
        MEMBRANE_WATCHDOG="0",
    )
    env.update(extra)
    return env


def _run(code: str, env: dict[str, str], tmp: Path, timeout: float = 300) -> dict[str, Any]:
    """Run ``code`` as its own process; its last stdout line is a JSON report."""
    with open(tmp / "app.stderr", "w") as err:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env,
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=timeout,
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"the scenario's application exited {done.returncode}: {(tmp / 'app.stderr').read_text()[-500:]}"
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _ledger(tmp: Path) -> list[dict[str, Any]]:
    from membrane_otel.ledger._reader import read_lines

    path = tmp / "ledger.jsonl"
    return list(read_lines(path)) if path.exists() else []


_STORM = """
import json, logging, time, membrane_otel
membrane_otel.configure()
log = logging.getLogger("storm")
def fail():
    raise ValueError("identical failure")
t0 = time.perf_counter()
for _ in range({n}):
    try:
        fail()
    except ValueError:
        log.exception("identical failure")
app_s = time.perf_counter() - t0
membrane_otel.shutdown()
print(json.dumps({{"app_s": app_s, "metrics": membrane_otel.get_metrics()}}))
"""


def error_storm(tmp: Path, scale: int) -> Report:
    n = 2000 * scale
    r = Report("error_storm")
    out = _run(_STORM.format(n=n), _env(tmp), tmp)
    m = out["metrics"]
    errors = [ln for ln in _ledger(tmp) if ln.get("event") == "script_error"]
    kept = sum(int(ln.get("occurrences", 1)) for ln in errors)
    spooled = [e for f in (tmp / "spool").glob("*.json") for e in json.loads(f.read_text())]
    held = sum(int((e.get("metadata") or {}).get("held_back") or 0) for e in spooled)
    r.figures.update(errors=n, ledger_kept=kept, envelopes=len(spooled), suppressed=m.get("suppressed", 0),
                     held_back_reported=held, app_s=round(out["app_s"], 3))  # fmt: skip
    r.expect(kept == n, f"the ledger kept {kept} of {n} errors")
    r.expect(len(spooled) < n / 10, f"{len(spooled)} envelopes for {n} identical errors: not throttled")
    r.expect(held == m.get("suppressed", 0), f"held back reported {held} != suppressed {m.get('suppressed')}")
    return r


_FLOOD = """
import json, logging, membrane_otel
membrane_otel.configure()
log = logging.getLogger("fast")
for i in range({n}):
    log.warning("tick %d", i)
membrane_otel.force_flush()
print(json.dumps({{"metrics": membrane_otel.get_metrics()}}))
"""


def queue_flood(tmp: Path, scale: int) -> Report:
    n = 20_000 * scale
    r = Report("queue_flood")
    env = _env(tmp, MEMBRANE_QUEUE_SIZE="100", OTEL_LOGS_EXPORTER="ledger", OTEL_TRACES_EXPORTER="none")
    m = _run(_FLOOD.format(n=n), env, tmp)["metrics"]
    lines = [ln for ln in _ledger(tmp) if ln.get("event") == "log"]
    produced, exported, dropped = m.get("produced_logs", 0), m.get("exported", 0), m.get("dropped_logs", 0)
    r.figures.update(produced=produced, exported=exported, dropped=dropped, ledger_lines=len(lines))
    r.expect(produced == n, f"produced {produced}, expected {n}")
    r.expect(
        produced == exported + dropped, f"produced {produced} != exported {exported} + dropped {dropped}"
    )
    r.expect(len(lines) == exported, f"{len(lines)} ledger lines for {exported} exported")
    r.expect(bool(lines) and lines[-1].get("message") == f"tick {n - 1}", "the newest record was not kept")
    return r


_WRITER = "from membrane_otel import emit_event\nfor i in range({n}):\n    emit_event('eval', {{'w': {w}, 'i': i}})\n"


def ledger_writers(tmp: Path, scale: int) -> Report:
    writers, n = 4, 250 * scale
    r = Report("ledger_writers")
    env = _env(tmp)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER.format(n=n, w=w)], env=env, cwd=tmp, stderr=subprocess.DEVNULL
        )
        for w in range(writers)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    from membrane_otel.ledger._verify import verify

    result = verify(tmp / "ledger.jsonl")
    lines = [ln for ln in _ledger(tmp) if ln.get("event") == "eval"]
    r.figures.update(writers=writers, lines=len(lines), chain_ok=result.ok)
    r.expect(codes == [0] * writers, f"writer exit codes {codes}")
    r.expect(len(lines) == writers * n, f"{len(lines)} lines of {writers * n}")
    r.expect(result.ok, "the hash chain does not verify")
    return r


_OUTAGE = """
import json, logging, membrane_otel
membrane_otel.configure()
log = logging.getLogger("outage")
for i in range({n}):
    log.error("distinct failure %d", i, extra={{"site": i}})
membrane_otel.shutdown()
print(json.dumps({{"metrics": membrane_otel.get_metrics()}}))
"""


def bus_outage(tmp: Path, scale: int) -> Report:
    n = 50 * scale
    r = Report("bus_outage")
    env = _env(tmp, MEMBRANE_THROTTLE="0")
    m = _run(_OUTAGE.format(n=n), env, tmp)["metrics"]
    spooled = [e for f in (tmp / "spool").glob("*.json") for e in json.loads(f.read_text())]
    ids = {(e.get("metadata") or {}).get("stimulus_id") for e in spooled}
    r.figures.update(errors=n, spooled=len(spooled), distinct=len(ids), dropped=m.get("dropped_count", 0))
    r.expect(
        len(spooled) == n and len(ids) == n, f"{len(spooled)} envelopes spooled ({len(ids)} distinct) of {n}"
    )
    return r


SCENARIOS: dict[str, tuple[Callable[[Path, int], Report], str]] = {
    "error_storm": (
        error_storm,
        "identical errors in a burst: ledger keeps all, membrane throttled and counted",
    ),
    "queue_flood": (queue_flood, "a 100-record queue under a fast producer: drops counted exactly"),
    "ledger_writers": (ledger_writers, "4 processes append at once: every line there, chain verifies"),
    "bus_outage": (bus_outage, "errors while the bus is down: every envelope waits in the spool"),
}


def run_scenario(name: str, scale: int = 1) -> Report:
    """Run one scenario in a scratch directory (removed afterwards) and return its report."""
    fn, _ = SCENARIOS[name]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"membrane-chaos-{name}-") as tmp:
        try:
            report = fn(Path(tmp), scale)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
            report = Report(name, ok=False, problems=[str(exc)])
    report.seconds = round(time.monotonic() - started, 2)
    return report
