"""Row 7: ``membrane-otel emit`` wall time vs ``python -c pass``.

Both are started the same way (``subprocess.run``, same interpreter, same environment),
alternating one for one, so the machine's state hits both alike. The emit appends one
event to a ledger in a temporary directory.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import BIN, clean_env, module_available, ratio, row, variant

GLOBAL_STATE = False


def _wall(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[int, int]:
    """``(wall ns, child CPU ns)`` of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter_ns()
    done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter_ns() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, int(cpu * 1e9)


def _run_profile(env: dict[str, str], cwd: Path) -> str:
    """cProfile of emit's ``main()`` in a fresh interpreter (imports included)."""
    code = (
        "import cProfile, pstats, io, sys\n"
        "prof = cProfile.Profile(); prof.enable()\n"
        "from membrane_otel.cli import main\n"
        "main(['emit', 'bench_profile', '-p', 'k=1'])\n"
        "prof.disable(); out = io.StringIO()\n"
        "pstats.Stats(prof, stream=out).strip_dirs().sort_stats('cumulative').print_stats(22)\n"
        "sys.stderr.write(out.getvalue())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)
    lines = [ln.rstrip() for ln in done.stderr.splitlines() if ln.strip()]
    head = next((i for i, ln in enumerate(lines) if "function calls" in ln), 0)
    body = [ln for ln in lines[head:] if not ln.lstrip().startswith(("Ordered by", "List reduced"))]
    return "\n".join(["cProfile of main(['emit', ...]) from a fresh interpreter, by cumulative time:", *body])


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
        wall: dict[str, list[int]] = {k: [] for k in cmds}
        cpu: dict[str, list[int]] = {k: [] for k in cmds}
        names = list(cmds)
        for r in range(runs):
            for name in names if r % 2 == 0 else names[::-1]:
                w, c = _wall(cmds[name], env, tmp)
                wall[name].append(w)
                cpu[name].append(c)

        def med(v: list[int]) -> float:
            return sorted(v)[len(v) // 2]

        value = med(wall["emit"]) / med(wall["python"])
        result = row(
            "emit",
            "membrane-otel emit wall time vs python -c pass",
            variants=[
                variant("python -c pass (wall)", wall["python"]),
                variant("membrane-otel emit EVENT -p k=1 (wall)", wall["emit"]),
                variant("python -c pass (CPU, user+sys)", cpu["python"]),
                variant("membrane-otel emit (CPU, user+sys)", cpu["emit"]),
            ],
            ratios=[
                ratio("emit / python -c pass", value, 2.0, "<=", "issue 6"),
                ratio(
                    "emit / python -c pass, CPU time (context)",
                    med(cpu["emit"]) / max(1, med(cpu["python"])),
                    None,
                    "<=",
                ),
            ],
            note="Wall time of a whole process start, the two run one after the other in alternating order; "
            "the children's CPU time (getrusage) is shown too, because on a loaded machine a longer process "
            "also waits longer for a CPU. CPU time has the kernel's accounting grain (a few ms).",
        )
        if value > 2.0:
            result["profiles"]["emit / python -c pass"] = (
                _import_profile(env, tmp) + "\n\n" + _run_profile(env, tmp)
            )
        return result
