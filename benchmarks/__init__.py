"""membrane-otel benchmarks: each figure a user compares, measured side by side.

``python -m benchmarks --full`` (``make bench``) runs every row and writes
``docs/PERFORMANCE.md`` and ``docs/performance.png``; ``--quick`` (``make bench-quick``, CI)
runs the same rows with fewer iterations and writes ``.bench/PERFORMANCE.quick.md``.

This package holds the harness the rows share. The method, for every timed row:

* every variant of a row lives in the same process (or, where the variants need different
  process-global OTel set-ups, in sibling worker processes driven by the same loop);
* each variant is warmed up, then the variants run in **rounds**, one segment each per
  round, in an order that rotates every round, so machine noise hits all of them alike;
* every call is timed on its own (``perf_counter_ns``), the harness's own overhead is
  calibrated and subtracted, and we report median and p99; the **ratio** of medians is
  the headline and absolute times are context.

A row module defines ``run(quick: bool) -> dict`` returning :func:`row` (see there for the
shape). ``GLOBAL_STATE = True`` in a row module means it configures process-global OTel
state (providers, logging), so it must run in a process of its own.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

Timed = Callable[[], int]  # one call of the measured thing; returns its own elapsed ns
Op = Literal["<=", ">="]


# --------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object]) -> Timed:
    """Wrap a plain callable so that one call returns its elapsed ns."""
    clock = time.perf_counter_ns

    def run() -> int:
        t0 = clock()
        fn()
        return clock() - t0

    return run


def _noop() -> None:
    return None


def timer_overhead_ns(samples: int = 20000) -> int:
    """Median cost of ``timed(noop)``: what the harness itself adds to every sample."""
    run = timed(_noop)
    values = sorted(run() for _ in range(samples))
    return values[len(values) // 2]


def interleave(
    variants: Mapping[str, Timed],
    *,
    rounds: int,
    per_round: int,
    warmup: int,
    settle: Mapping[str, Callable[[], object]] | None = None,
    overhead_ns: int = 0,
    process_cpu: dict[str, list[int]] | None = None,
) -> dict[str, list[int]]:
    """Run ``variants`` in rotating rounds; every call's ns, per variant.

    ``settle[name]`` runs (untimed) after each of that variant's segments, so a variant's
    background work (a queue being drained) is finished before the next variant's segment
    and does not land on another variant's clock. ``process_cpu``, when given, receives per
    variant the whole process's CPU ns (all threads) per call of each segment, its settle
    included: what the work costs wherever it runs, beside what the caller's thread waited.
    """
    names = list(variants)
    settle = settle or {}
    for name in names:
        fn = variants[name]
        for _ in range(warmup):
            fn()
        if name in settle:
            settle[name]()
    samples: dict[str, list[int]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = variants[name]
            out = samples[name]
            before = os.times()
            for _ in range(per_round):
                out.append(max(0, fn() - overhead_ns))
            if name in settle:
                settle[name]()
            if process_cpu is not None:
                after = os.times()
                used = (after.user + after.system) - (before.user + before.system)
                process_cpu.setdefault(name, []).append(int(used * 1e9 / per_round))
    return samples


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank of sorted ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


def stats_us(samples_ns: Sequence[int]) -> tuple[float, float]:
    """``(median, p99)`` in µs."""
    return percentile(samples_ns, 0.5) / 1000, percentile(samples_ns, 0.99) / 1000


# --------------------------------------------------------------------------- results


def variant(
    name: str,
    samples_ns: Sequence[int] | None = None,
    *,
    median: float | None = None,
    p99: float | None = None,
    unit: str = "µs",
    n: int | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One measured variant: from raw ns samples (→ µs), or given figures in ``unit``."""
    if samples_ns is not None:
        median, p99 = stats_us(samples_ns)
        n = len(samples_ns)
    return {"name": name, "median": median, "p99": p99, "unit": unit, "n": n or 0, "note": note}


