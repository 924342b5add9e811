"""Test-suite wide set-up."""

from __future__ import annotations

import os
import tempfile

# Tests build their own settings; nothing from the developer's shell may leak in.
for _key in list(os.environ):
    if _key.startswith(("MEMBRANE_", "AGI_LEDGER", "DOPEJAR_", "OTEL_")):
        del os.environ[_key]

# In-process tests share one SDK set-up (OTel providers are process-global): point it at a
# scratch ledger and spool, and at a bus port nobody listens on.
_SCRATCH = tempfile.mkdtemp(prefix="membrane-otel-tests-")
os.environ["MEMBRANE_LEDGER_PATH"] = os.path.join(_SCRATCH, "ledger.jsonl")
os.environ["MEMBRANE_SPOOL_DIR"] = os.path.join(_SCRATCH, "spool")
os.environ["MEMBRANE_BUS_URL"] = "ws://127.0.0.1:9/api/ws"
os.environ["MEMBRANE_THROTTLE"] = "0"
# The watchdog's own alerts would land in other tests' captures; test_watchdog drives its own.
os.environ["MEMBRANE_WATCHDOG"] = "0"
os.environ["OTEL_SERVICE_NAME"] = "membrane-otel-tests"


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: object) -> None:
    """Print the redaction corpus' scores whenever its test ran (``make test`` shows them)."""
    from tests.data.secret_corpus import SCORE_KEY

    summary = config.stash.get(SCORE_KEY, None)  # type: ignore[attr-defined]
    if summary:
        terminalreporter.write_sep("-", "secret redaction")  # type: ignore[attr-defined]
        terminalreporter.write_line(summary)  # type: ignore[attr-defined]


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Stop the in-process pipeline while pytest's streams are still open: a bus client still
    retrying the unreachable bus above would otherwise log into a closed stream at exit."""
    import sys

    if "membrane_otel._setup" in sys.modules:
        from membrane_otel import shutdown

        shutdown(3000)
