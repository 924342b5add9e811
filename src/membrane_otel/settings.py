"""Settings: one model, every environment variable a documented field.

Precedence is keyword arguments > environment > defaults. The standard ``OTEL_*``
variables keep their meaning and are read by the SDK itself; this model holds the
``MEMBRANE_*`` rest (with the seeds' ``AGI_LEDGER_PATH`` and ``DOPEJAR_TRACE`` as aliases).
A bad value raises :class:`ConfigError`, whose message is one line naming the variable
and what it accepts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

__all__ = ["ConfigError", "Settings", "get_settings", "load_settings"]

from membrane_otel._internal.fields import FieldProblem, check_fields, converts, setting
from membrane_otel._internal.tables import DEFAULT_BUS_URL, DEFAULT_LEDGER_MAX_BYTES, DEFAULT_SPOOL_MAX_BYTES

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


class ConfigError(ValueError):
    """A setting has a value it cannot take. ``str()`` is one line for the user."""


class _FieldError(ConfigError):
    """A field's value failed its type or bounds; :func:`load_settings` names the variable."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"argument {field}={value!r} is not valid: {reason}")
        self.field, self.value, self.reason = field, value, reason


@dataclasses.dataclass(frozen=True)
class Settings:
    """membrane-otel settings. Each field names its environment variable(s).

    A plain frozen dataclass checked in ``__post_init__`` (types, bounds, converters): the
    distro reads it at every start-up, and a validation library there cost more than the
    rest of our start-up together.
    """

    ledger_path: Path = setting(
        Path("memory/resonance_ledger.jsonl"),
        description="MEMBRANE_LEDGER_PATH (alias AGI_LEDGER_PATH): the hash-chained JSONL ledger.",
    )
    ledger_max_bytes: int = setting(
        DEFAULT_LEDGER_MAX_BYTES,
        ge=0,
        description="MEMBRANE_LEDGER_MAX_BYTES: rotate above this size; 0 never.",
    )
    spool_dir: Path = setting(
        default_factory=lambda: _state_dir() / "spool",
        description="MEMBRANE_SPOOL_DIR: envelopes wait here while the bus is down "
        "(default $XDG_STATE_HOME/membrane-otel/spool, else ~/.local/state/membrane-otel/spool; "
        "refused if a symlink, another user's, or writable by others).",
    )
    spool_max_bytes: int = setting(
        DEFAULT_SPOOL_MAX_BYTES,
        ge=1,
        description="MEMBRANE_SPOOL_MAX_BYTES: oldest spool files dropped above.",
    )
    bus_url: str = setting(
        DEFAULT_BUS_URL, description="MEMBRANE_BUS_URL: the membrane bus (ws:// or wss://)."
    )
    bus_token: str | None = setting(
        None, description="MEMBRANE_BUS_TOKEN: bearer token for the bus.", repr=False
    )
    bus_ca_file: Path | None = setting(None, description="MEMBRANE_BUS_CA_FILE: CA bundle for wss://.")
    trace: bool = setting(False, description="MEMBRANE_TRACE (alias DOPEJAR_TRACE): HRM tracing on.")
    trace_config: Path | None = setting(
        None,
        description="MEMBRANE_TRACE_CONFIG: YAML or TOML file with tracing.enabled/output/level "
        "(config/settings.yaml in the working directory is read when this is unset).",
    )
    trace_output: Path | None = setting(
        None,
        description="MEMBRANE_TRACE_OUTPUT: also write HRM trace lines (the seed's TraceEvent JSON) here "
        "(the settings file's tracing.output).",
    )
    trace_level: Literal["debug", "info", "warn"] = setting(
        "info", description="MEMBRANE_TRACE_LEVEL: debug|info|warn (the seed's tracing.level)."
    )
    l2_level: int = setting(
        logging.ERROR, description="MEMBRANE_L2_LEVEL: records at or above become envelopes (name or number)."
    )
    queue_size: int = setting(
        1000,
        ge=1,
        description="MEMBRANE_QUEUE_SIZE: records queued per exporter; beyond it events and errors go to disk, the rest drop oldest.",
    )
    flush_interval_ms: int = setting(
        250, ge=1, description="MEMBRANE_FLUSH_INTERVAL_MS: background flush period."
    )
    batch_size: int = setting(25, ge=1, description="MEMBRANE_BATCH_SIZE: flush early at this many records.")
    redact_patterns: tuple[str, ...] = setting(
        (), description="MEMBRANE_REDACT_PATTERNS: extra secret regexes, a JSON array of strings."
    )
    envelope_format: Literal["membrane", "legacy"] = setting(
        "membrane",
        description="MEMBRANE_ENVELOPE_FORMAT: 'legacy' adds the seeds/000 top-level citizen_id.",
    )
    scope: Literal["personal", "organizational", "ecosystem"] = setting(
        "organizational", description="MEMBRANE_SCOPE: default scope of error envelopes."
    )
    throttle: bool = setting(
        True, description="MEMBRANE_THROTTLE: per-type/per-fingerprint envelope throttling."
    )
    bridge_url: str = setting(
        "http://127.0.0.1:8010", description="MEMBRANE_BRIDGE_URL: the bridge, for doctor."
    )
    bridge_token: str | None = setting(None, description="MEMBRANE_BRIDGE_TOKEN: bearer token.", repr=False)
    watchdog: bool = setting(True, description="MEMBRANE_WATCHDOG: run the pipeline watchdog.")
    watchdog_interval_s: float = setting(
        15.0, gt=0, description="MEMBRANE_WATCHDOG_INTERVAL: seconds per check."
    )
    throttle_type_interval_s: float = setting(
        15.0,
        ge=0,
        description="MEMBRANE_THROTTLE_TYPE_INTERVAL: one envelope per signal type per this; 0 off.",
    )
    throttle_fingerprint_interval_s: float = setting(
        10.0, ge=0, description="MEMBRANE_THROTTLE_FINGERPRINT_INTERVAL: one per fingerprint per this; 0 off."
    )

    # -- private state and keyed checkpoints (issue 15) ----------------------------------------
    state_dir: Path = setting(
        default_factory=lambda: _state_dir(),
        description="XDG_STATE_HOME: private state goes under $XDG_STATE_HOME/membrane-otel "
        "(else ~/.local/state/membrane-otel), created 0700.",
    )
    ledger_file_mode: int = setting(
        0o600,
        ge=0,
        le=0o777,
        description="MEMBRANE_LEDGER_FILE_MODE: octal mode of new ledger and lock files (default 0600).",
    )
    ledger_key: str | None = setting(
        None,
        description="MEMBRANE_LEDGER_KEY: HMAC key for ledger checkpoints (none: no checkpoints).",
        repr=False,
    )
    ledger_key_file: Path | None = setting(
        None, description="MEMBRANE_LEDGER_KEY_FILE: file holding the checkpoint key (its first line)."
    )
    checkpoint_lines: int = setting(
        1000, ge=1, description="MEMBRANE_CHECKPOINT_LINES: a checkpoint every this many ledger lines."
    )
    checkpoint_interval_s: float = setting(
        60.0,
        gt=0,
        description="MEMBRANE_CHECKPOINT_INTERVAL: or when this many seconds passed and lines were written.",
    )
    checkpoint_file: Path | None = setting(
        None,
        description="MEMBRANE_CHECKPOINT_FILE: checkpoints are appended here too "
        "(default <ledger>.checkpoints); keep a copy off the host.",
    )

    @converts("ledger_file_mode", mode="before")
    @classmethod
    def _octal(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return int(v.strip(), 8)
            except ValueError:
                raise ValueError("expected an octal file mode such as 0600 or 0640") from None
        return v

    event_async: bool = setting(
        False,
        description="MEMBRANE_EVENT_ASYNC (alias AGI_EVENT_ASYNC): buffer events written without a pipeline.",
    )
    event_buffer_size: int = setting(
        100,
        ge=1,
        description="MEMBRANE_EVENT_BUFFER_SIZE (alias AGI_EVENT_BUFFER_SIZE): lines per async write.",
    )
    event_flush_interval_s: float = setting(
        5.0,
        gt=0,
        description="MEMBRANE_EVENT_FLUSH_INTERVAL (alias AGI_EVENT_FLUSH_INTERVAL): seconds between async writes.",
    )

    collector_health_url: str | None = setting(
        None,
        description="MEMBRANE_COLLECTOR_HEALTH_URL: the Collector's health_check endpoint, for doctor and readiness.",
    )

    @converts("l2_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        if isinstance(v, str):
            s = v.strip().upper()
            if s in _LEVELS:
                return _LEVELS[s]
            if s.isdigit():
                return int(s)
            raise ValueError("expected DEBUG, INFO, WARNING, ERROR, CRITICAL or a number")
        return v

    @converts("bus_url")
    @classmethod
    def _ws(cls, v: str) -> str:
        if not v.startswith(("ws://", "wss://")):
            raise ValueError("expected a ws:// or wss:// URL")
        return v

    @converts("bridge_url", "collector_health_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return v.rstrip("/")

    def __post_init__(self) -> None:
        try:
            check_fields(self)
        except FieldProblem as exc:
            raise _FieldError(exc.field, exc.value, exc.reason) from None


# field -> environment variables, first found wins (canonical name first, then seed aliases).
ENV_VARS: dict[str, tuple[str, ...]] = {
    "ledger_path": ("MEMBRANE_LEDGER_PATH", "AGI_LEDGER_PATH"),
    "ledger_max_bytes": ("MEMBRANE_LEDGER_MAX_BYTES",),
    "spool_dir": ("MEMBRANE_SPOOL_DIR",),
    "spool_max_bytes": ("MEMBRANE_SPOOL_MAX_BYTES",),
    "bus_url": ("MEMBRANE_BUS_URL",),
    "bus_token": ("MEMBRANE_BUS_TOKEN",),
    "bus_ca_file": ("MEMBRANE_BUS_CA_FILE",),
    "trace": ("MEMBRANE_TRACE", "DOPEJAR_TRACE"),
    "trace_config": ("MEMBRANE_TRACE_CONFIG",),
    "trace_output": ("MEMBRANE_TRACE_OUTPUT",),
    "collector_health_url": ("MEMBRANE_COLLECTOR_HEALTH_URL",),
    "trace_level": ("MEMBRANE_TRACE_LEVEL",),
    "l2_level": ("MEMBRANE_L2_LEVEL",),
    "queue_size": ("MEMBRANE_QUEUE_SIZE",),
    "flush_interval_ms": ("MEMBRANE_FLUSH_INTERVAL_MS",),
    "batch_size": ("MEMBRANE_BATCH_SIZE",),
    "redact_patterns": ("MEMBRANE_REDACT_PATTERNS",),
    "envelope_format": ("MEMBRANE_ENVELOPE_FORMAT",),
    "scope": ("MEMBRANE_SCOPE",),
    "throttle": ("MEMBRANE_THROTTLE",),
    "bridge_url": ("MEMBRANE_BRIDGE_URL",),
    "bridge_token": ("MEMBRANE_BRIDGE_TOKEN",),
    "watchdog": ("MEMBRANE_WATCHDOG",),
    "watchdog_interval_s": ("MEMBRANE_WATCHDOG_INTERVAL",),
    "throttle_type_interval_s": ("MEMBRANE_THROTTLE_TYPE_INTERVAL",),
    "throttle_fingerprint_interval_s": ("MEMBRANE_THROTTLE_FINGERPRINT_INTERVAL",),
    "state_dir": ("XDG_STATE_HOME",),
    "ledger_file_mode": ("MEMBRANE_LEDGER_FILE_MODE",),
    "ledger_key": ("MEMBRANE_LEDGER_KEY",),
    "ledger_key_file": ("MEMBRANE_LEDGER_KEY_FILE",),
    "checkpoint_lines": ("MEMBRANE_CHECKPOINT_LINES",),
    "checkpoint_interval_s": ("MEMBRANE_CHECKPOINT_INTERVAL",),
    "checkpoint_file": ("MEMBRANE_CHECKPOINT_FILE",),
    "event_async": ("MEMBRANE_EVENT_ASYNC", "AGI_EVENT_ASYNC"),
    "event_buffer_size": ("MEMBRANE_EVENT_BUFFER_SIZE", "AGI_EVENT_BUFFER_SIZE"),
    "event_flush_interval_s": ("MEMBRANE_EVENT_FLUSH_INTERVAL", "AGI_EVENT_FLUSH_INTERVAL"),
}

_OPTIONAL_FIELDS = {
    "bus_token",
    "bridge_token",
    "bus_ca_file",
    "trace_config",
    "trace_output",
    "collector_health_url",
    "ledger_key",
    "ledger_key_file",
    "checkpoint_file",
}


def _state_dir(environ: dict[str, str] | None = None) -> Path:
    from membrane_otel._internal.state import state_dir

    return state_dir(environ)


def _read_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Raw values from the environment, and which variable each field came from."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for field, names in ENV_VARS.items():
        for name in names:
            if name in environ:
                raw = environ[name]
                source[field] = name
                if field == "redact_patterns":
                    values[field] = _parse_patterns(name, raw)
                elif field == "state_dir":
                    values[field] = _state_dir({"XDG_STATE_HOME": raw})
                elif field in _OPTIONAL_FIELDS and raw == "":
                    values[field] = None
                else:
                    values[field] = raw.strip()
                break
    return values, source


def _parse_patterns(var: str, raw: str) -> tuple[str, ...]:
    if not raw.strip():
        return ()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise ConfigError(
            f'{var} is not valid: expected a JSON array of regex strings, e.g. ["sess-[0-9a-f]+"]'
        )
    import re

    for p in data:
        try:
            re.compile(p)
        except re.error as exc:
            raise ConfigError(f"{var} is not valid: pattern {p!r} does not compile ({exc})") from None
    return tuple(data)


# The seed's settings file, read from the working directory when MEMBRANE_TRACE_CONFIG is unset.
DEFAULT_TRACE_CONFIG = Path("config/settings.yaml")


def _trace_file(path: Path, *, implicit: bool = False) -> dict[str, Any]:
    """The seed's optional settings file: ``tracing: {enabled, output, level}``.

    ``implicit`` (``config/settings.yaml`` found in the working directory, not named by the
    user): a file that cannot be parsed or has no ``tracing:`` section is someone else's
    settings and is ignored.
    """
    label = str(path) if implicit else f"MEMBRANE_TRACE_CONFIG={str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        if implicit:
            return {}
        raise ConfigError(f"{label} cannot be read: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        if implicit:
            return {}
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{label} is not valid YAML/TOML: {first}") from None
    if implicit and not (isinstance(data, dict) and "tracing" in data):
        return {}
    section = data.get("tracing", data) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{label} is not valid: expected a 'tracing:' mapping")
    out: dict[str, Any] = {}
    if "enabled" in section:
        out["trace"] = bool(section["enabled"])
    if section.get("output"):
        # Trace lines go there as well as to the ledger (the seed's trace.jsonl).
        out["trace_output"] = section["output"]
    if "level" in section:
        out["trace_level"] = str(section["level"]).lower()
    return out


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from defaults < trace file < environment < ``overrides``."""
    env = os.environ if environ is None else environ
    values, source = _read_env(env)
    trace_file = overrides.get("trace_config", values.get("trace_config"))
    implicit = not trace_file and "trace_config" not in values and DEFAULT_TRACE_CONFIG.is_file()
    if trace_file or implicit:
        file_values = _trace_file(Path(trace_file or DEFAULT_TRACE_CONFIG), implicit=implicit)
        for key, value in file_values.items():
            if key not in values:
                values[key] = value
                source[key] = (
                    f"{DEFAULT_TRACE_CONFIG} tracing.{key.removeprefix('trace_')}"
                    if implicit
                    else "MEMBRANE_TRACE_CONFIG"
                )
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "state_dir" not in values:  # from the environment given, not necessarily os.environ
        values["state_dir"] = _state_dir({"XDG_STATE_HOME": env.get("XDG_STATE_HOME", "")})
    if "spool_dir" not in values:
        values["spool_dir"] = Path(values["state_dir"]) / "spool"
    for key in overrides:
        source.pop(key, None)
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: expected one of {', '.join(sorted(known))}")
    try:
        return Settings(**values)
    except _FieldError as exc:
        where = source.get(exc.field) or f"argument {exc.field}"
        raise ConfigError(f"{where}={exc.value!r} is not valid: {exc.reason}") from None


_current: Settings | None = None


def get_settings() -> Settings:
    """The active settings: those given to ``configure()``, else read from the environment once."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def set_settings(settings: Settings | None) -> None:
    global _current
    _current = settings
