"""The ledger file: chained appends, rotation, idempotence, torn tails, reading, verify."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from membrane_otel._internal.tables import iso
from membrane_otel.ledger._chain import GENESIS, split_hash
from membrane_otel.ledger._reader import ledger_files, read_lines
from membrane_otel.ledger._verify import verify
from membrane_otel.ledger._writer import Ledger, ledger_for
from membrane_otel.translate._shape import event_line


def _raw_lines(path: Path) -> list[str]:
    return [ln for f in ledger_files(path) for ln in f.read_text(encoding="utf-8").splitlines()]


def test_line_is_flat_json_with_event_first_and_chain_last(tmp_path: Path) -> None:
    """A line is one JSON object: event first; seq, prev_hash, hash last."""
    led = Ledger(tmp_path / "l.jsonl")
    led.append({"event": "eval", "task_id": "t1", "quality": 0.85})
    (raw,) = _raw_lines(tmp_path / "l.jsonl")
    obj = json.loads(raw)
    assert list(obj) == ["event", "task_id", "quality", "seq", "prev_hash", "hash"]
    assert obj["seq"] == 1 and obj["prev_hash"] == GENESIS


def test_hash_covers_the_line_bytes_up_to_the_hash(tmp_path: Path) -> None:
    """hash = sha256 of the line's text before ',"hash":', prev_hash included."""
    led = Ledger(tmp_path / "l.jsonl")
    led.append_many([{"event": "a"}, {"event": "b", "n": "ü"}])
    first, second = _raw_lines(tmp_path / "l.jsonl")
    for raw in (first, second):
        split = split_hash(raw)
        assert split is not None
        body, digest = split
        assert hashlib.sha256(body.encode()).hexdigest() == digest
    assert json.loads(second)["prev_hash"] == json.loads(first)["hash"]


def test_chain_fields_in_a_record_are_replaced(tmp_path: Path) -> None:
    """A record carrying seq/prev_hash/hash of its own cannot forge the chain."""
    led = Ledger(tmp_path / "l.jsonl")
    led.append({"event": "x", "seq": 99, "prev_hash": "f" * 64, "hash": "e" * 64})
    (obj,) = read_lines(tmp_path / "l.jsonl")
    assert obj["seq"] == 1 and obj["prev_hash"] == GENESIS
    assert verify(tmp_path / "l.jsonl").ok


