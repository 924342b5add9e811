"""Settings: environment variables, aliases, precedence and one-line errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from membrane_otel.settings import ConfigError, load_settings


def test_defaults_follow_the_seeds() -> None:
    """With no environment the defaults are the seeds' numbers and paths."""
    s = load_settings({})
    assert s.ledger_path == Path("memory/resonance_ledger.jsonl")
    assert s.spool_dir == Path.home() / ".local/state/membrane-otel/spool"
    assert s.bus_url == "ws://127.0.0.1:8000/api/ws"
    assert (s.queue_size, s.flush_interval_ms, s.batch_size) == (1000, 250, 25)
    assert s.l2_level == logging.ERROR and s.trace is False


def test_state_and_spool_follow_xdg_state_home() -> None:
    """$XDG_STATE_HOME moves the private state; a relative value is ignored, as the spec says."""
    s = load_settings({"XDG_STATE_HOME": "/srv/state"})
    assert s.state_dir == Path("/srv/state/membrane-otel")
    assert s.spool_dir == Path("/srv/state/membrane-otel/spool")
    assert load_settings({"XDG_STATE_HOME": "rel"}).state_dir == Path.home() / ".local/state/membrane-otel"
    assert load_settings({"MEMBRANE_LEDGER_FILE_MODE": "0640"}).ledger_file_mode == 0o640
    with pytest.raises(ConfigError, match="MEMBRANE_LEDGER_FILE_MODE"):
        load_settings({"MEMBRANE_LEDGER_FILE_MODE": "rw"})


def test_seed_aliases_are_accepted() -> None:
    """AGI_LEDGER_PATH and DOPEJAR_TRACE work when the MEMBRANE_ names are absent."""
    s = load_settings({"AGI_LEDGER_PATH": "/x/l.jsonl", "DOPEJAR_TRACE": "1"})
    assert s.ledger_path == Path("/x/l.jsonl") and s.trace is True


def test_canonical_name_wins_over_alias() -> None:
    """MEMBRANE_LEDGER_PATH beats AGI_LEDGER_PATH."""
    s = load_settings({"AGI_LEDGER_PATH": "/a", "MEMBRANE_LEDGER_PATH": "/b"})
    assert s.ledger_path == Path("/b")


def test_arguments_override_environment() -> None:
    """Keyword arguments beat the environment."""
    s = load_settings({"MEMBRANE_QUEUE_SIZE": "10"}, queue_size=20)
    assert s.queue_size == 20


def test_level_by_name_or_number() -> None:
    """MEMBRANE_L2_LEVEL takes a level name or a number."""
    assert load_settings({"MEMBRANE_L2_LEVEL": "warning"}).l2_level == logging.WARNING
    assert load_settings({"MEMBRANE_L2_LEVEL": "35"}).l2_level == 35


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MEMBRANE_L2_LEVEL": "LOUD"}, "MEMBRANE_L2_LEVEL='LOUD' is not valid: expected DEBUG"),
        ({"MEMBRANE_QUEUE_SIZE": "many"}, "MEMBRANE_QUEUE_SIZE='many' is not valid"),
        ({"MEMBRANE_QUEUE_SIZE": "0"}, "MEMBRANE_QUEUE_SIZE='0' is not valid"),
        ({"MEMBRANE_TRACE": "maybe"}, "MEMBRANE_TRACE='maybe' is not valid: expected 1/0"),
        ({"DOPEJAR_TRACE": "maybe"}, "DOPEJAR_TRACE='maybe' is not valid"),
        ({"MEMBRANE_BUS_URL": "http://x"}, "MEMBRANE_BUS_URL='http://x' is not valid: expected a ws://"),
        ({"MEMBRANE_REDACT_PATTERNS": "[("}, "MEMBRANE_REDACT_PATTERNS is not valid"),
        ({"MEMBRANE_ENVELOPE_FORMAT": "xml"}, "MEMBRANE_ENVELOPE_FORMAT='xml' is not valid"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(env: dict[str, str], needle: str) -> None:
    """A bad value raises ConfigError whose message is one line naming the variable."""
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_trace_settings_file_yaml(tmp_path: Path) -> None:
    """The seed's settings file (tracing: enabled/output/level) turns tracing on."""
    f = tmp_path / "settings.yaml"
    f.write_text("tracing:\n  enabled: true\n  output: trace.jsonl\n  level: debug\n")
    s = load_settings({"MEMBRANE_TRACE_CONFIG": str(f)})
    assert s.trace is True and s.trace_output == Path("trace.jsonl") and s.trace_level == "debug"
    assert s.ledger_path == Path("memory/resonance_ledger.jsonl"), "output is in addition to the ledger"


def test_trace_settings_file_toml_env_wins(tmp_path: Path) -> None:
    """A TOML settings file works, and the environment overrides it."""
    f = tmp_path / "settings.toml"
    f.write_text("[tracing]\nenabled = true\n")
    assert load_settings({"MEMBRANE_TRACE_CONFIG": str(f)}).trace is True
    assert load_settings({"MEMBRANE_TRACE_CONFIG": str(f), "MEMBRANE_TRACE": "0"}).trace is False


def test_unreadable_trace_file_is_one_line(tmp_path: Path) -> None:
    """A missing settings file is a one-line ConfigError."""
    with pytest.raises(ConfigError, match="MEMBRANE_TRACE_CONFIG=.*cannot be read"):
        load_settings({"MEMBRANE_TRACE_CONFIG": str(tmp_path / "nope.yaml")})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue_size": 0}, "argument queue_size=0 is not valid: expected a whole number ≥ 1"),
        ({"queue_size": "12x"}, "argument queue_size='12x' is not valid: expected a whole number"),
        ({"watchdog_interval_s": 0}, "argument watchdog_interval_s=0 is not valid: expected a number > 0"),
        ({"trace": "perhaps"}, "argument trace='perhaps' is not valid: expected 1/0"),
        ({"scope": "galactic"}, "argument scope='galactic' is not valid: expected 'personal' or"),
        ({"redact_patterns": "x"}, "argument redact_patterns='x' is not valid: expected a list of strings"),
        ({"ledger_path": None}, "argument ledger_path=None is not valid: a value is required"),
    ],
)
def test_settings_built_in_code_check_types_and_bounds(kwargs: dict[str, object], message: str) -> None:
    """Settings(...) in code is checked as the environment is: one line naming the field."""
    from membrane_otel.settings import Settings

    with pytest.raises(ConfigError) as info:
        Settings(**kwargs)
    assert str(info.value).startswith(message), str(info.value)


def test_settings_coerce_and_stay_frozen() -> None:
    """Strings from code or environment become the field's type; a built Settings cannot change."""
    import dataclasses

    from membrane_otel.settings import Settings

    s = Settings(queue_size="7", ledger_path="x.jsonl", trace="yes", bridge_url="http://h:1/")
    assert (s.queue_size, s.ledger_path, s.trace, s.bridge_url) == (7, Path("x.jsonl"), True, "http://h:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.queue_size = 8  # type: ignore[misc]
    with pytest.raises(ConfigError, match="unknown setting 'queue_sise'"):
        load_settings({}, queue_sise=3)


def test_configure_imports_no_validation_library(tmp_path: Path) -> None:
    """The distro's start-up path (settings + configure) imports no pydantic: its import, plugin
    scan and model build cost more than the rest of our start-up (benchmarks: startup row)."""
    import subprocess
    import sys

    from tests._helpers import clean_env

    code = (
        "import sys, membrane_otel; membrane_otel.configure(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pydantic_core'}))"
    )
    env = clean_env(tmp_path, XDG_STATE_HOME=str(tmp_path / "state"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
