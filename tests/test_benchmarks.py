"""The benchmarks still work: a few rows in quick mode, in-process, and the report writer.

No speed is asserted here (that is what the report is for); only that each row measures
every variant and computes every ratio it promises.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks import bench_ledger, bench_span, report


def _check_row(result: dict[str, Any], key: str) -> None:
    assert result["key"] == key
    assert result["status"] == "ok", result["note"]
    for v in result["variants"]:
        assert v["median"] is not None and v["median"] > 0, v
        assert v["n"] > 0, v
    for r in result["ratios"]:
        assert r["value"] is not None and r["value"] > 0, r
        if r["target"] is not None:
            assert r["met"] in (True, False), r
            if r["met"] is False:
                assert r["label"] in result["profiles"], f"missed {r['label']} without a profile"


def test_span_row_measures_hrm_bare_logfire_and_off() -> None:
    """The span row times all four variants and reports the three issue-3 ratios."""
    result = bench_span.run(quick=True)
    _check_row(result, "span")
    assert len(result["variants"]) == 4
    labels = {r["label"] for r in result["ratios"]}
    assert labels == {"HRM / bare SDK span", "HRM / Logfire span", "tracing off / 1 µs budget"}


def test_ledger_row_compares_chained_appends_with_plain_writes() -> None:
    """The ledger row times plain (stdlib and orjson) writes, Ledger.append_many, the exporter and the stock one."""
    result = bench_ledger.run(quick=True)
    _check_row(result, "ledger")
    names = [v["name"].split(" ")[0] for v in result["variants"]]
    assert names == ["plain", "plain", "Ledger.append_many", "LedgerLogExporter.export", "stock"]
    assert "orjson" in result["variants"][1]["name"]


def test_report_writes_table_and_chart(tmp_path: Path) -> None:
    """The report has one table line per ratio, says which targets were missed, and draws the PNG."""
    from benchmarks import ratio, row, variant

    results = [
        row(
            "a",
            "Row A",
            variants=[variant("x", [1000, 2000, 3000])],
            ratios=[ratio("HRM / bare SDK span", 1.5), ratio("x / y (context)", 9.0, 0.1, "<=", "no goal")],
            profiles={"HRM / bare SDK span": "some profile"},
        ),
        row(
            "b",
            "Row B",
            status="pending",
            note="not built yet",
            ratios=[ratio("bridge ingest / bare decode", None)],
        ),
    ]
    meta = {
        "mode": "quick",
        "date": "today",
        "elapsed_s": 1.0,
        "load_before": "0",
        "load_after": "0",
        "machine": {"CPU": "test"},
        "versions": {"Python": "3"},
    }
    md, png = tmp_path / "P.md", tmp_path / "p.png"
    report.write(results, meta, md, png)
    text = md.read_text()
    # Only the table's targets count: the row's own "target" for x / y is context.
    assert "**0 of 1 targets met.** Missed: HRM / bare SDK span = 1.50 (target ≤ 1.3)" in text
    assert "| 2 | b |" in text and "pending" in text
    assert "some profile" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runner_runs_a_row_in_its_own_process_and_writes_the_report(tmp_path: Path) -> None:
    """`python -m benchmarks --quick --only ledger` exits 0 and writes the report where told."""
    import subprocess
    import sys

    from benchmarks import ROOT, clean_env

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "ledger", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "PERFORMANCE.quick.partial.md").read_text()
    assert "Ledger append" in text and "## Machine and versions" in text
    assert (tmp_path / "performance.quick.partial.png").exists()


def test_redact_row_times_lines_and_hostile_inputs() -> None:
    """The redaction row times the 1 KB lines against the formatter and the hostile 100 KB inputs."""
    from benchmarks import bench_redact

    result = bench_redact.run(quick=True)
    _check_row(result, "redact")
    labels = {r["label"] for r in result["ratios"]}
    assert (
        "clean 1 KB line / 20 µs budget" in labels and "worst hostile 100 KB input / 10 ms budget" in labels
    )


def test_only_the_target_table_judges() -> None:
    """A ratio is judged only when its label is in benchmarks/targets.py; every target there is
    computed by some row module (by its exact label)."""
    from benchmarks import ratio
    from benchmarks.targets import TARGETS

    assert ratio("made-up / anything", 5.0, 1.0, "<=", "issue 99")["target"] is None
    judged = ratio("storm CPU per error, same / plain OTel", 0.2)
    assert judged["target"] == 0.3 and judged["met"] is True
    sources = "".join(p.read_text() for p in (Path(__file__).parent.parent / "benchmarks").glob("bench_*.py"))
    # Every string literal of the rows, f-string fields as wildcards: a label must be one of them.
    literals = [
        re.compile(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(m)) + "$")
        for m in re.findall(r'f?"([^"\n]+)"', sources)
    ]
    for t in TARGETS:
        assert any(lit.match(t.label) for lit in literals), t.label


def test_quick_check_fails_a_figure_more_than_3x_off(tmp_path: Path) -> None:
    """The quick run's check names a figure more than 3x off its target, and passes one within 3x."""
    from benchmarks import ratio, row
    from benchmarks.__main__ import far_off

    ok = row("span", "s", ratios=[ratio("HRM / bare SDK span", 3.5)])  # 2.7x off: quick tolerates it
    bad = row("storm", "t", ratios=[ratio("storm errors unaccounted for, same (count)", 4.0)])
    assert far_off([ok]) == []
    (line,) = far_off([ok, bad])
    assert "storm errors unaccounted for, same (count)" in line


