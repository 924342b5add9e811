"""Row 7: ``membrane-otel emit`` wall time vs ``python -c pass``.

Both are started the same way (``subprocess.run``, same interpreter, same environment),
alternating one for one, so the machine's state hits both alike. The emit appends one
event to a ledger in a temporary directory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import BIN, clean_env, module_available, profile_top, ratio, row, variant

GLOBAL_STATE = False


def _wall(cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    t0 = time.perf_counter_ns()
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter_ns() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def _import_profile(env: dict[str, str], cwd: Path) -> str:
    """What emit's start-up imports cost: ``-X importtime``, the heaviest first."""
    code = "import sys; from membrane_otel.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code, "emit", "bench_profile", "-p", "k=1"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    rows.sort(reverse=True)
    total = sum(own for own, name in rows if not name.startswith("  "))
    head = [f"python -X importtime: {len(rows)} modules; cumulative µs of the heaviest:"]
    return "\n".join(
        head + [f"{us:>9} µs  {name}" for us, name in rows[:15]] + [f"(top-level total {total} µs)"]
    )


def run(quick: bool) -> dict[str, Any]:
    if not module_available("membrane_otel.cli.emit"):
        return row(
            "emit",
            "membrane-otel emit wall time vs python -c pass",
            status="pending",
            note="membrane_otel.cli.emit is not built yet (issue 6).",
            ratios=[ratio("emit / python -c pass", None, 2.0, "<=", "issue 6")],
        )
    runs, warmup = (8, 2) if quick else (60, 5)
    with tempfile.TemporaryDirectory(prefix="membrane-bench-emit-") as tmp_name:
        tmp = Path(tmp_name)
        env = clean_env(MEMBRANE_LEDGER_PATH=str(tmp / "ledger.jsonl"), MEMBRANE_SPOOL_DIR=str(tmp / "spool"))
        cmds = {
            "python": [sys.executable, "-c", "pass"],
            "emit": [str(BIN / "membrane-otel"), "emit", "bench_event", "-p", "k=1", "--task-id", "t1"],
        }
        for _ in range(warmup):
            for cmd in cmds.values():
                _wall(cmd, env, tmp)
        samples: dict[str, list[int]] = {k: [] for k in cmds}
        names = list(cmds)
        for r in range(runs):
            for name in names if r % 2 == 0 else names[::-1]:
                samples[name].append(_wall(cmds[name], env, tmp))
        med = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
        value = med["emit"] / med["python"]
        result = row(
            "emit",
            "membrane-otel emit wall time vs python -c pass",
            variants=[
                variant("python -c pass", samples["python"], unit="µs"),
                variant("membrane-otel emit EVENT -p k=1", samples["emit"], unit="µs"),
            ],
            ratios=[ratio("emit / python -c pass", value, 2.0, "<=", "issue 6")],
            note="Wall time of a whole process start, run one after the other in alternating order.",
        )
        if value > 2.0:
            result["profiles"]["emit / python -c pass"] = _import_profile(env, tmp)
        return result


# cProfile cannot see interpreter start-up, so a miss is explained by -X importtime above.
_ = profile_top
