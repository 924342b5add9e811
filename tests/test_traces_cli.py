"""``membrane-otel traces view|stats`` over the ledger of a real program run under the distro."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from membrane_otel.cli import main
from membrane_otel.ledger._reader import ledger_files, read_lines
from membrane_otel.ledger._writer import Ledger
from tests._helpers import BIN, clean_env, run_instrumented

# The seed's API, nested, in two threads tracing at once, in a pool carrying its parent
# (tracer.wrap), in asyncio tasks under gather, with an error and a blocked gate.
PROGRAM = """
import asyncio, threading
from concurrent.futures import ThreadPoolExecutor
from membrane_otel import tracer

def request(n):
    with tracer.span("alt", "transition", "altitude.py", f"req{n}") as ctx:
        with tracer.span("foc", "gate_check", "gates.py", f"gate{n}") as gate:
            with tracer.span("mem", "write", "manager.py", f"key{n}") as mem:
                mem.set_output("written", tokens_saved=n, tier="warm")
            gate.set_output("allowed")
        ctx.set_output("success", reason="user requested tactical")

barrier = threading.Barrier(2)
def worker(k):
    barrier.wait()
    for i in range(3):
        request(k * 10 + i)
threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2)]
for t in threads: t.start()
for t in threads: t.join()

def fetch(i):
    tracer.event("mem", "read", "manager.py", f"item{i}", "hit", metadata={"tier": "hot"})
with tracer.span("sys", "execute", "pool.py", "fanout") as fan:
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(tracer.wrap(fetch), range(3)))
    fan.set_output("done")

async def task(n):
    with tracer.span("rsn", "classify", "reasoner.py", f"task{n}") as c:
        await asyncio.sleep(0)
        with tracer.span("lrn", "pattern_match", "learner.py", f"pattern{n}") as p:
            await asyncio.sleep(0.001 * n)
            p.set_output(f"P-{n}", confidence=0.5)
        c.set_output(f"kind{n}")
async def plan():
    with tracer.span("alt", "plan", "planner.py", "async plan") as root:
        await asyncio.gather(*(task(n) for n in range(4)))
        root.set_output("planned")
asyncio.run(plan())

with tracer.span("foc", "route", "router.py", "signal") as route:
    tracer.event("foc", "consent_check", "consent.py", "send_email", "denied", status="blocked",
                 metadata={"blocked_reason": "no consent"})
    try:
        with tracer.span("sys", "execute", "tools.py", "flaky"):
            raise RuntimeError("backend down token=abc123secretvalue")
    except RuntimeError:
        pass
    route.set_output("routed")
