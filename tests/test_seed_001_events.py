"""seeds/001 promises: emit_event under OTEL_SDK_DISABLED, after shutdown, AGI_EVENT_ASYNC, module run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests._helpers import clean_env, read_ledger, run_instrumented


def _python(tmp_path: Path, code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args] if not code else [sys.executable, "-c", code],
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_sdk_disabled_stops_emit_event(tmp_path: Path) -> None:
    """OTEL_SDK_DISABLED=true: emit_event returns False and writes nothing, as the README says."""
    proc = _python(
        tmp_path,
        "from membrane_otel import emit_event\nprint(emit_event('task_started', {'goal': 'g'}))\n",
        OTEL_SDK_DISABLED="true",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert not (tmp_path / "ledger.jsonl").exists()


def test_sdk_disabled_under_the_wrapper_stops_emit_event(tmp_path: Path) -> None:
    """The same under opentelemetry-instrument."""
    script = tmp_path / "ev.py"
    script.write_text(
        "from membrane_otel import emit_event\nprint(emit_event('task_started', {'goal': 'g'}))\n"
    )
    proc = run_instrumented(script, clean_env(tmp_path, OTEL_SDK_DISABLED="true"))
    assert proc.stdout.strip() == "False", proc.stderr
    assert not (tmp_path / "ledger.jsonl").exists()


def test_emit_event_after_shutdown_is_not_lost(tmp_path: Path) -> None:
    """After shutdown() an event goes straight to the ledger: True means it is there."""
    proc = _python(
        tmp_path,
        "import membrane_otel\nfrom membrane_otel import emit_event\n"
        "membrane_otel.configure()\nemit_event('task_started', {'n': 1})\nmembrane_otel.shutdown()\n"
        "print(emit_event('task_completed', {'n': 2}))\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    events = [ln["event"] for ln in read_ledger(tmp_path / "ledger.jsonl")]
    assert events.count("task_started") == 1 and events.count("task_completed") == 1, events


def test_agi_event_async_buffers_and_flushes_at_exit(tmp_path: Path) -> None:
    """AGI_EVENT_ASYNC=true: lines wait in the buffer (not on disk at once) and are all written at exit."""
    proc = _python(
        tmp_path,
        "import os\nfrom membrane_otel import emit_event\n"
        "for i in range(3):\n    assert emit_event('eval', {'i': i})\n"
        "p = os.environ['MEMBRANE_LEDGER_PATH']\n"
        "print(sum(1 for _ in open(p)) if os.path.exists(p) else 0)\n",
        AGI_EVENT_ASYNC="true",
        AGI_EVENT_BUFFER_SIZE="100",
        AGI_EVENT_FLUSH_INTERVAL="30",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0", "buffered, not written synchronously"
    lines = read_ledger(tmp_path / "ledger.jsonl")
    assert [ln["i"] for ln in lines] == [0, 1, 2]


def test_agi_event_buffer_size_flushes_early(tmp_path: Path) -> None:
    """AGI_EVENT_BUFFER_SIZE lines make a write without waiting for the interval."""
    proc = _python(
        tmp_path,
        "import os, time\nfrom membrane_otel import emit_event\n"
        "for i in range(4):\n    emit_event('eval', {'i': i})\n"
        "p = os.environ['MEMBRANE_LEDGER_PATH']\n"
        "deadline = time.monotonic() + 10\n"
        "while time.monotonic() < deadline and not (os.path.exists(p) and sum(1 for _ in open(p)) >= 2):\n"
        "    time.sleep(0.02)\n"
        "print(sum(1 for _ in open(p)))\n",
        AGI_EVENT_ASYNC="1",
        AGI_EVENT_BUFFER_SIZE="2",
        AGI_EVENT_FLUSH_INTERVAL="60",
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 2


def test_bad_agi_event_buffer_size_is_one_line(tmp_path: Path) -> None:
    """A bad AGI_EVENT_BUFFER_SIZE names the variable."""
    import pytest

    from membrane_otel.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="AGI_EVENT_BUFFER_SIZE='0'"):
        load_settings({"AGI_EVENT_BUFFER_SIZE": "0"})


def test_module_run_is_a_self_test_that_prints_what_it_wrote(tmp_path: Path) -> None:
    """`python -m membrane_otel.events` writes a test_event and prints the ledger line."""
    proc = _python(tmp_path, "", "-m", "membrane_otel.events")
    assert proc.returncode == 0, proc.stderr
    assert "wrote to" in proc.stdout and '"event": "test_event"' in proc.stdout
    assert [ln["event"] for ln in read_ledger(tmp_path / "ledger.jsonl")] == ["test_event"]
    proc = _python(tmp_path, "", "-m", "membrane_otel.events", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage:")
    proc = _python(tmp_path, "", "-m", "membrane_otel.events", "eval", "[1]")
    assert proc.returncode == 2 and "must be an object" in proc.stderr
