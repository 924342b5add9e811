"""Reliability of the ledger with real processes: concurrent writers, tampering, kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from membrane_otel.ledger._reader import ledger_files, read_lines
from membrane_otel.ledger._verify import verify
from tests._helpers import BIN, clean_env, wait_for

pytestmark = pytest.mark.slow

WORKERS, EMITS = 4, 5000
CLI = [str(BIN / "membrane-otel")]

DIRECT_WORKER = textwrap.dedent(
    """
    import sys
    from membrane_otel.ledger._events import emit_event

    w = int(sys.argv[1])
    sys.stdin.readline()  # start together: the parent writes one line to every worker
    for i in range(int(sys.argv[2])):
        if not emit_event("test_event", {"worker": w, "i": i}, task_id=f"w{w}"):
            sys.exit(3)
    """
)

OTEL_WORKER = textwrap.dedent(
    """
    import json, sys
    import membrane_otel
    from membrane_otel.ledger._events import emit_event

    membrane_otel.configure()
    w = int(sys.argv[1])
    sys.stdin.readline()
    for i in range(int(sys.argv[2])):
        emit_event("test_event", {"worker": w, "i": i}, task_id=f"w{w}")
    membrane_otel.shutdown()
    print(json.dumps(membrane_otel.get_metrics()))
    """
)


def _run_workers(script: str, env: dict[str, str], tmp: Path) -> list[str]:
    """Start WORKERS processes of ``script``, release them at once, return their stdout."""
    file = tmp / "worker.py"
    file.write_text(script)
    procs = [
        subprocess.Popen(
            [sys.executable, str(file), str(w), str(EMITS)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    try:
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            outs.append(out)
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _check_whole_ledger(path: Path) -> list[dict[str, object]]:
    """Every line of every file is whole JSON; each (worker, i) is there once, in order per worker."""
    raws = [raw for f in ledger_files(path) for raw in f.read_bytes().split(b"\n") if raw]
    assert len(raws) == WORKERS * EMITS
    lines = [json.loads(raw) for raw in raws]
    assert [ln["seq"] for ln in lines] == list(range(1, WORKERS * EMITS + 1))
    for w in range(WORKERS):
        assert [ln["i"] for ln in lines if ln["worker"] == w] == list(range(EMITS))
    report = verify(path)
    assert report.ok and report.lines == WORKERS * EMITS and not report.torn
    return lines


@pytest.fixture(scope="module")
def big_ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 processes x 5,000 direct emits into one ledger that rotates every 1 MB."""
    tmp = tmp_path_factory.mktemp("big")
    env = clean_env(tmp, MEMBRANE_LEDGER_MAX_BYTES=str(1_000_000))
    _run_workers(DIRECT_WORKER, env, tmp)
    return tmp / "ledger.jsonl"


def test_four_processes_direct_emits_make_one_whole_chain(big_ledger: Path) -> None:
    """4 x 5,000 emit_event calls (direct appends) → 20,000 whole lines, one chain over rotated files."""
    lines = _check_whole_ledger(big_ledger)
    assert len(ledger_files(big_ledger)) >= 3
    assert {ln["event"] for ln in lines} == {"test_event"}


def test_four_processes_through_the_otel_pipeline(tmp_path: Path) -> None:
    """4 x 5,000 emit_event calls through configure()'s batch pipeline → 20,000 whole chained lines."""
    env = clean_env(tmp_path, OTEL_LOGS_EXPORTER="ledger", MEMBRANE_QUEUE_SIZE=str(EMITS))
    outs = _run_workers(OTEL_WORKER, env, tmp_path)
    for out in outs:
        metrics = json.loads(out.strip().splitlines()[-1])
        assert metrics["dropped_logs"] == 0 and metrics["exported"] == EMITS
    _check_whole_ledger(tmp_path / "ledger.jsonl")


# --------------------------------------------------------------------------- tampering