"""

DURATION = re.compile(r"\(\d+ms\)")


class Run:
    def __init__(self, ledger: Path, stderr: str) -> None:
        self.ledger = ledger
        self.stderr = stderr
        self.lines = [ln for ln in read_lines(ledger) if ln.get("event") == "hrm_trace"]
        self.by_input = {ln["input_summary"]: ln for ln in self.lines}

    def console_trees(self) -> list[list[str]]:
        """The trees the console exporter printed, durations blanked."""
        trees: list[list[str]] = []
        for line in self.stderr.splitlines():
            if line.startswith("["):
                trees.append([DURATION.sub("(Xms)", line)])
            elif line.lstrip().startswith("└─") and trees:
                trees[-1].append(DURATION.sub("(Xms)", line))
        return trees


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("traces")
    script = tmp / "program.py"
    script.write_text(PROGRAM)
    env = clean_env(tmp, MEMBRANE_TRACE="1", NO_COLOR="")
    proc = run_instrumented(script, env)
    assert proc.returncode == 0, proc.stderr
    return Run(tmp / "ledger.jsonl", proc.stderr)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["traces", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- the ledger


def test_ledger_holds_the_right_trees(run: Run) -> None:
    """Nested, threaded, pooled and asyncio spans all carry their true parents in the ledger."""
    by = run.by_input
    assert len(run.lines) == 6 * 3 + (1 + 3) + (1 + 4 * 2) + 3 == len(by)

    def parent(child: str, expected: str | None) -> None:
        line = by[child]
        if expected is None:
            assert line["parent_id"] is None and line["otel_parent_span_id"] is None
        else:
            assert line["parent_id"] == by[expected]["trace_id"], child
            assert line["otel_parent_span_id"] == by[expected]["otel_span_id"], child
            assert line["otel_trace_id"] == by[expected]["otel_trace_id"], child

    for n in (10, 11, 12, 20, 21, 22):  # two threads at once: each request its own tree
        parent(f"req{n}", None)
        parent(f"gate{n}", f"req{n}")
        parent(f"key{n}", f"gate{n}")
    for i in range(3):  # pool workers given the caller's context
        parent(f"item{i}", "fanout")
    parent("async plan", None)
    for n in range(4):  # tasks under gather
        parent(f"task{n}", "async plan")
        parent(f"pattern{n}", f"task{n}")
    parent("send_email", "signal")
    parent("flaky", "signal")
    assert by["flaky"]["status"] == "error" and by["send_email"]["status"] == "blocked"
    assert "abc123secretvalue" not in "".join(json.dumps(ln) for ln in read_lines(run.ledger))
    assert by["key21"]["metadata"] == {"tokens_saved": 21, "tier": "warm"}
    # The seed's metadata["error"] is str(e); the type rides along.
    assert by["flaky"]["metadata"] == {"error": "backend down token=<REDACTED>", "error_type": "RuntimeError"}


def test_view_trace_id_shows_the_whole_request_as_the_console_did(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    """--trace-id of any span (even a leaf) prints its whole request, the same tree the console printed."""
    trees = run.console_trees()
    for leaf in ("key21", "item2", "pattern3", "flaky", "req10"):
        code, out, _ = cli(
            capsys, "view", "--ledger", str(run.ledger), "--trace-id", run.by_input[leaf]["trace_id"]
        )
        assert code == 0
        shown = [DURATION.sub("(Xms)", ln) for ln in out.splitlines()]
        assert shown in trees, f"{leaf}: {shown}"
    code, out, _ = cli(
        capsys, "view", "--ledger", str(run.ledger), "--trace-id", run.by_input["pattern3"]["trace_id"]
    )
    assert out.splitlines()[0].startswith("[alt] plan: async plan → planned (")
    assert len(out.splitlines()) == 9


def test_console_printed_the_seed_format(run: Run) -> None:
    """The console tree of a threaded request reads exactly as the seed's example."""
    assert [
        "[alt] transition: req21 → success (Xms)",
        "  └─[foc] gate_check: gate21 → allowed (Xms)",
        "      └─[mem] write: key21 → written (Xms) [saved 21 tokens]",
    ] in run.console_trees()


