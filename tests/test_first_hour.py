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


def test_spool_max_bytes_zero_is_one_line(tmp_path: Path) -> None:
    """MEMBRANE_SPOOL_MAX_BYTES=0 stops start-up with one line naming it, no traceback."""
    proc = run_instrumented(_script(tmp_path, ERRORING), clean_env(tmp_path, MEMBRANE_SPOOL_MAX_BYTES="0"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("membrane-otel: MEMBRANE_SPOOL_MAX_BYTES='0' is not valid"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_exporter_name_typo_is_one_line(tmp_path: Path) -> None:
    """A typo in OTEL_TRACES_EXPORTER names the variable and the installed exporters, no traceback."""
    proc = run_instrumented(_script(tmp_path, ERRORING), clean_env(tmp_path, OTEL_TRACES_EXPORTER="ledgr"))
    assert proc.returncode == 2
    assert "OTEL_TRACES_EXPORTER='ledgr' is not valid: no exporter named 'ledgr'" in proc.stderr
    assert "ledger" in proc.stderr.split("installed:")[1]
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_exporter_name_typo_in_code_raises_config_error(tmp_path: Path) -> None:
    """configure() with a typo in OTEL_LOGS_EXPORTER raises ConfigError, one line."""
    proc = _run_python(
        tmp_path,
        "import membrane_otel\ntry:\n    membrane_otel.configure()\n"
        "except membrane_otel.ConfigError as e:\n    print('ERR', e)\n",
        OTEL_LOGS_EXPORTER="ledger,membran",
    )
    assert proc.stdout.startswith("ERR OTEL_LOGS_EXPORTER='ledger,membran' is not valid"), (
        proc.stdout + proc.stderr
    )


def test_ledger_commands_with_no_ledger_say_so(tmp_path: Path) -> None:
    """ledger tail/query/stats with no ledger: one line naming the path, rc 2 (not silence, not zeros)."""
    env = clean_env(tmp_path)
    for action in (["tail"], ["query", "--event", "x"], ["stats"]):
        proc = subprocess.run(
            [sys.executable, "-m", "membrane_otel.cli", "ledger", *action],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (action, proc.stdout, proc.stderr)
        assert f"no ledger at {tmp_path / 'ledger.jsonl'}" in proc.stderr
        assert proc.stdout == ""


def test_doctor_fails_an_unwritable_ledger_path(tmp_path: Path) -> None:
    """doctor: a ledger path that cannot be written (a directory; under a file) is FAIL, even as root."""
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    for path in (tmp_path, a_file / "ledger.jsonl"):
        proc = subprocess.run(
            [sys.executable, "-m", "membrane_otel.cli", "doctor", "--json"],
            env=clean_env(tmp_path, MEMBRANE_LEDGER_PATH=str(path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
        assert checks["ledger"]["status"] == "FAIL", checks["ledger"]
        assert proc.returncode == 1


def test_doctor_fails_a_read_only_file_system_even_as_root(tmp_path: Path) -> None:
    """Under /proc (read-only for everyone, root included) the ledger check is FAIL."""
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc (Linux) for a file system nobody can write")
    proc = subprocess.run(
        [sys.executable, "-m", "membrane_otel.cli", "doctor", "--json"],
        env=clean_env(tmp_path, MEMBRANE_LEDGER_PATH="/proc/membrane-otel/ledger.jsonl"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["ledger"]["status"] == "FAIL"


def test_otlp_traces_with_membrane_trace_still_print_the_tree(tmp_path: Path) -> None:
    """The README's collector command (OTEL_TRACES_EXPORTER=otlp, MEMBRANE_TRACE=1) prints the tree."""
    script = _script(
        tmp_path,
        "from membrane_otel import tracer\n"
        "with tracer.span('alt', 'transition', 'altitude.py', 'L3→L2') as ctx:\n"
        "    ctx.set_output('success')\n",
    )
    env = clean_env(
        tmp_path,
        MEMBRANE_TRACE="1",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    proc = run_instrumented(script, env)
    assert "[alt] transition: L3→L2 → success (" in proc.stderr, proc.stderr
    none = run_instrumented(script, {**env, "OTEL_TRACES_EXPORTER": "none"})
    assert "[alt]" not in none.stderr


def test_long_run_without_a_chosen_bus_stays_quiet(tmp_path: Path) -> None:
    """No MEMBRANE_BUS_URL: errors spool for a while and the watchdog raises no spooling warning."""
    script = _script(
        tmp_path,
        "import logging, time\n"
        "for i in range(3):\n"
        "    logging.getLogger('svc').error('tick %d', i)\n"
        "    time.sleep(0.5)\n",
    )
    env = clean_env(tmp_path, MEMBRANE_WATCHDOG="1", MEMBRANE_WATCHDOG_INTERVAL="0.2", MEMBRANE_THROTTLE="0")
    del env["MEMBRANE_BUS_URL"]
    proc = run_instrumented(script, env)
    assert proc.returncode == 0, proc.stderr
    assert "membrane-otel:" not in proc.stderr, proc.stderr
    assert [proc.stderr.count(f"tick {i}") for i in range(3)] == [1, 1, 1]
