"""Shared test helpers: running programs under the real ``opentelemetry-instrument``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTRUMENT = BIN / "opentelemetry-instrument"
EXAMPLE = ROOT / "examples" / "hrm_agent.py"

T = TypeVar("T")


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment with no OTEL_/MEMBRANE_ settings leaking in from the caller."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MEMBRANE_", "AGI_", "DOPEJAR_"))
    }
    env.update(
        MEMBRANE_LEDGER_PATH=str(tmp / "ledger.jsonl"),
        MEMBRANE_SPOOL_DIR=str(tmp / "spool"),
        # A bus port nobody listens on: the embedded default must work with no bus.
        MEMBRANE_BUS_URL="ws://127.0.0.1:9/api/ws",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_instrumented(
    script: Path | str, env: Mapping[str, str], *, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, str(script)],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The ledger's complete lines: a line still being written (no newline yet) is not read, so
    a test polling a live writer never parses half a record."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def wait_for(fn: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Poll ``fn`` until it returns something truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {getattr(fn, '__name__', fn)}")
        time.sleep(interval)
