"""``python -m benchmarks --quick | --full [--only ROW,...]``.

Runs every row, each in a fresh process of its own (rows set up process-global OTel state;
a fresh process also means one broken row cannot take the others down), then writes the
report: ``docs/PERFORMANCE.md`` + ``docs/performance.png`` in full mode, or
``.bench/PERFORMANCE.quick.md`` + ``.bench/performance.quick.png`` in quick mode (CI), and
the raw results as ``.bench/results.<mode>.json``.

Exit status: 1 when a benchmark broke (its row says why), or, in quick mode, when a figure is
more than ``QUICK_TOLERANCE`` (3×) off its target in ``benchmarks/targets.py`` — broken, not
merely slow on a busy machine. 2 when ``--full`` would write ``docs/`` from a tree with
uncommitted changes (the report must describe a commit).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import ROOT, clean_env, row

# row key -> module, in report order
ROWS: dict[str, str] = {
    "span": "benchmarks.bench_span",
    "errorlog": "benchmarks.bench_errorlog",
    "downstream": "benchmarks.bench_downstream",
    "ledger": "benchmarks.bench_ledger",
    "ingest": "benchmarks.bench_ingest",
    "e2e": "benchmarks.bench_e2e",
    "emit": "benchmarks.bench_emit",
    "memory": "benchmarks.bench_memory",
    "redact": "benchmarks.bench_redact",
    "storm": "benchmarks.bench_storm",
    "startup": "benchmarks.bench_startup",
}
TIMEOUT_S = {"quick": 120, "full": 1200}


def _run_row_here(key: str, quick: bool, out: Path) -> int:
    """The child side: run one row in this process and write its result as JSON."""
    result = importlib.import_module(ROWS[key]).run(quick)
    out.write_text(json.dumps(result, ensure_ascii=False, default=str), encoding="utf-8")
    return 0


def run_row(key: str, mode: str) -> dict[str, Any]:
    """Run one row in a fresh process; a crash or timeout becomes an ``error`` row."""
    with tempfile.TemporaryDirectory(prefix="membrane-bench-row-") as tmp:
        out, err = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        cmd = [sys.executable, "-m", "benchmarks", f"--{mode}", "--row", key, "--json-out", str(out)]
        try:
            with open(err, "wb") as stderr:
                done = subprocess.run(
                    cmd, cwd=ROOT, env=clean_env(), stdout=stderr, stderr=stderr, timeout=TIMEOUT_S[mode]
                )
            failure = None if done.returncode == 0 and out.exists() else f"exit status {done.returncode}"
        except subprocess.TimeoutExpired:
            failure = f"timed out after {TIMEOUT_S[mode]} s"
        if failure is None:
            result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
            return result
        log = err.read_text(errors="replace")[-3000:] if err.exists() else ""
        return row(
            key,
            f"{key} (broken)",
            status="error",
            note=f"The benchmark broke ({failure}):\n\n```\n{log}\n```",
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_and_versions() -> tuple[dict[str, str], dict[str, str]]:
    import psutil  # type: ignore[import-untyped]

    commit = _git("rev-parse", "--short", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") else ""
    machine = {
        "CPU": _cpu_model(),
        "cores": f"{psutil.cpu_count(logical=False) or '?'} physical, {os.cpu_count()} logical",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
    }
    versions = {
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "membrane-otel": f"{_version('membrane-otel')} at commit {commit or '?'}{dirty}",
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "opentelemetry-instrumentation-logging": _version("opentelemetry-instrumentation-logging"),
        "opentelemetry-exporter-otlp": _version("opentelemetry-exporter-otlp"),
        "protobuf": _version("protobuf"),
        "logfire": _version("logfire"),
    }
    return machine, versions


def _headline(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return str(result["status"])
    parts = []
    for r in result["ratios"]:
        if r["value"] is None:
            continue
        mark = "" if r["met"] is None else (" ok" if r["met"] else " MISSED")
        parts.append(f"{r['label']} {r['value']:.3g}{mark}")
    return "; ".join(parts)


def far_off(results: list[dict[str, Any]]) -> list[str]:
    """Figures more than QUICK_TOLERANCE times off their target (the quick run's check)."""
    from benchmarks.targets import QUICK_TOLERANCE, lookup, off_by, quick_bound

    out = []
    for res in results:
        for r in res["ratios"]:
            goal = lookup(r["label"])
            if goal is None or r["value"] is None or res["status"] != "ok":
                continue
            bound = quick_bound(goal)
            off = off_by(float(r["value"]), bound)
            if off > QUICK_TOLERANCE:
                op = "≤" if goal.op == "<=" else "≥"
                where = "a known miss" if goal.open_issue is None else f"open in issue {goal.open_issue}"
                standing = "" if goal.open_at is None else f", {where} at {goal.open_at:g}"
                out.append(
                    f"{r['label']} = {r['value']:.3g}, target {op} {goal.target:g}{standing} ({off:.1f}x off)"
                )
    return out


def dirty_tree() -> str:
    """``git status --porcelain`` of the repository ('' when clean, or when git is missing)."""
    return _git("status", "--porcelain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="CI: proves they run")
    mode.add_argument("--full", action="store_const", dest="mode", const="full", help="the figures for docs/")
    parser.add_argument("--only", default="", help=f"comma-separated rows (of {', '.join(ROWS)})")
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="write every output here instead of docs/ and .bench/"
    )
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.row:
        return _run_row_here(args.row, args.mode == "quick", args.json_out)

    wanted = {k.strip() for k in args.only.split(",") if k.strip()}
    unknown = sorted(wanted - set(ROWS))
    if unknown:
        parser.error(f"unknown row(s): {', '.join(unknown)}")
    keys = [k for k in ROWS if not wanted or k in wanted]  # always in report order
    writes_docs = args.mode == "full" and len(keys) == len(ROWS) and args.out_dir is None
    if writes_docs and (dirty := dirty_tree()):
        print(
            "bench full: refusing to write docs/PERFORMANCE.md from a tree with uncommitted changes "
            f"(commit or stash first):\n{dirty}",
            file=sys.stderr,
        )
        return 2
    started, load_before = time.monotonic(), _load()
    results = []
    for key in keys:
        t0 = time.monotonic()
        print(f"bench {args.mode}: {key} ...", end="", flush=True)
        result = run_row(key, args.mode)
        results.append(result)
        print(f" {time.monotonic() - t0:.1f} s: {_headline(result)}", flush=True)

    from benchmarks import report

    machine, versions = machine_and_versions()
    meta = {
        "mode": args.mode,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": time.monotonic() - started,
        "load_before": load_before,
        "load_after": _load(),
        "machine": machine,
        "versions": versions,
    }
    bench_dir = args.out_dir or ROOT / ".bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / f"results.{args.mode}.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    partial = len(keys) < len(ROWS)
    if args.mode == "full" and not partial and args.out_dir is None:
        md, png = ROOT / "docs" / "PERFORMANCE.md", ROOT / "docs" / "performance.png"
    else:
        suffix = args.mode if not partial else f"{args.mode}.partial"
        md, png = bench_dir / f"PERFORMANCE.{suffix}.md", bench_dir / f"performance.{suffix}.png"
    report.write(results, meta, md, png)
    broken = [r["key"] for r in results if r["status"] == "error"]
    shown = md.relative_to(ROOT) if md.is_relative_to(ROOT) else md
    print(f"bench {args.mode}: report {shown} ({meta['elapsed_s']:.0f} s)")
    if broken:
        print(
            f"bench {args.mode}: BROKEN benchmark(s): {', '.join(broken)} (see the report)", file=sys.stderr
        )
        return 1
    off = far_off(results) if args.mode == "quick" else []
    for line in off:
        print(f"bench quick: figure far off its target: {line}", file=sys.stderr)
    return 1 if off else 0


if __name__ == "__main__":
    raise SystemExit(main())