def test_many_threads_write_whole_chained_lines(tmp_path: Path) -> None:
    """8 threads x 300 batches of 3 through one Ledger: 7,200 whole lines, one valid chain."""
    led = Ledger(tmp_path / "l.jsonl")

    def work(t: int) -> None:
        for i in range(300):
            led.append_many([{"event": "test_event", "t": t, "i": i, "k": k} for k in range(3)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    lines = list(read_lines(tmp_path / "l.jsonl"))
    assert len(lines) == 7200
    assert [ln["seq"] for ln in lines] == list(range(1, 7201))
    report = verify(tmp_path / "l.jsonl")
    assert report.ok and report.lines == 7200 and not report.torn


def test_two_appenders_on_one_file_share_one_chain(tmp_path: Path) -> None:
    """Two Ledger objects (as two processes would have) interleave into one chain."""
    a, b = Ledger(tmp_path / "l.jsonl"), Ledger(tmp_path / "l.jsonl")
    for i in range(50):
        (a if i % 3 else b).append({"event": "x", "i": i})
    assert [ln["i"] for ln in read_lines(tmp_path / "l.jsonl")] == list(range(50))
    assert verify(tmp_path / "l.jsonl").ok


def test_record_id_delivered_twice_is_written_once(tmp_path: Path) -> None:
    """Re-delivering a batch (and duplicates inside one batch) writes each record_id once."""
    led = Ledger(tmp_path / "l.jsonl")
    batch = [{"event": "x", "record_id": f"r{i}"} for i in range(5)]
    assert led.append_many(batch) == 5
    assert led.append_many(batch) == 0
    assert led.append_many([{"event": "y", "record_id": "r9"}, {"event": "y", "record_id": "r9"}]) == 1
    assert len(list(read_lines(tmp_path / "l.jsonl"))) == 6


def test_dedupe_survives_a_restart(tmp_path: Path) -> None:
    """A new appender (a restarted process) still skips the record_ids at the file's tail."""
    Ledger(tmp_path / "l.jsonl").append_many([{"event": "x", "record_id": f"r{i}"} for i in range(100)])
    again = Ledger(tmp_path / "l.jsonl")
    assert again.append_many([{"event": "x", "record_id": f"r{i}"} for i in range(90, 110)]) == 10
    ids = [ln["record_id"] for ln in read_lines(tmp_path / "l.jsonl")]
    assert len(ids) == len(set(ids)) == 110


def test_dedupe_window_zero_writes_everything(tmp_path: Path) -> None:
    """dedupe_window=0 (the shell emitter) keeps no ids and skips nothing."""
    led = Ledger(tmp_path / "l.jsonl", dedupe_window=0)
    led.append({"event": "x", "record_id": "same"})
    led.append({"event": "x", "record_id": "same"})
    assert len(list(read_lines(tmp_path / "l.jsonl"))) == 2


def test_rotation_names_sort_and_chain_continues(tmp_path: Path) -> None:
    """Rotated files are <stem>.00001.jsonl, ...; seq and prev_hash continue across them."""
    path = tmp_path / "resonance_ledger.jsonl"
    led = Ledger(path, max_bytes=4000)
    for i in range(100):
        led.append({"event": "test_event", "i": i, "pad": "x" * 50})
    files = ledger_files(path)
    assert len(files) > 3
    assert [f.name for f in files[:2]] == ["resonance_ledger.00001.jsonl", "resonance_ledger.00002.jsonl"]
    assert files[-1] == path
    for older, newer in zip(files, files[1:], strict=False):
        last = json.loads(older.read_text().splitlines()[-1])
        first = json.loads(newer.read_text().splitlines()[0])
        assert first["prev_hash"] == last["hash"] and first["seq"] == last["seq"] + 1
    assert all(f.stat().st_size <= 4000 for f in files)
    assert [ln["i"] for ln in read_lines(path)] == list(range(100))
    report = verify(path)
    assert report.ok and report.lines == 100 and len(report.files) == len(files)


def test_rotation_by_another_appender_is_followed(tmp_path: Path) -> None:
    """An appender whose file was rotated away by another one writes to the new file."""
    path = tmp_path / "l.jsonl"
    a, b = Ledger(path, max_bytes=3000), Ledger(path, max_bytes=3000)
    for i in range(60):
        (a if i % 2 else b).append({"event": "x", "i": i, "pad": "y" * 40})
    assert len(ledger_files(path)) > 2
    assert [ln["i"] for ln in read_lines(path)] == list(range(60))
    assert verify(path).ok


def test_fresh_file_after_rotation_chains_to_the_rotated_one(tmp_path: Path) -> None:
    """If the active file is gone (a crash right after renaming), the chain resumes from the newest rotated file."""
    path = tmp_path / "l.jsonl"
    Ledger(path).append_many([{"event": "x", "i": i} for i in range(3)])
    path.rename(tmp_path / "l.00001.jsonl")
    Ledger(path).append({"event": "x", "i": 3})
    assert json.loads(path.read_text())["seq"] == 4
    assert verify(path).ok


def test_torn_tail_is_not_merged_and_appending_resumes(tmp_path: Path) -> None:
    """A half-written last line stays alone on its line; the next line chains to the last whole one."""
    path = tmp_path / "l.jsonl"
    led = Ledger(path)
    led.append_many([{"event": "x", "i": i} for i in range(3)])
    with open(path, "ab") as f:
        f.write(b'{"event":"x","i":3,"se')
    report = verify(path)
    assert report.ok and [t.line for t in report.torn] == [4] and "torn tail" in report.torn[0].message
    Ledger(path).append({"event": "x", "i": 4})
    raw = path.read_text().splitlines()
    assert raw[3] == '{"event":"x","i":3,"se'
    after = json.loads(raw[4])
    assert after["seq"] == 4 and after["prev_hash"] == json.loads(raw[2])["hash"]
    report = verify(path)
    assert report.ok and [t.line for t in report.torn] == [4] and "torn line" in report.torn[0].message
    assert [ln["i"] for ln in read_lines(path)] == [0, 1, 2, 4]


def test_complete_line_without_newline_is_kept_whole(tmp_path: Path) -> None:
    """A line cut exactly before its newline is whole: the next append just starts a new line."""
    path = tmp_path / "l.jsonl"
    Ledger(path).append({"event": "x"})
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    Ledger(path).append({"event": "y"})
    report = verify(path)
    assert report.ok and report.lines == 2 and not report.torn


def test_verify_names_an_edited_line(tmp_path: Path) -> None:
    """Changing a value in line 3 fails verify at line 3, kind 'edited'."""
    path = tmp_path / "l.jsonl"
    Ledger(path).append_many([{"event": "eval", "quality": 0.5 + i / 10} for i in range(5)])
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"quality":0.7', '"quality":0.9')
    path.write_text("\n".join(lines) + "\n")
    problem = verify(path).problem
    assert problem is not None and (problem.kind, problem.line, problem.seq) == ("edited", 3, 3)


def test_verify_names_a_line_rehashed_after_editing(tmp_path: Path) -> None:
    """An edit whose hash was recomputed still breaks the chain at the next line."""
    path = tmp_path / "l.jsonl"
    Ledger(path).append_many([{"event": "eval", "i": i} for i in range(5)])
    lines = path.read_text().splitlines()
    body, _ = split_hash(lines[1]) or ("", "")
    body = body.replace('"i":1', '"i":7')
    lines[1] = f'{body},"hash":"{hashlib.sha256(body.encode()).hexdigest()}"}}'
    path.write_text("\n".join(lines) + "\n")
    problem = verify(path).problem
    assert problem is not None and (problem.kind, problem.line) == ("broken_chain", 3)


def test_verify_detects_a_removed_first_line_and_a_removed_rotated_file(tmp_path: Path) -> None:
    """The chain must start at genesis: removing the oldest line or file is reported at the new first line."""
    path = tmp_path / "l.jsonl"
    led = Ledger(path, max_bytes=600)
    for i in range(20):
        led.append({"event": "x", "i": i})
    first = ledger_files(path)[0]
    first.unlink()
    problem = verify(path).problem
    assert problem is not None and problem.kind == "broken_chain" and problem.line == 1
    assert "genesis" in problem.message


def test_verify_reports_progress(tmp_path: Path) -> None:
    """The progress callback sees line counts and bytes, ending at the total."""
    path = tmp_path / "l.jsonl"
    Ledger(path).append_many([{"event": "x", "i": i} for i in range(250)])
    calls: list[tuple[int, int, int]] = []
    verify(path, progress=lambda n, done, total: calls.append((n, done, total)), progress_every=100)
    assert [c[0] for c in calls] == [100, 200, 250]
    assert calls[-1][1] == calls[-1][2] == path.stat().st_size


def test_event_line_matches_the_translation(tmp_path: Path) -> None:
    """The directly built event line has the shape translate.log_line gives the same event."""
    from membrane_otel.translate._core import log_line
    from membrane_otel.translate._records import LogData

    attrs = {"goal": "g", "task_id": "t1", "ts": "payload ts", "n": [1, 2], "membrane.record_id": "rid"}
    log = LogData(
        time_ns=1_700_000_000_123_000_000,
        severity_number=9,
        severity_text="INFO",
        body=None,
        attributes=attrs,
        event_name="task_started",
        trace_id="ab" * 16,
        span_id="cd" * 8,
        resource={"service.name": "svc"},
        scope="membrane_otel.ledger._events",
    )
    payload = {k: v for k, v in attrs.items() if k != "membrane.record_id"}
    direct = event_line(
        "task_started",
        payload,
        time_ns=log.time_ns,
        record_id="rid",
        service="svc",
        trace_id="ab" * 16,
        span_id="cd" * 8,
    )
    assert direct == log_line(log)
    assert list(direct) == list(log_line(log))


def test_iso_is_utc_with_milliseconds() -> None:
    """ts is ISO 8601 UTC with milliseconds and a Z."""
    assert iso(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123Z"


def test_ledger_for_shares_one_appender_per_path(tmp_path: Path) -> None:
    """ledger_for returns one Ledger per absolute path and updates its rotation size."""
    a = ledger_for(tmp_path / "l.jsonl")
    b = ledger_for(str(tmp_path / "l.jsonl"), max_bytes=1234)
    assert a is b and a.max_bytes == 1234


def test_forked_child_appends_into_the_same_chain(tmp_path: Path) -> None:
    """After fork the child opens its own descriptors (its own flock) and the chain holds."""
    path = tmp_path / "l.jsonl"
    led = ledger_for(path)
    led.append({"event": "parent", "i": 0})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            for i in range(200):
                led.append({"event": "child", "i": i})
        finally:
            os._exit(0)
    for i in range(200):
        led.append({"event": "parent", "i": i + 1})
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    report = verify(path)
    assert report.ok and report.lines == 401


def test_torn_line_with_a_record_id_does_not_swallow_its_redelivery(tmp_path: Path) -> None:
    """A line torn after its record_id is no record: re-delivered after a restart, it is written."""
    from membrane_otel.ledger._writer import Ledger as _Ledger

    path = tmp_path / "torn.jsonl"
    first = _Ledger(path)
    first.append_many([{"event": "e", "record_id": "keep-1"}])
    first.close()
    with open(path, "ab") as f:
        f.write(b'{"event":"e","record_id":"lost-2","seq":2,"prev_h')  # the writer died here
    again = _Ledger(path)
    assert (
        again.append_many([{"event": "e", "record_id": "keep-1"}, {"event": "e", "record_id": "lost-2"}]) == 1
    )
    whole = [ln for ln in path.read_text().splitlines() if ln.endswith('"}')]
    assert [json.loads(ln)["record_id"] for ln in whole] == ["keep-1", "lost-2"]


def test_a_large_batch_costs_its_size_not_the_encoder_s_buffers(tmp_path: Path) -> None:
    """4,000 lines of ~1 KB in one append_many: the batch's working memory stays a small
    multiple of its bytes (orjson's results each hold a 4 KiB+ buffer; keeping them all for the
    chain pass pinned 30 MiB here, and broke the bridge's documented memory bound)."""
    import tracemalloc

    from membrane_otel.ledger._writer import Ledger

    records = [{"event": "x", "message": "y" * 900, "record_id": f"r{i}"} for i in range(4000)]
    ledger = Ledger(tmp_path / "big.jsonl")
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        assert ledger.append_many(records) == 4000
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        ledger.close()
    written = (tmp_path / "big.jsonl").stat().st_size
    assert peak < 5 * written, f"peak {peak / 2**20:.1f} MiB for {written / 2**20:.1f} MiB written"