def test_quick_check_holds_an_open_target_to_where_it_stands() -> None:
    """A target still missed while its issue is open is judged against its standing figure: the
    report still says missed, the quick check catches a figure 3x worse than that standing."""
    from benchmarks import ratio, row
    from benchmarks.__main__ import far_off
    from benchmarks.targets import lookup

    goal = lookup("bridge ingest (http) / bare decode")
    assert goal is not None and goal.open_at is not None and goal.open_issue == 13
    standing = row("ingest", "i", ratios=[ratio(goal.label, goal.open_at)])
    assert standing["ratios"][0]["met"] is False  # still a miss in the report
    assert far_off([standing]) == []
    (line,) = far_off([row("ingest", "i", ratios=[ratio(goal.label, goal.open_at / 4)])])
    assert "open in issue 13" in line


def test_a_known_miss_of_a_resolved_issue_is_still_reported_missed() -> None:
    """A miss named in a resolved issue's note keeps its standing: "missed" in the report, "a
    known miss" in the list, and the quick check still catches a figure 3x worse."""
    from benchmarks import ratio, row
    from benchmarks.__main__ import far_off
    from benchmarks.report import _summary
    from benchmarks.targets import lookup

    goal = lookup("1 KB line with secrets / 20 µs budget")
    assert goal is not None and goal.open_at is not None and goal.open_issue is None
    standing = row("redact", "r", ratios=[ratio(goal.label, goal.open_at)])
    assert standing["ratios"][0]["met"] is False
    _, _, missed, _ = _summary([standing])
    assert any("a known miss" in ln for ln in missed)
    assert far_off([standing]) == []
    (line,) = far_off([row("redact", "r", ratios=[ratio(goal.label, goal.open_at * 4)])])
    assert "a known miss at" in line


def test_full_run_refuses_a_dirty_tree() -> None:
    """`python -m benchmarks --full` will not write docs/PERFORMANCE.md from uncommitted changes."""
    import subprocess
    import sys

    from benchmarks import ROOT, clean_env

    marker = ROOT / "bench-dirty-marker.tmp"  # untracked: makes the tree dirty if it was clean
    marker.write_text("x")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--full"],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        marker.unlink()
    assert done.returncode == 2
    assert "uncommitted changes" in done.stderr and "bench-dirty-marker.tmp" in done.stderr
