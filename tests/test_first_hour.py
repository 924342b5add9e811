"""A new user's first hour: the rough edges of issue 16, each under the real wrapper or CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import membrane_otel
from tests._helpers import INSTRUMENT, clean_env, read_ledger, run_instrumented

ERRORING = """
import logging
logging.getLogger("app").error("first-hour error %d", 1)
print("done")
"""


def _script(tmp_path: Path, text: str, name: str = "app.py") -> Path:
    script = tmp_path / name
    script.write_text(text)
    return script


# --- console output: logging's functions are left alone (issue 12 part 4) ---------------------


def test_logging_config_functions_are_not_replaced_by_us(tmp_path: Path) -> None:
    """After configure(), basicConfig/dictConfig/fileConfig hold no membrane_otel code."""
    script = _script(
        tmp_path,
        "import logging, logging.config, membrane_otel\n"
        "membrane_otel.configure()\n"
        "for fn in (logging.basicConfig, logging.config.dictConfig, logging.config.fileConfig):\n"
        "    print(fn.__code__.co_filename, getattr(fn, '_membrane_wrapped', False))\n",
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=clean_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "membrane_otel" not in proc.stdout and "True" not in proc.stdout, proc.stdout


def test_sdk_disabled_keeps_logging_on_the_terminal(tmp_path: Path) -> None:
    """OTEL_SDK_DISABLED=true under the wrapper: logging.error still prints, once."""
    proc = run_instrumented(_script(tmp_path, ERRORING), clean_env(tmp_path, OTEL_SDK_DISABLED="true"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("first-hour error 1") == 1, proc.stderr


def test_dict_config_console_is_not_doubled(tmp_path: Path) -> None:
    """An app that configures a console with dictConfig sees each line once, in its own format."""
    script = _script(
        tmp_path,
        "import logging, logging.config\n"
        "logging.config.dictConfig({'version': 1, 'formatters': {'f': {'format': 'DC %(message)s'}},"
        " 'handlers': {'h': {'class': 'logging.StreamHandler', 'formatter': 'f'}},"
        " 'root': {'handlers': ['h'], 'level': 'INFO'}})\n"
        "logging.getLogger('a').warning('dict configured')\n",
    )
    proc = run_instrumented(script, clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("dict configured") == 1, proc.stderr
    assert "DC dict configured" in proc.stderr
    errors = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert errors == [], "a warning is not an error line"


def test_handler_on_a_named_logger_is_not_doubled(tmp_path: Path) -> None:
    """A handler the app puts on its own logger (not the root) is the only console output."""
    script = _script(
        tmp_path,
        "import logging, sys\n"
        "log = logging.getLogger('svc')\n"
        "h = logging.StreamHandler(sys.stderr); h.setFormatter(logging.Formatter('SVC %(message)s'))\n"
        "log.addHandler(h)\n"
        "log.error('named handler')\n",
    )
    proc = run_instrumented(script, clean_env(tmp_path))
    assert proc.stderr.count("named handler") == 1, proc.stderr
    assert read_ledger(tmp_path / "ledger.jsonl"), "the error still reaches the ledger"


def test_configure_in_code_keeps_console_and_basic_config(tmp_path: Path) -> None:
    """configure() without the wrapper: the console is kept, and a later basicConfig takes effect."""
    script = _script(
        tmp_path,
        "import logging, membrane_otel\n"
        "membrane_otel.configure()\n"
        "logging.getLogger('a').warning('before basicConfig')\n"
        "logging.basicConfig(format='BC %(message)s')\n"
        "logging.getLogger('a').warning('after basicConfig')\n"
        "membrane_otel.shutdown()\n",
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=clean_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("before basicConfig") == 1, proc.stderr
    assert proc.stderr.count("after basicConfig") == 1, proc.stderr
    assert "BC after basicConfig" in proc.stderr


def test_instrument_binary_present() -> None:
    """The tests above need the wrapper from the venv."""
    assert INSTRUMENT.exists(), "run `make venv` to install opentelemetry-instrument"


def _run_python(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[str]:
    script = _script(tmp_path, code, "prog.py")
    return subprocess.run(
        [sys.executable, str(script)],
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_readme_configure_then_shutdown_prints_nothing_of_ours(tmp_path: Path) -> None:
    """configure() … shutdown() as the README shows: no "shutdown can only be called once"."""
    proc = _run_python(
        tmp_path,
        "import membrane_otel\nmembrane_otel.configure()\nprint('ran')\nmembrane_otel.shutdown()\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "can only be called once" not in proc.stderr, proc.stderr


def test_configure_accepts_service_name_version_environment(tmp_path: Path) -> None:
    """configure(service_name=…, service_version=…, environment=…) becomes resource attributes."""
    proc = _run_python(
        tmp_path,
        "import logging, membrane_otel\n"
        "from opentelemetry import trace\n"
        "membrane_otel.configure(service_name='billing', service_version='1.2.3', environment='staging')\n"
        "a = trace.get_tracer_provider().resource.attributes\n"
        "print(a['service.name'], a['service.version'], a['deployment.environment.name'])\n"
        "logging.getLogger('x').error('boom')\n"
        "membrane_otel.shutdown()\n",
        OTEL_SERVICE_NAME="from-env",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["billing", "1.2.3", "staging"]
    errors = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert errors and errors[0]["service"] == "billing"


def test_configure_refuses_an_empty_service_name(tmp_path: Path) -> None:
    """A bad service_name is one line naming the argument."""
    with pytest.raises(membrane_otel.ConfigError, match="argument service_name=''"):
        membrane_otel.configure(service_name="")


def test_script_from_stdin_is_named_stdin(tmp_path: Path) -> None:
    """`opentelemetry-instrument python - < app.py`: service and source are `stdin`, not `-`."""
    proc = subprocess.run(
        [str(INSTRUMENT), sys.executable, "-"],
        input="import logging\nlogging.getLogger('x').error('from stdin')\n",
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    errors = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "script_error"]
    assert errors and errors[0]["service"] == "stdin"
    spooled = [e for f in (tmp_path / "spool").glob("*.json") for e in json.loads(f.read_text())]
    assert spooled and spooled[0]["source"] == "script:stdin"