def test_view_trace_id_accepts_otel_ids(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """The OTel trace id (as Jaeger shows it) finds the same tree as the readable id."""
    leaf = run.by_input["item1"]
    _, by_readable, _ = cli(capsys, "view", "--ledger", str(run.ledger), "--trace-id", leaf["trace_id"])
    _, by_otel, _ = cli(capsys, "view", "--ledger", str(run.ledger), "--trace-id", leaf["otel_trace_id"])
    assert by_readable == by_otel and by_otel.startswith("[sys] execute: fanout → done (")


def test_view_filters_by_layer_status_and_count(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """--hrm (code or name), --status and --last select spans; each span shows once."""
    ledger = str(run.ledger)
    _, by_code, _ = cli(capsys, "view", "--ledger", ledger, "--hrm", "mem", "--last", "0")
    _, by_name, _ = cli(capsys, "view", "--ledger", ledger, "--hrm", "memory", "--last", "0")
    assert by_code == by_name
    assert len(by_code.splitlines()) == 9 and all(ln.startswith("[mem] ") for ln in by_code.splitlines())
    _, errors, _ = cli(capsys, "view", "--ledger", ledger, "--status", "error")
    assert re.fullmatch(
        r"\[sys\] execute: flaky → error \(\d+ms\) \[error: RuntimeError: backend down token=<REDACTED>\]\n",
        errors,
    )
    _, blocked, _ = cli(capsys, "view", "--ledger", ledger, "--status", "blocked", "--hrm", "foc")
    assert blocked.startswith("[foc] consent_check: send_email → denied (") and blocked.count("\n") == 1
    _, last, _ = cli(capsys, "view", "--ledger", ledger, "--last", "3", "--json")
    assert [ln["input_summary"] for ln in json.loads(last)] == ["signal", "send_email", "flaky"]


def test_view_json_is_the_ledger_lines(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one valid JSON array of the selected ledger lines, seed fields included."""
    code, out, _ = cli(capsys, "view", "--ledger", str(run.ledger), "--hrm", "lrn", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 4
    for row in rows:
        for key in ("trace_id", "parent_id", "timestamp", "hrm_layer", "operation", "component", "input_summary",
                    "output_summary", "duration_ms", "status", "metadata", "otel_trace_id", "otel_span_id"):  # fmt: skip
            assert key in row


def test_stats_match_the_ledger(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """Per-layer ops, mean, p95 (nearest rank), errors and blocked equal what the ledger holds."""
    code, out, _ = cli(capsys, "stats", "--ledger", str(run.ledger), "--json", "--top", "3")
    stats = json.loads(out)
    assert code == 0 and stats["events"] == len(run.lines)
    assert list(stats["layers"]) == ["altitude", "focus", "reasoning", "learning", "memory", "system"]
    for layer, got in stats["layers"].items():
        mine = [ln for ln in run.lines if ln["hrm_layer"] == layer]
        ms = sorted(ln["duration_ms"] for ln in mine)
        assert got["ops"] == len(mine)
        assert got["mean_ms"] == pytest.approx(sum(ms) / len(ms), abs=1e-3)
        assert got["p95_ms"] == pytest.approx(ms[math.ceil(0.95 * len(ms)) - 1], abs=1e-3)
        assert got["errors"] == sum(ln["status"] == "error" for ln in mine)
        assert got["blocked"] == sum(ln["status"] == "blocked" for ln in mine)
    assert stats["layers"]["system"]["errors"] == 1 and stats["layers"]["focus"]["blocked"] == 1
    slowest = sorted(run.lines, key=lambda ln: ln["duration_ms"], reverse=True)[:3]
    assert [s["trace_id"] for s in stats["slowest"]] == [ln["trace_id"] for ln in slowest]


def test_stats_layer_filter_and_last(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """--hrm narrows stats to one layer; --last N counts only the last N events."""
    _, out, _ = cli(capsys, "stats", "--ledger", str(run.ledger), "--json", "--hrm", "rsn")
    assert list(json.loads(out)["layers"]) == ["reasoning"]
    _, out, _ = cli(capsys, "stats", "--ledger", str(run.ledger), "--json", "--last", "2")
    assert json.loads(out)["events"] == 2


def test_stats_text_is_aligned_and_plain_when_piped(run: Run) -> None:
    """Piped, the table has no escapes and its columns line up; --color always adds them."""
    exe = str(BIN / "membrane-otel")
    piped = subprocess.run(
        [exe, "traces", "stats", "--ledger", str(run.ledger)], capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert "\x1b[" not in piped.stdout
    assert lines[0] == f"HRM layer stats (last {len(run.lines)} events)"
    table = lines[1:8]
    assert table[0].split() == ["layer", "ops", "mean", "ms", "p95", "ms", "errors", "blocked"]
    assert len({len(row) for row in table}) == 1, "right-aligned columns end together"
    assert "Slowest operations:" in lines and lines[-1].startswith("  5. ")
    coloured = subprocess.run(
        [exe, "traces", "stats", "--ledger", str(run.ledger), "--color", "always"],
        capture_output=True,
        text=True,
    )
    assert re.search(r"\x1b\[31m *1\x1b\[0m", coloured.stdout), "the error count is red"


def test_default_ledger_comes_from_the_settings(
    run: Run, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --ledger the path is MEMBRANE_LEDGER_PATH (as the settings read it)."""
    monkeypatch.setenv("MEMBRANE_LEDGER_PATH", str(run.ledger))
    code, out, _ = cli(capsys, "stats", "--json")
    assert code == 0 and json.loads(out)["events"] == len(run.lines)


def test_bad_input_gets_one_clear_line(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown layer: exit 2; missing ledger or unknown id: exit 1; each with one line why."""
    code, _, err = cli(capsys, "view", "--ledger", str(run.ledger), "--hrm", "cortex")
    assert code == 2 and err.startswith("membrane-otel traces: unknown HRM layer 'cortex'")
    code, _, err = cli(capsys, "view", "--ledger", str(tmp_path / "none.jsonl"))
    assert code == 1 and "no ledger at" in err
    code, _, err = cli(capsys, "view", "--ledger", str(run.ledger), "--trace-id", "alt_0_ffff")
    assert code == 1 and err == f"membrane-otel traces: no span with id alt_0_ffff in {run.ledger}\n"


def test_view_follows_rotated_files(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A request whose spans were rotated into several files still shows whole."""
    rotating = Ledger(tmp_path / "ledger.jsonl", max_bytes=3000)
    chain = ("seq", "prev_hash", "hash")
    for i in range(0, len(run.lines), 3):
        rotating.append_many([{k: v for k, v in ln.items() if k not in chain} for ln in run.lines[i : i + 3]])
    rotating.close()
    assert len(ledger_files(tmp_path / "ledger.jsonl")) > 3
    leaf = run.by_input["pattern1"]["trace_id"]
    _, rotated, _ = cli(capsys, "view", "--ledger", str(tmp_path / "ledger.jsonl"), "--trace-id", leaf)
    _, original, _ = cli(capsys, "view", "--ledger", str(run.ledger), "--trace-id", leaf)
    assert rotated == original and len(rotated.splitlines()) == 9


SEED_JSONL = """\
{"trace_id":"alt_1705180800_a3f2","parent_id":null,"timestamp":"2026-01-13T14:00:00","hrm_layer":"altitude","operation":"transition","component":"altitude.py","input_summary":"L3→L2","output_summary":"success","duration_ms":5,"status":"success","metadata":{"reason":"user requested tactical"}}
{"trace_id":"foc_1705180801_b7c1","parent_id":"alt_1705180800_a3f2","timestamp":"2026-01-13T14:00:01","hrm_layer":"focus","operation":"gate_check","component":"gates.py","input_summary":"WriteApprovalGate","output_summary":"allowed","duration_ms":2,"status":"success","metadata":{"user_consent":true}}
{"trace_id":"mem_1705180802_c8d2","parent_id":"foc_1705180801_b7c1","timestamp":"2026-01-13T14:00:02","hrm_layer":"memory","operation":"write","component":"manager.py","input_summary":"altitude.session","output_summary":"written","duration_ms":3,"status":"success","metadata":{"tokens_saved":45,"tier":"warm"}}
"""


def test_the_seeds_own_trace_jsonl_renders_the_seeds_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed's example trace.jsonl, found by its leaf's id via parent_id links, prints the seed's tree."""
    path = tmp_path / "trace.jsonl"
    path.write_text(SEED_JSONL)
    code, out, _ = cli(capsys, "view", "--ledger", str(path), "--trace-id", "mem_1705180802_c8d2")
    assert code == 0
    assert out == (
        "[alt] transition: L3→L2 → success (5ms)\n"
        "  └─[foc] gate_check: WriteApprovalGate → allowed (2ms)\n"
        "      └─[mem] write: altitude.session → written (3ms) [saved 45 tokens]\n"
    )


def test_cli_module_imports_nothing_heavy() -> None:
    """Importing the traces CLI module loads neither the OTel SDK nor pydantic."""
    code = (
        "import sys, membrane_otel.cli.traces as t; "
        "print(any(m.startswith(('opentelemetry', 'pydantic')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
