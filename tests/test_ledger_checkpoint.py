"""Keyed checkpoints catch what a bare hash chain cannot: a cut tail and a recomputed chain.

The two attacks pass plain ``ledger verify`` (as they did before issue 15: each test asserts
that first), and ``ledger verify --checkpoint FILE`` now fails them, naming the range.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from membrane_otel.cli import main
from membrane_otel.ledger._chain import line_hash, split_hash
from membrane_otel.ledger._checkpoint import EVENT_NAME, Checkpoint, Checkpointer, ledger_id
from membrane_otel.ledger._checkpoint import read as read_checkpoints
from membrane_otel.ledger._reader import read_lines
from membrane_otel.ledger._verify import verify
from membrane_otel.ledger._writer import Ledger
from tests._helpers import clean_env

KEY = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _checkpointed(tmp_path: Path, n: int = 40, every: int = 10) -> tuple[Path, Path, list[Checkpoint]]:
    """A ledger of ``n`` lines written in batches of 5, checkpointed every ``every`` lines."""
    path, cps = tmp_path / "l.jsonl", tmp_path / "l.checkpoints"
    led = Ledger(path)
    emitted: list[Checkpoint] = []
    led.checkpointer = Checkpointer(path, KEY.encode(), cps, lines=every, interval=3600, emit=emitted.append)
    for start in range(0, n, 5):
        led.append_many([{"event": "task_started", "i": i} for i in range(start, start + 5)])
    return path, cps, emitted


def _verify_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, path: Path, cps: Path
) -> tuple[int, str]:
    monkeypatch.setenv("MEMBRANE_LEDGER_KEY", KEY)
    code = main(["ledger", "verify", "--ledger", str(path), "--checkpoint", str(cps), "--color", "never"])
    out, err = capsys.readouterr()
    return code, out + err


def _recompute_from(path: Path, seq: int, change: dict[str, object]) -> None:
    """Edit line ``seq`` and recompute every hash from there on: a chain that verifies."""
    lines = path.read_text().splitlines()
    prev = json.loads(lines[seq - 2])["hash"] if seq > 1 else "0" * 64
    out = lines[: seq - 1]
    for raw in lines[seq - 1 :]:
        obj = json.loads(raw)
        if obj["seq"] == seq:
            obj.update(change)
        obj["prev_hash"] = prev
        del obj["hash"]
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)[:-1]  # the hash covers up to here
        prev = line_hash(body)
        out.append(body + f',"hash":"{prev}"}}')
    path.write_text("\n".join(out) + "\n")


def test_writer_checkpoints_every_n_lines(tmp_path: Path) -> None:
    """40 lines, every 10: four checkpoints in the file (0600) and as records, each authentic."""
    path, cps, emitted = _checkpointed(tmp_path)
    found = [cp for _, cp in read_checkpoints(cps)[0]]
    assert [cp.seq for cp in found] == [10, 20, 30, 40] and found == emitted
    assert stat.S_IMODE(cps.stat().st_mode) == 0o600
    assert all(cp.ledger_id == ledger_id(path) for cp in found)
    lines = {ln["seq"]: ln["hash"] for ln in read_lines(path)}
    assert all(lines[cp.seq] == cp.hash for cp in found)


def test_writer_checkpoints_after_t_seconds(tmp_path: Path) -> None:
    """Fewer than N lines, but T seconds passed: the next batch is checkpointed; idle time adds none."""
    path, cps = tmp_path / "l.jsonl", tmp_path / "cps"
    clock = Clock()
    led = Ledger(path)
    led.checkpointer = Checkpointer(
        path, b"k", cps, lines=1000, interval=60, clock=clock, emit=lambda cp: None
    )
    led.append({"event": "a"})
    assert not cps.exists()
    clock.now += 61
    led.append({"event": "b"})
    clock.now += 600
    assert [cp.seq for _, cp in read_checkpoints(cps)[0]] == [2]


def test_intact_ledger_passes_with_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Untouched: exit 0, and the checkpoints are said to match."""
    path, cps, _ = _checkpointed(tmp_path)
    code, out = _verify_cli(capsys, monkeypatch, path, cps)
    assert code == 0, out
    assert "4 checkpoint(s) match" in out


