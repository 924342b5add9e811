"""Start-up row: ``opentelemetry-instrument python -c pass`` with this distro vs upstream's.

What a user pays before their first line of code runs. Two clean virtual environments,
built once under ``.bench/startup-venvs/`` (rebuilt when ``pyproject.toml`` changes):

* upstream: ``opentelemetry-distro[otlp]`` at the instrumentation version we depend on — what
  the OTel docs tell a user to install;
* this distro: ``membrane-otel`` installed from this checkout (editable, so the venv follows
  the source; the editable finder costs a little at start-up, which counts against us).

Both are started the same way, alternating one for one, from an empty working directory
with no ``OTEL_*`` settings, each with its own defaults. Wall time is the headline; the
child's CPU time (all its threads) is shown beside it.
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import ROOT, clean_env, ratio, row, variant

GLOBAL_STATE = False
VENVS = ROOT / ".bench" / "startup-venvs"


def _stamp() -> str:
    return hashlib.sha1((ROOT / "pyproject.toml").read_bytes(), usedforsecurity=False).hexdigest()[:12]


def _venv(name: str, spec: list[str], build: bool) -> Path | None:
    """A clean venv with ``spec`` installed (cached); None when absent and ``build`` is off."""
    path = VENVS / f"{name}-{_stamp()}"
    if (path / ".ready").exists():
        return path
    if not build:
        return None
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "-q", *spec],
        check=True,
        timeout=900,
        capture_output=True,
    )
    (path / ".ready").touch()
    return path


def _once(venv: Path, cwd: Path) -> tuple[int, int]:
    """``(wall ns, child CPU ns)`` of one ``opentelemetry-instrument python -c pass``.

    A new user's state directory (inside ``cwd``): a developer's own spool, left by some
    earlier run, would otherwise be replayed at every start-up of this distro."""
    env = clean_env(XDG_STATE_HOME=str(cwd / "state"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter_ns()
    done = subprocess.run(
        [str(venv / "bin" / "opentelemetry-instrument"), str(venv / "bin" / "python"), "-c", "pass"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    wall = time.perf_counter_ns() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{venv.name}: exit {done.returncode}: {done.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, int(cpu * 1e9)


def run(quick: bool) -> dict[str, Any]:
    title = "Start-up: opentelemetry-instrument python -c pass, this distro vs upstream opentelemetry-distro"
    version = metadata.version("opentelemetry-instrumentation")
    try:
        upstream = _venv("upstream", [f"opentelemetry-distro[otlp]=={version}"], build=not quick)
        ours = _venv("membrane", ["-e", str(ROOT)], build=not quick)
    except (subprocess.SubprocessError, OSError) as exc:
        return row("startup", title, status="skipped", note=f"could not build the clean venvs: {exc}")
    if upstream is None or ours is None:
        return row(
            "startup",
            title,
            status="skipped",
            note="the two clean venvs are built by the full run (`make bench`), not the quick one",
        )
    runs = 6 if quick else 30
    walls: dict[str, list[int]] = {"upstream": [], "ours": []}
    cpus: dict[str, list[int]] = {"upstream": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="membrane-bench-startup-") as tmp:
        for venv in (upstream, ours):
            _once(venv, Path(tmp))  # warm the page cache and the .pyc files
        for i in range(runs):
            order = [("upstream", upstream), ("ours", ours)]
            for name, venv in order if i % 2 == 0 else order[::-1]:
                wall, cpu = _once(venv, Path(tmp))
                walls[name].append(wall)
                cpus[name].append(cpu)
    pairs = [a / b for a, b in zip(walls["ours"], walls["upstream"], strict=True)]
    pairs.sort()
    spread = (pairs[len(pairs) // 10], pairs[(len(pairs) * 9) // 10])
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
    return row(
        "startup",
        title,
        variants=[
            variant("upstream opentelemetry-distro[otlp]: wall", walls["upstream"]),
            variant("upstream: process CPU (all threads)", cpus["upstream"]),
            variant("membrane-otel: wall", walls["ours"]),
            variant("membrane-otel: process CPU (all threads)", cpus["ours"]),
        ],
        ratios=[
            ratio(
                "opentelemetry-instrument start-up / upstream distro",
                med["ours"] / med["upstream"],
                spread=spread,
            ),
            ratio("start-up CPU / upstream distro (context)", cpu_med["ours"] / cpu_med["upstream"]),
        ],
        note=f"{runs} runs each, alternating, from an empty directory with no OTEL_* settings; "
        f"opentelemetry-instrumentation {version}. Spread is the 10th–90th percentile of the run-by-run ratio.",
    )
