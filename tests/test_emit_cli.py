"""`membrane-otel emit` (the shell emitter) and `membrane-otel ledger tail|query|stats`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from membrane_otel.cli.emit import parse_value
from membrane_otel.cli.ledger import parse_when, render
from membrane_otel.ledger._reader import read_lines
from membrane_otel.ledger._verify import verify
from membrane_otel.ledger._writer import Ledger
from tests._helpers import BIN, clean_env

CLI = str(BIN / "membrane-otel")


def _run(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=clean_env(tmp, **env), capture_output=True, text=True, timeout=60)


def _ledger(tmp: Path) -> list[dict[str, object]]:
    return list(read_lines(tmp / "ledger.jsonl"))


# --------------------------------------------------------------------------- emit


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("42", 42), ("-7", -7), ("0", 0), ("0.786", 0.786), ("-1.5", -1.5),
        ("true", True), ("False", False), ("null", None),
        ("007", "007"), ("1e3", "1e3"), ("0x10", "0x10"), ("1.2.3", "1.2.3"), ("HEALTHY", "HEALTHY"),
        ("", ""), ("a=b", "a=b"), ("1.", "1."),
    ],
)  # fmt: skip
def test_param_values_are_typed_like_a_shell_user_means(raw: str, value: object) -> None:
    """-p values: plain ints, floats, true/false/null typed; ids and versions stay strings."""
    assert parse_value(raw) == value and type(parse_value(raw)) is type(value)


def test_emit_appends_one_chained_line(tmp_path: Path) -> None:
    """`emit health_check -p … --session-id` appends the seed's line to $MEMBRANE_LEDGER_PATH."""
    proc = _run(
        tmp_path, "emit", "health_check", "-p", "status=HEALTHY", "-p", "confidence=0.786",
        "-p", "quality=0.691", "--session-id", "s-1", "--task-id", "t-1", "--persona-id", "gitko",
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    (line,) = _ledger(tmp_path)
    assert list(line)[:3] == ["event", "ts", "ts_unix"]
    assert line["event"] == "health_check" and line["status"] == "HEALTHY"
    assert line["confidence"] == 0.786 and line["quality"] == 0.691
    assert (line["task_id"], line["persona_id"], line["session_id"]) == ("t-1", "gitko", "s-1")
    assert line["seq"] == 1 and verify(tmp_path / "ledger.jsonl").ok


def test_payload_json_and_params_combine(tmp_path: Path) -> None:
    """--payload gives fields, -p adds or overrides them, KEY:=JSON takes a raw JSON value."""
    proc = _run(
        tmp_path, "emit", "migration", "--payload", '{"action": "started", "files_moved": 1}',
        "-p", "files_moved=12", "-p", "paths:=[\"D:/a\", \"C:/b\"]", "-p", "from=D:\\nas_backup",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (line,) = _ledger(tmp_path)
    assert line["action"] == "started" and line["files_moved"] == 12
    assert line["paths"] == ["D:/a", "C:/b"] and line["from"] == "D:\\nas_backup"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--payload", "{not json"], "--payload is not valid JSON"),
        (["--payload", "[1, 2]"], "--payload must be a JSON object"),
        (["-p", "novalue"], "expected KEY=VALUE"),
        (["-p", "k:={bad"], "not valid JSON"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Malformed payloads exit non-zero with one readable line; the ledger is untouched."""
    proc = _run(tmp_path, "emit", "eval", *args)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "ledger.jsonl").exists()


def test_ledger_option_and_seed_alias(tmp_path: Path) -> None:
    """--ledger wins; without it $AGI_LEDGER_PATH (the seed's name) is honoured."""
    env = {"MEMBRANE_LEDGER_PATH": ""}
    assert _run(tmp_path, "emit", "eval", "--ledger", str(tmp_path / "a.jsonl"), **env).returncode == 0
    assert _run(tmp_path, "emit", "eval", AGI_LEDGER_PATH=str(tmp_path / "b.jsonl"), **env).returncode == 0
    assert (
        len(list(read_lines(tmp_path / "a.jsonl"))) == 1 and len(list(read_lines(tmp_path / "b.jsonl"))) == 1
    )


def test_echo_prints_the_line(tmp_path: Path) -> None:
    """--echo prints the written line (JSON) for scripts that want it."""
    proc = _run(tmp_path, "emit", "system_startup", "-p", "component=quick_status", "--echo")
    shown = json.loads(proc.stdout)
    assert shown["event"] == "system_startup" and shown["component"] == "quick_status"
    assert shown["record_id"] == _ledger(tmp_path)[0]["record_id"]


def test_emit_joins_the_chain_other_writers_use(tmp_path: Path) -> None:
    """Shell emits and in-process appends interleave into one chain."""
    led = Ledger(tmp_path / "ledger.jsonl")
    for i in range(3):
        led.append({"event": "eval", "i": i})
        assert _run(tmp_path, "emit", "health_check", "-p", f"i={i}").returncode == 0
    lines = _ledger(tmp_path)
    assert [ln["seq"] for ln in lines] == list(range(1, 7))
    assert verify(tmp_path / "ledger.jsonl").ok


def test_emit_imports_neither_the_sdk_nor_pydantic(tmp_path: Path) -> None:
    """The shell emitter pays only for the standard library (start-up time is its feature)."""
    code = (
        "import sys\n"
        "from membrane_otel.cli import main\n"
        f"rc = main(['emit', 'eval', '-p', 'q=1', '--ledger', {str(tmp_path / 'l.jsonl')!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules if m.startswith(('opentelemetry', 'pydantic'))})\n"
        "print(rc, heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(tmp_path)
    )
    assert proc.stdout.strip() == "0 []", proc.stderr
    assert len(list(read_lines(tmp_path / "l.jsonl"))) == 1


# --------------------------------------------------------------------------- ledger tail / query / stats


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A ledger with lifecycle events, an alert, narratives and one old line (3 hours ago)."""
    led = Ledger(tmp_path / "ledger.jsonl")
    now = time.time()
    rows = [
        {"event": "task_started", "ts_unix": now - 3 * 3600, "task_id": "t1", "persona_id": "gitko", "goal": "g"},
        {"event": "task_completed", "ts_unix": now - 60, "task_id": "t1", "quality": 0.85},
        {"event": "alert_triggered", "ts_unix": now - 50, "level": "warning", "message": "proxy down"},
        {"event": "narrative.dispatch_intent_to_worker", "ts_unix": now - 40, "session_id": "s1",
         "narrative.who": "htm_orchestrator", "narrative.what": "dispatch_intent_to_worker"},
        {"event": "narrative.shed_load", "ts_unix": now - 30,
         "narrative.who": "htm_orchestrator", "narrative.what": "shed_load"},
        {"event": "task_started", "ts_unix": now - 20, "task_id": "t2", "persona_id": "sena"},
    ]  # fmt: skip
    for row in rows:
        led.append({"event": row["event"], "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["ts_unix"])),
                    **{k: v for k, v in row.items() if k != "event"}})  # fmt: skip
    return tmp_path


def _events(out: str) -> list[str]:
    return [json.loads(ln)["event"] for ln in out.splitlines()]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--event", "task_*"], ["task_started", "task_completed", "task_started"]),
        (["--task-id", "t1"], ["task_started", "task_completed"]),
        (["--persona", "sena"], ["task_started"]),
        (["--session", "s1"], ["narrative.dispatch_intent_to_worker"]),
        (["--actor", "htm_orchestrator"], ["narrative.dispatch_intent_to_worker", "narrative.shed_load"]),
        (["--action", "shed_load"], ["narrative.shed_load"]),
        (["--since", "1h"], ["task_completed", "alert_triggered", "narrative.dispatch_intent_to_worker",
                             "narrative.shed_load", "task_started"]),
        (["--until", "2h"], ["task_started"]),
        (["--match", "level=warning"], ["alert_triggered"]),
        (["--event", "task_*", "--limit", "2"], ["task_completed", "task_started"]),
    ],
)  # fmt: skip
def test_query_filters(sample: Path, filters: list[str], expected: list[str]) -> None:
    """query by event glob, ids, narrative actor/action, time range, field, limit (the most recent)."""
    proc = _run(sample, "ledger", "query", "--json", *filters)
    assert proc.returncode == 0, proc.stderr
    assert _events(proc.stdout) == expected


def test_query_json_lines_are_the_raw_ledger_lines(sample: Path) -> None:
    """--json prints the lines exactly as stored, chain fields included."""
    proc = _run(sample, "ledger", "query", "--json", "--event", "alert_triggered")
    stored = [ln for ln in (sample / "ledger.jsonl").read_text().splitlines() if "alert_triggered" in ln]
    assert proc.stdout.splitlines() == stored


def test_human_output_is_aligned_and_plain_when_piped(sample: Path) -> None:
    """Piped human output: no colour codes, events padded to one column width."""
    proc = _run(sample, "ledger", "query", "--event", "task_*")
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and "\x1b[" not in proc.stdout
    assert len({ln.index("task=") for ln in lines}) == 1  # the ids column lines up
    assert "persona=gitko" in lines[0] and "goal=g" in lines[0]
    coloured = _run(sample, "ledger", "query", "--event", "alert_*", "--color", "always")
    assert "\x1b[33malert_triggered" in coloured.stdout


def test_tail_shows_the_last_n(sample: Path) -> None:
    """tail -n 2 prints the two newest lines, oldest first."""
    proc = _run(sample, "ledger", "tail", "-n", "2", "--json")
    assert _events(proc.stdout) == ["narrative.shed_load", "task_started"]


def test_tail_reads_back_across_rotated_files(tmp_path: Path) -> None:
    """tail -n spans rotated files when the newest file is short."""
    led = Ledger(tmp_path / "ledger.jsonl", max_bytes=1500)
    for i in range(40):
        led.append({"event": "eval", "i": i})
    proc = _run(tmp_path, "ledger", "tail", "-n", "25", "--json")
    assert [json.loads(ln)["i"] for ln in proc.stdout.splitlines()] == list(range(15, 40))


def test_stats_counts_events_span_and_files(sample: Path) -> None:
    """stats --json: counts by event, time span, distinct ids, files and bytes."""
    proc = _run(sample, "ledger", "stats", "--json")
    stats = json.loads(proc.stdout)
    assert stats["lines"] == 6 and stats["events"]["task_started"] == 2
    assert stats["distinct"] == {"task_id": 2, "persona_id": 2, "session_id": 1}
    assert 3 * 3600 - 30 < stats["span_seconds"] < 3 * 3600
    assert stats["files"][0]["lines"] == 6 and stats["bytes"] == (sample / "ledger.jsonl").stat().st_size
    human = _run(sample, "ledger", "stats")
    assert "6 lines" in human.stdout and "task_started" in human.stdout


def test_verify_without_a_ledger_says_so(tmp_path: Path) -> None:
    """verify on a path with no ledger exits 2 with one line."""
    proc = _run(tmp_path, "ledger", "verify")
    assert proc.returncode == 2 and "no ledger at" in proc.stderr


def test_verify_json_report(sample: Path) -> None:
    """verify --json gives the report for scripts (ok, lines, last seq and hash)."""
    report = json.loads(_run(sample, "ledger", "verify", "--json").stdout)
    assert report["ok"] is True and report["lines"] == 6 and report["last_seq"] == 6
    assert report["problem"] is None and report["torn"] == []


def test_parse_when_accepts_durations_and_iso() -> None:
    """--since forms: 30m, 1h, 2d, 1w ago, or ISO 8601 with Z."""
    now = 1_000_000.0
    assert parse_when("30m", now) == now - 1800 and parse_when("2d", now) == now - 172800
    assert parse_when("1w", now) == now - 604800
    assert parse_when("2025-10-30T00:00:00Z") == 1761782400.0


def test_render_puts_ids_before_fields() -> None:
    """A rendered line: ts, event, ids, then fields; chain and bookkeeping fields hidden."""
    from membrane_otel.cli._output import _Style

    text = render(
        {"event": "eval", "ts": "T", "ts_unix": 1, "task_id": "t1", "quality": 0.85, "note": "two words",
         "seq": 1, "prev_hash": "0", "hash": "1", "record_id": "r", "service": "s"},
        _Style(False),
        6,
    )  # fmt: skip
    assert text == 'T                         eval    task=t1  quality=0.85  note="two words"'


def test_tail_follow_keeps_up_across_rotation(tmp_path: Path) -> None:
    """tail -f prints every appended line, also after the file is rotated under it."""
    import queue
    import threading

    path = tmp_path / "ledger.jsonl"
    led = Ledger(path, max_bytes=2000)
    led.append({"event": "eval", "i": -1})
    tail = subprocess.Popen(
        [CLI, "ledger", "tail", "-f", "-n", "1", "--json"], env=clean_env(tmp_path), stdout=subprocess.PIPE
    )
    assert tail.stdout is not None
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in tail.stdout], daemon=True)
    reader.start()
    seen: list[int] = []

    def read_until(n: int) -> None:
        deadline = time.monotonic() + 10
        while len(seen) < n:
            try:
                seen.append(json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic())))["i"])
            except queue.Empty:
                raise AssertionError(f"tail -f stalled after {seen[-3:]}") from None

    try:
        read_until(1)
        for i in range(60):
            led.append({"event": "eval", "i": i, "pad": "p" * 30})
        read_until(61)
    finally:
        tail.kill()
        tail.wait()
        reader.join(5)
        tail.stdout.close()
    assert seen == list(range(-1, 60))
    assert len(list(tmp_path.glob("ledger.0*.jsonl"))) >= 2


def test_fast_path_writes_what_argparse_would(tmp_path: Path) -> None:
    """fast_main (no argparse) and the argparse path give the same fields for the same command line."""
    from membrane_otel.cli import main
    from membrane_otel.cli.emit import fast_main

    argv = [
        "eval",
        "--payload",
        '{"a": 1}',
        "-p",
        "q=0.5",
        "--param=k:=[1]",
        "--task-id=t1",
        "--session-id",
        "s",
    ]
    assert fast_main([*argv, "--ledger", str(tmp_path / "fast.jsonl")]) == 0
    assert main(["emit", *argv, "--ledger", str(tmp_path / "slow.jsonl")]) == 0
    (fast,), (slow,) = read_lines(tmp_path / "fast.jsonl"), read_lines(tmp_path / "slow.jsonl")
    volatile = ("ts", "ts_unix", "record_id", "hash")
    assert {k: v for k, v in fast.items() if k not in volatile} == {
        k: v for k, v in slow.items() if k not in volatile
    }
    assert fast["k"] == [1] and fast["q"] == 0.5 and fast["task_id"] == "t1"


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["eval", "-h"], [], ["a", "b"], ["eval", "--unknown"], ["eval", "-p"], ["eval", "--ledger"]],
)
def test_fast_path_leaves_unusual_command_lines_to_argparse(argv: list[str]) -> None:
    """Help, unknown or incomplete options and wrong positional counts return None (argparse answers)."""
    from membrane_otel.cli.emit import fast_main

    assert fast_main(argv) is None


def test_fast_path_reports_a_bad_payload_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed payload through the fast path: exit 1 and one line on stderr."""
    from membrane_otel.cli.emit import fast_main

    assert fast_main(["eval", "--payload", "{x", "--ledger", str(tmp_path / "l.jsonl")]) == 1
    assert "--payload is not valid JSON" in capsys.readouterr().err