def ratio(
    label: str,
    value: float | None,
    target: float | None = None,
    op: Op = "<=",
    source: str = "",
    spread: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A ratio a row measured, judged against the target table (``benchmarks/targets.py``).

    Only a label in that table has a target (``value op target`` = met); the ``target`` and
    ``source`` a row passes are ignored, so a row cannot judge itself against a goal that
    is not one. ``spread`` is the 10th–90th percentile of the same ratio taken round by
    round (or run by run): how much the figure moved during the run.
    """
    from benchmarks.targets import lookup

    goal = lookup(label)
    met: bool | None = None
    if value is not None and goal is not None:
        met = value <= goal.target if goal.op == "<=" else value >= goal.target
    return {
        "label": label,
        "value": value,
        "target": goal.target if goal else None,
        "op": goal.op if goal else op,
        "met": met,
        "source": goal.goal.split(":")[0] if goal else "",
        "spread": list(spread) if spread else None,
    }


def round_spread(a: Sequence[int], b: Sequence[int], per_round: int, q: float = 0.5) -> tuple[float, float]:
    """10th–90th percentile over rounds of quantile_q(a) / quantile_q(b), one value per round
    (``q`` 0.5: the medians; 0.99: the p99s).

    ``interleave`` appends each round's segment in order, so round ``i`` of a variant is
    its samples ``[i * per_round, (i + 1) * per_round)``.
    """
    values = []
    for i in range(min(len(a), len(b)) // per_round):
        qa = percentile(a[i * per_round : (i + 1) * per_round], q)
        qb = percentile(b[i * per_round : (i + 1) * per_round], q)
        if qb:
            values.append(qa / qb)
    return percentile(values, 0.1), percentile(values, 0.9)


def row(
    key: str,
    title: str,
    *,
    variants: list[dict[str, Any]] | None = None,
    ratios: list[dict[str, Any]] | None = None,
    status: Literal["ok", "pending", "skipped", "error"] = "ok",
    note: str = "",
    profiles: dict[str, str] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A row's result: what ``run(quick)`` returns and the report reads.

    ``status`` is ``pending`` when what it measures is not built yet, ``skipped`` when the
    machine lacks something (the note says what), ``error`` when the benchmark broke.
    ``profiles`` maps a missed ratio's label to the top of its profile.
    """
    return {
        "key": key,
        "title": title,
        "status": status,
        "note": note,
        "variants": variants or [],
        "ratios": ratios or [],
        "profiles": profiles or {},
        "context": context or {},
    }


def profile_top(
    fn: Callable[[], object], calls: int, *, limit: int = 15, between: Callable[[], object] | None = None
) -> str:
    """The top of a cProfile of ``calls`` calls of ``fn``, by own and by cumulative time.

    ``between`` runs after each call with the profiler off (pacing, say, that is not the
    thing being explained).
    """
    prof = cProfile.Profile()
    for _ in range(calls):
        prof.enable()
        fn()
        prof.disable()
        if between is not None:
            between()
    parts = [_hottest(pstats.Stats(prof))]
    for order, title in (("tottime", "by own time"), ("cumulative", "by cumulative time")):
        out = io.StringIO()
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(order).print_stats(limit)
        lines = [line.rstrip() for line in out.getvalue().splitlines() if line.strip()]
        # Keep pstats' summary line and the table; drop its preamble and "Ordered by" lines.
        head = next((i for i, line in enumerate(lines) if "function calls" in line), 0)
        table = [ln for ln in lines[head + 1 :] if not ln.lstrip().startswith(("Ordered by", "List reduced"))]
        if len(parts) == 1:
            parts.insert(0, f"{calls} calls; {lines[head].strip()}")
        parts += [f"-- {title}", *table]
    return "\n".join(parts)


def _hottest(st: pstats.Stats, n: int = 5) -> str:
    """One line naming where most of the own time went, as shares of the total."""
    raw: dict[Any, tuple[Any, ...]] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    names = [f"{Path(f).name}:{line}({fn}) {tt / total:.0%}" for (f, line, fn), (_, _, tt, _, _) in top]
    return "most own time: " + ", ".join(names)


def add_profiles(result: dict[str, Any], profilers: Mapping[str, Callable[[], str]]) -> dict[str, Any]:
    """Attach the profile of every missed ratio whose label has a profiler."""
    for r in result["ratios"]:
        if r["met"] is False and r["label"] in profilers:
            result["profiles"][r["label"]] = profilers[r["label"]]()
    return result


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port that refuses connections (bound and closed: nothing will be listening)."""
    return free_port()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without OTEL_/MEMBRANE_ settings (and with bytecode caching), plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "MEMBRANE_", "AGI_LEDGER", "DOPEJAR_", "LOGFIRE_"))
    }
    # Bytecode caching on, as in any normal install: without it every process start pays for
    # compiling the project's modules, which is not what a user's `membrane-otel emit` costs.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``check`` until true; ``TimeoutError`` naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:.0f}s")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def process(
    args: Sequence[str], *, env: Mapping[str, str], log: Path, **kw: Any
) -> Iterator[subprocess.Popen[Any]]:
    """A child process that is ended (by its pid) however the block exits."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(args), env=dict(env), stdout=out, stderr=subprocess.STDOUT, **kw)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate, then kill, one process we started."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def tail(path: Path, chars: int = 1500) -> str:
    """The end of a log file, for an error note."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def throwaway_stream() -> io.TextIOWrapper:
    """Where console output goes in every variant alike: /dev/null (never grows, no terminal)."""
    return open(os.devnull, "w")