@pytest.fixture
def copy(big_ledger: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the big ledger (all its files) to tamper with."""
    for f in ledger_files(big_ledger):
        shutil.copy(f, tmp_path / f.name)
    yield tmp_path / big_ledger.name


def _lines_of(file: Path) -> list[bytes]:
    return file.read_bytes().split(b"\n")[:-1]


def _write(file: Path, lines: list[bytes]) -> None:
    file.write_bytes(b"".join(ln + b"\n" for ln in lines))


def _flip(file: Path, line: int, where: str) -> None:
    """XOR one byte of ``line`` (1-based) chosen by ``where``."""
    data = bytearray(file.read_bytes())
    start = sum(len(ln) + 1 for ln in _lines_of(file)[: line - 1])
    raw = _lines_of(file)[line - 1]
    offset = {
        "first_byte": 0,
        "middle": len(raw) // 2,
        "in_prev_hash": raw.index(b'"prev_hash":"') + 20,
        "in_hash": len(raw) - 10,
        "hash_mark": raw.rindex(b',"hash":"') + 3,
        "closing_brace": len(raw) - 1,
        "newline": len(raw),
    }[where]
    data[start + offset] ^= 0x01
    file.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where", ["first_byte", "middle", "in_prev_hash", "in_hash", "hash_mark", "closing_brace", "newline"]
)
def test_flipped_byte_fails_verify_at_that_line(copy: Path, where: str) -> None:
    """Flipping any one byte of line 100 of the second file makes verify fail at exactly that line."""
    target = ledger_files(copy)[1]
    _flip(target, 100, where)
    problem = verify(copy).problem
    assert problem is not None, where
    assert (problem.file.name, problem.line) == (target.name, 100)
    assert problem.kind in ("edited", "corrupt")


@pytest.mark.parametrize("where", ["middle", "closing_brace", "hash_mark"])
def test_flipped_byte_in_the_very_last_line_is_tampering_not_a_torn_tail(copy: Path, where: str) -> None:
    """A damaged whole last line is reported as tampering, not mistaken for a writer's torn tail."""
    last = ledger_files(copy)[-1]
    n = len(_lines_of(last))
    _flip(last, n, where)
    report = verify(copy)
    assert report.problem is not None and (report.problem.file, report.problem.line) == (last, n)
    assert not report.torn


def test_deleted_line_fails_verify_at_that_line(copy: Path) -> None:
    """Deleting line 100 fails verify at line 100 (the line after the gap), naming the seq jump."""
    target = ledger_files(copy)[1]
    lines = _lines_of(target)
    seq = json.loads(lines[99])["seq"]
    del lines[99]
    _write(target, lines)
    problem = verify(copy).problem
    assert problem is not None and (problem.kind, problem.file, problem.line) == ("broken_chain", target, 100)
    assert problem.seq == seq + 1 and "removed" in problem.message


def test_swapped_lines_fail_verify_at_the_first(copy: Path) -> None:
    """Swapping lines 100 and 101 fails verify at line 100."""
    target = ledger_files(copy)[1]
    lines = _lines_of(target)
    lines[99], lines[100] = lines[100], lines[99]
    _write(target, lines)
    problem = verify(copy).problem
    assert problem is not None and (problem.kind, problem.file, problem.line) == ("broken_chain", target, 100)


def test_deleting_the_last_line_of_a_rotated_file_breaks_the_next_file(copy: Path) -> None:
    """The first line of the next file no longer chains: removal across a rotation is caught."""
    first, second = ledger_files(copy)[:2]
    _write(first, _lines_of(first)[:-1])
    problem = verify(copy).problem
    assert problem is not None and (problem.file, problem.line) == (second, 1)


def test_cli_verify_names_file_line_and_seq(copy: Path) -> None:
    """`ledger verify` exits 1 and prints file:line (seq N) of the edited line."""
    target = ledger_files(copy)[1]
    _flip(target, 100, "middle")
    seq = json.loads(_lines_of(target)[98])["seq"] + 1
    proc = subprocess.run([*CLI, "ledger", "verify", "--ledger", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{target}:100 (seq {seq})" in proc.stdout and "TAMPERED" in proc.stdout
    assert "\x1b[" not in proc.stdout  # piped: plain


def test_cli_verify_ok_prints_a_summary_and_progress(big_ledger: Path) -> None:
    """An intact ledger: exit 0, one OK line; progress lines on a non-terminal stderr every N lines."""
    proc = subprocess.run(
        [*CLI, "ledger", "verify", "--ledger", str(big_ledger), "--progress-every", "5000"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK  chain intact: 20,000 lines in ")
    assert proc.stderr.count("verify: ") == 3  # 5,000 / 10,000 / 15,000 (20,000 is the end)
    quiet = subprocess.run(
        [*CLI, "ledger", "verify", "--quiet", "--ledger", str(big_ledger)], capture_output=True, text=True
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


# --------------------------------------------------------------------------- kill -9

BIG_WRITER = textwrap.dedent(
    """
    import sys
    from membrane_otel.ledger._writer import Ledger

    led = Ledger(sys.argv[1])
    batch = [{"event": "test_event", "i": i, "pad": "x" * 2000} for i in range(500)]
    while True:  # ~1 MB per write, until killed
        led.append_many(batch)
    """
)


def test_kill_9_mid_flush_leaves_a_readable_ledger_that_resumes(tmp_path: Path) -> None:
    """SIGKILL a writer of 1 MB batches: the file stays readable, verify reports a torn tail, appends resume."""
    path = tmp_path / "ledger.jsonl"
    script = tmp_path / "writer.py"
    script.write_text(BIG_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)])
    try:
        wait_for(lambda: path.exists() and path.stat().st_size > 4_000_000, timeout=30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    readable = list(read_lines(path))
    assert readable and all(ln["event"] == "test_event" for ln in readable)
    # The kill may or may not have landed mid-write; make the torn tail certain.
    with open(path, "ab") as f:
        f.write(b'{"event":"test_event","i":7,"pad":"xxxx')
    n_lines = path.read_bytes().count(b"\n") + 1
    report = verify(path)
    assert report.ok, report.problem
    assert [(t.kind, t.line) for t in report.torn] == [("torn", n_lines)]
    last_seq = report.last_seq

    cli = subprocess.run([*CLI, "ledger", "verify", "--ledger", str(path)], capture_output=True, text=True)
    assert cli.returncode == 3
    assert f"torn tail at {path.name}:{n_lines}" in cli.stdout and "a writer died mid-write" in cli.stdout

    env = clean_env(tmp_path)
    emit = subprocess.run([*CLI, "emit", "after_crash", "-p", "ok=true", "--ledger", str(path)], env=env)
    assert emit.returncode == 0
    last = json.loads(path.read_bytes().split(b"\n")[-2])
    assert last["event"] == "after_crash" and last["seq"] == last_seq + 1 and last["ok"] is True
    report = verify(path)
    assert report.ok and report.lines == len(readable) + 1
    assert [(t.kind, t.line) for t in report.torn] == [("torn", n_lines)]
    assert "torn line at" in report.torn[0].message
