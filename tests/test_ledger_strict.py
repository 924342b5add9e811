"""Strict verify, readers that skip unchained lines, and record text printed escaped.

Each attack test names what the code before issue 15 did with the same input: it passed
(an inserted line was a benign "torn" line, exit 3, ``"ok": true``; ``query``/``tail``/``stats``
showed it as a record; escapes reached the terminal raw). Each now fails the attack.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from membrane_otel.cli import main
from membrane_otel.ledger._reader import Skipped, read_lines
from membrane_otel.ledger._verify import verify
from membrane_otel.ledger._writer import Ledger

FORGED = b'{"event":"payment_approved","task_id":"t9","amount":1000000}'
ESCAPE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil"


def _ledger(path: Path, n: int = 5) -> Path:
    Ledger(path).append_many([{"event": "task_started", "task_id": f"t{i}", "i": i} for i in range(n)])
    return path


def _insert(path: Path, after: int, raw: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines.insert(after, raw)
    path.write_bytes(b"\n".join(lines))


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- verify


def test_inserted_unchained_line_is_tampering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON line without chain fields in the middle: exit 1 naming the line (before: torn, exit 3, ok)."""
    path = _ledger(tmp_path / "l.jsonl")
    _insert(path, 2, FORGED)
    report = verify(path)
    assert report.problem is not None and report.problem.kind == "unchained"
    assert report.problem.line == 3 and not report.ok
    code, out, _ = _cli(capsys, "ledger", "verify", "--ledger", str(path), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["ok"] is False and doc["problem"]["kind"] == "unchained"


def test_appended_unchained_last_line_is_tampering_too(tmp_path: Path) -> None:
    """A whole JSON line at the very end is no torn tail: a torn line never parses."""
    path = _ledger(tmp_path / "l.jsonl")
    with open(path, "ab") as f:
        f.write(FORGED + b"\n")
    report = verify(path)
    assert report.problem is not None and report.problem.kind == "unchained" and not report.torn


def test_partial_final_line_is_still_only_torn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A writer that died mid-line leaves a prefix that does not parse: torn, exit 3."""
    path = _ledger(tmp_path / "l.jsonl")
    with open(path, "ab") as f:
        f.write(b'{"event":"task_started","task_id":"t5","se')
    report = verify(path)
    assert report.ok and len(report.torn) == 1
    code, _, _ = _cli(capsys, "ledger", "verify", "--ledger", str(path), "-q")
    assert code == 3


# --------------------------------------------------------------------------- readers


def test_read_lines_skips_unchained_lines_and_counts_them(tmp_path: Path) -> None:
    """read_lines yields only chained lines (before: the forged line came back as a record)."""
    path = _ledger(tmp_path / "l.jsonl")
    _insert(path, 2, FORGED)
    skipped = Skipped()
    rows = list(read_lines(path, skipped))
    assert [r["i"] for r in rows] == [0, 1, 2, 3, 4] and skipped.unchained == 1


@pytest.mark.parametrize("action", [["query"], ["tail", "-n", "50"], ["query", "--limit", "50"]])
def test_query_and_tail_skip_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: list[str]
) -> None:
    """query and tail never show an inserted line as a record, and say on stderr how many they skipped."""
    path = _ledger(tmp_path / "l.jsonl")
    _insert(path, 2, FORGED)
    code, out, err = _cli(capsys, "ledger", *action, "--ledger", str(path), "--json")
    assert code == 0 and "payment_approved" not in out and len(out.splitlines()) == 5
    assert "skipped 1 unchained line(s)" in err


def test_stats_skips_and_counts_unchained_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stats counts 5 records and 1 unchained line, not 6 records."""
    path = _ledger(tmp_path / "l.jsonl")
    _insert(path, 2, FORGED)
    code, out, err = _cli(capsys, "ledger", "stats", "--ledger", str(path), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["lines"] == 5 and doc["unchained_lines"] == 1
    assert "payment_approved" not in doc["events"] and "unchained" in err


def test_traces_skip_an_inserted_span_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unchained span line in a ledger is not drawn; the seed's plain trace.jsonl still is."""
    path = tmp_path / "l.jsonl"
    Ledger(path).append_many(
        [
            {
                "event": "span",
                "hrm_layer": "focus",
                "operation": "gate",
                "trace_id": "foc_1_a",
                "duration_ms": 1,
            }
        ]
    )
    _insert(path, 1, b'{"event":"span","hrm_layer":"memory","operation":"forged","trace_id":"mem_2_b"}')
    code, out, err = _cli(capsys, "traces", "view", "--ledger", str(path), "--color", "never")
    assert code == 0 and "gate" in out and "forged" not in out and "skipped 1 unchained" in err


# --------------------------------------------------------------------------- escaping


def _hostile_ledger(path: Path) -> Path:
    Ledger(path).append_many(
        [
            {
                "event": "task_started" + ESCAPE,
                "task_id": ESCAPE,
                ESCAPE: "k",
                "note": ESCAPE,
                "hrm_layer": "focus",
                "operation": "op" + ESCAPE,
                "input_summary": ESCAPE,
                "output_summary": ESCAPE,
                "trace_id": "foc_1_a",
                "duration_ms": 1,
                "status": "success",
            }
        ]
    )
    return path


def _no_raw_controls(text: str) -> bool:
    return not any(ord(c) < 0x20 and c != "\n" or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in text)


@pytest.mark.parametrize(
    "argv",
    [
        ["ledger", "tail", "--color", "never"],
        ["ledger", "query", "--color", "never"],
        ["ledger", "tail", "--json"],
        ["ledger", "query", "--json"],
        ["ledger", "stats", "--color", "never"],
        ["traces", "view", "--color", "never"],
        ["traces", "view", "--json"],
    ],
)
def test_terminal_escapes_in_records_are_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """ESC, BEL, C1 CSI and a bidi override in a record come out as visible escapes (before: raw)."""
    path = _hostile_ledger(tmp_path / "l.jsonl")
    code, out, _ = _cli(capsys, *argv, "--ledger", str(path))
    assert code == 0 and out.strip()
    assert _no_raw_controls(out), repr(out)
    if "--json" not in argv and argv[1] != "stats":
        assert "\\x1b]0;pwned\\x07" in out or "\\u001b]0;pwned\\u0007" in out


def test_json_output_still_means_the_same_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The --json line, with DEL/C1/bidi as \\u escapes, parses back to the very same record."""
    path = _hostile_ledger(tmp_path / "l.jsonl")
    _, out, _ = _cli(capsys, "ledger", "query", "--json", "--ledger", str(path))
    assert json.loads(out) == json.loads(path.read_text())


# --------------------------------------------------------------------------- file modes


def test_ledger_and_lock_files_are_private(tmp_path: Path) -> None:
    """New ledger and lock files are 0600 (before: 0644, readable by every local user)."""
    old = os.umask(0o022)
    try:
        path = _ledger(tmp_path / "l.jsonl", 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{path}.lock").stat().st_mode) == 0o600


def test_ledger_mode_is_the_users_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MEMBRANE_LEDGER_FILE_MODE=0640 (or mode=) asks for another mode."""
    monkeypatch.setenv("MEMBRANE_LEDGER_FILE_MODE", "0640")
    old = os.umask(0o022)
    try:
        path = _ledger(tmp_path / "l.jsonl", 1)
        other = tmp_path / "m.jsonl"
        Ledger(other, mode=0o604).append({"event": "x"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(other.stat().st_mode) == 0o604


def test_shell_emitter_creates_a_private_ledger(tmp_path: Path) -> None:
    """`membrane-otel emit` makes a 0600 ledger (before: 0644); a bad mode is one line, exit 2."""
    import subprocess

    from tests._helpers import BIN, clean_env

    path = tmp_path / "e.jsonl"
    cli = [str(BIN / "membrane-otel"), "emit", "x", "--ledger", str(path)]
    env = clean_env(tmp_path)
    run = subprocess.run(
        cli, env=env, capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0o022)
    )
    assert run.returncode == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    env["MEMBRANE_LEDGER_FILE_MODE"] = "rw-r--r--"
    bad = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "MEMBRANE_LEDGER_FILE_MODE" in bad.stderr