def test_cut_tail_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut the last 15 lines: plain verify passes (the attack works on a bare chain); --checkpoint exits 1."""
    path, cps, _ = _checkpointed(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:25]) + "\n")
    assert verify(path).ok and not verify(path).torn  # a shorter chain is still a valid chain
    code, out = _verify_cli(capsys, monkeypatch, path, cps)
    assert code == 1
    assert "the ledger ends at seq 25" in out and "lines 26..40 (at least) were cut" in out


def test_recomputed_chain_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edit line 13 and recompute every hash: plain verify passes; --checkpoint names 11..20."""
    path, cps, _ = _checkpointed(tmp_path)
    _recompute_from(path, 13, {"i": 999_999})
    assert verify(path).ok  # the rewrite verifies without checkpoints
    code, out = _verify_cli(capsys, monkeypatch, path, cps)
    assert code == 1
    assert "seq 20 does not have the hash" in out and "lines in 11..20 were rewritten" in out


def test_chain_recomputed_from_the_first_line_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rewriting line 1 changes the ledger's id: no checkpoint is for it any more, exit 1."""
    path, cps, _ = _checkpointed(tmp_path)
    _recompute_from(path, 1, {"i": -1})
    assert verify(path).ok
    code, out = _verify_cli(capsys, monkeypatch, path, cps)
    assert code == 1 and "no checkpoint is for this ledger" in out


def test_forged_checkpoint_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint whose MAC does not verify with the key (forged after a rewrite) fails verify."""
    path, cps, _ = _checkpointed(tmp_path)
    (_, good), *_ = read_checkpoints(cps)[0]
    forged = {**Checkpoint(good.ledger_id, 25, "f" * 64, good.time_ms, "0" * 64).as_dict()}
    with open(cps, "a") as f:
        f.write(json.dumps(forged) + "\n")
    code, out = _verify_cli(capsys, monkeypatch, path, cps)
    assert code == 1 and "does not verify with this key" in out


def test_verify_checkpoint_without_a_key_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key: exit 2 and one line naming the variables."""
    path, cps, _ = _checkpointed(tmp_path)
    monkeypatch.delenv("MEMBRANE_LEDGER_KEY", raising=False)
    monkeypatch.delenv("MEMBRANE_LEDGER_KEY_FILE", raising=False)
    code = main(["ledger", "verify", "--ledger", str(path), "--checkpoint", str(cps)])
    _, err = capsys.readouterr()
    assert code == 2 and "MEMBRANE_LEDGER_KEY" in err and len(err.strip().splitlines()) == 1


def test_checkpoint_command_writes_one_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ledger checkpoint --out FILE`` appends one for the current tail, from a key file."""
    path = tmp_path / "l.jsonl"
    Ledger(path).append_many([{"event": "x", "i": i} for i in range(7)])
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    monkeypatch.delenv("MEMBRANE_LEDGER_KEY", raising=False)
    monkeypatch.setenv("MEMBRANE_LEDGER_KEY_FILE", str(key_file))
    out_file = tmp_path / "elsewhere.checkpoints"
    assert main(["ledger", "checkpoint", "--ledger", str(path), "--out", str(out_file)]) == 0
    (_, cp), *rest = read_checkpoints(out_file)[0]
    assert not rest and cp.seq == 7 and cp.hash == split_hash(path.read_text().splitlines()[-1])[1]
    capsys.readouterr()
    assert main(["ledger", "verify", "--ledger", str(path), "--checkpoint", str(out_file)]) == 0


APP = textwrap.dedent(
    """
    import membrane_otel
    from membrane_otel import emit_event
    membrane_otel.configure()
    for i in range(12):
        emit_event("task_started", {"i": i})
    membrane_otel.force_flush()  # the export writes the lines, and the checkpoint record is emitted
    membrane_otel.force_flush()  # which this exports
    membrane_otel.shutdown()
    """
)


def test_checkpoint_leaves_as_an_otel_log_record(tmp_path: Path) -> None:
    """With MEMBRANE_LEDGER_KEY, an app's checkpoints are OTel log records with the event name (exported
    like any record: here the ledger exporter writes them) and lines in the checkpoint file."""
    env = clean_env(tmp_path, MEMBRANE_LEDGER_KEY=KEY, MEMBRANE_CHECKPOINT_LINES="5", MEMBRANE_WATCHDOG="0")
    run = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    ledger = tmp_path / "ledger.jsonl"
    records = [ln for ln in read_lines(ledger) if ln["event"] == EVENT_NAME]
    assert records, [ln["event"] for ln in read_lines(ledger)]
    assert all("membrane.checkpoint.mac" in r for r in records)
    cps = [cp for _, cp in read_checkpoints(f"{ledger}.checkpoints")[0]]
    assert cps and {r["membrane.checkpoint.seq"] for r in records} <= {cp.seq for cp in cps}
