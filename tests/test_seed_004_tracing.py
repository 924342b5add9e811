"""seeds/004 promises: generate_id, TraceEvent, int durations, settings.yaml, --trace, threads, live tree."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from membrane_otel import tracer
from membrane_otel.spans import ConsoleTreeSpanExporter, TraceEvent
from tests._helpers import INSTRUMENT, clean_env, read_ledger, run_instrumented
from tests.test_console import MS, T0, hrm, readable

APP = """
from membrane_otel import tracer
with tracer.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
    with tracer.span("mem", "write", "manager.py", "altitude.session") as inner:
        inner.set_output("written", tokens_saved=45)
    ctx.set_output("success")
"""


def test_generate_id_is_the_seeds_format() -> None:
    """tracer.generate_id(layer) gives {code}_{unix seconds}_{4 hex}, for a code or a name."""
    assert re.fullmatch(r"alt_\d{10}_[0-9a-f]{4}", tracer.generate_id("alt"))
    assert re.fullmatch(r"mem_\d{10}_[0-9a-f]{4}", tracer.generate_id("memory"))


def test_trace_event_reads_a_ledger_span_line_with_an_int_duration(tmp_path: Path) -> None:
    """A real hrm_trace ledger line reads back as the seed's TraceEvent; duration_ms is an int."""
    script = tmp_path / "app.py"
    script.write_text(APP)
    proc = run_instrumented(script, clean_env(tmp_path, MEMBRANE_TRACE="1"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "hrm_trace"]
    events = {e.operation: e for e in (TraceEvent.from_line(ln) for ln in lines)}
    assert set(events) == {"transition", "write"}
    assert all(type(ln["duration_ms"]) is int for ln in lines)
    write = events["write"]
    assert write.parent_id == events["transition"].trace_id and write.metadata == {"tokens_saved": 45}
    assert write.to_dict()["hrm_layer"] == "memory"


def test_trace_event_refuses_a_non_trace_line() -> None:
    """A line that is not a trace line is a ValueError naming the missing field."""
    with pytest.raises(ValueError, match="'trace_id'"):
        TraceEvent.from_line({"event": "task_started"})


def test_settings_yaml_in_the_working_directory_is_picked_up(tmp_path: Path) -> None:
    """config/settings.yaml turns tracing on; output: trace.jsonl gets lines in addition to the ledger."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.yaml").write_text(
        "tracing:\n  enabled: true\n  output: trace.jsonl\n  level: info\n"
    )
    script = tmp_path / "app.py"
    script.write_text(APP)
    proc = run_instrumented(script, clean_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[alt] transition: L3→L2 → success (" in proc.stderr
    seed_lines = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert sorted(ln["operation"] for ln in seed_lines) == ["transition", "write"]
    assert set(seed_lines[0]) == set(TraceEvent.__dataclass_fields__), "exactly the seed's fields"
    ledger = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "hrm_trace"]
    assert len(ledger) == 2, "the ledger keeps its span lines too"


def test_settings_yaml_of_someone_else_is_ignored(tmp_path: Path) -> None:
    """A config/settings.yaml with no tracing section (the app's own) changes nothing."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.yaml").write_text("enabled: true\noutput: elsewhere.jsonl\n")
    script = tmp_path / "app.py"
    script.write_text(APP)
    proc = run_instrumented(script, clean_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "[alt]" not in proc.stderr and not (tmp_path / "elsewhere.jsonl").exists()


FLAG_APP = """
import argparse, membrane_otel
from membrane_otel import tracer
parser = argparse.ArgumentParser()
membrane_otel.add_trace_flag(parser)
args = parser.parse_args()
print("trace flag", args.trace)
with tracer.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
    ctx.set_output("success")
"""


def test_trace_flag_under_the_wrapper(tmp_path: Path) -> None:
    """add_trace_flag(parser): --trace prints the tree and writes span lines; without it, nothing.

    (``--`` ends the wrapper's own options: it would take ``--trace`` as ``--traces_exporter``.)
    """
    script = tmp_path / "flag.py"
    script.write_text(FLAG_APP)
    proc = subprocess.run(
        [str(INSTRUMENT), "--", sys.executable, str(script), "--trace"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trace flag True" in proc.stdout
    assert "[alt] transition: L3→L2 → success (" in proc.stderr
    assert [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "hrm_trace"]
    (tmp_path / "off").mkdir()
    off = run_instrumented(script, clean_env(tmp_path / "off"))
    assert "trace flag False" in off.stdout and "[alt]" not in off.stderr


def test_trace_flag_without_the_wrapper(tmp_path: Path) -> None:
    """Without opentelemetry-instrument, --trace sets the SDK up with tracing on."""
    script = tmp_path / "flag.py"
    script.write_text(FLAG_APP)
    proc = subprocess.run(
        [sys.executable, str(script), "--trace"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[alt] transition: L3→L2 → success (" in proc.stderr


THREADS = """
import threading
from concurrent.futures import ThreadPoolExecutor
from membrane_otel import tracer
def work(name):
    with tracer.span("mem", "write", "worker.py", name):
        pass
with tracer.span("alt", "execute", "main.py", "fan out"):
    t = threading.Thread(target=work, args=("in thread",))
    t.start(); t.join()
    with ThreadPoolExecutor(2) as pool:
        pool.submit(work, "in executor").result()
"""


def test_threads_and_executor_tasks_are_children_of_the_span_that_started_them(tmp_path: Path) -> None:
    """The OTel threading instrumentation (enabled by the distro) carries the span into threads."""
    script = tmp_path / "threads.py"
    script.write_text(THREADS)
    for run in (
        lambda: run_instrumented(script, clean_env(tmp_path, MEMBRANE_TRACE="1")),
        lambda: subprocess.run(
            [sys.executable, "-c", "import membrane_otel; membrane_otel.configure()\n" + THREADS],
            env=clean_env(tmp_path, MEMBRANE_TRACE="1"),
            capture_output=True,
            text=True,
            timeout=60,
        ),
    ):
        (tmp_path / "ledger.jsonl").unlink(missing_ok=True)
        proc = run()
        assert proc.returncode == 0, proc.stderr
        lines = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "hrm_trace"]
        root = next(ln for ln in lines if ln["operation"] == "execute")
        children = [ln for ln in lines if ln["operation"] == "write"]
        assert len(children) == 2
        assert all(c["parent_id"] == root["trace_id"] for c in children), children
        assert all(c["otel_trace_id"] == root["otel_trace_id"] for c in children)


def test_console_tree_of_a_long_running_root_shows_children_as_they_end() -> None:
    """A root running past hold_s: each finished child prints when it arrives; the root line at its end."""
    out = io.StringIO()
    now = [T0]
    exporter = ConsoleTreeSpanExporter(out, colour=False, level="info", hold_s=1.0, clock=lambda: now[0])
    root = hrm("00000000000000a1", None, "altitude", "execute", "long job", "done", 0, 60_000)
    first = hrm("00000000000000b1", root.span_id, "memory", "read", "state", "read", 10, 5)
    second = hrm("00000000000000b2", root.span_id, "focus", "route", "signal", "routed", 5_000, 20)
    now[0] = T0 + 20 * MS  # the first child ends while the root is young: held, as before
    exporter.export([readable(first)])
    assert out.getvalue() == ""
    now[0] = T0 + 5_020 * MS  # 5 s in: both finished children print, under the running root
    exporter.export([readable(second)])
    assert out.getvalue().splitlines() == [
        "  └─[mem] read: state → read (5ms)",
        "  └─[foc] route: signal → routed (20ms)",
    ]
    now[0] = T0 + 60_000 * MS
    exporter.export([readable(root)])
    assert out.getvalue().splitlines()[-1] == "[alt] execute: long job → done (60000ms)"
