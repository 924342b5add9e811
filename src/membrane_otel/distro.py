"""The ``opentelemetry_distro`` and ``opentelemetry_configurator`` entry points.

``opentelemetry-instrument python app.py`` loads :class:`MembraneDistro` (env defaults,
settings validated up front) and then :class:`MembraneConfigurator` (the SDK set-up), with
no change to the app. A bad ``MEMBRANE_*`` value stops start-up with one line naming it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # untyped module

from membrane_otel import settings as config
from membrane_otel._internal.compat import BaseConfigurator

__all__ = ["MembraneConfigurator", "MembraneDistro"]


# Read by the Collector configs in collector-config/, not by this package (one shell may set both).
_COLLECTOR_PREFIXES = ("MEMBRANE_COLLECTOR_", "MEMBRANE_JAEGER_", "MEMBRANE_GATEWAY_")


def _unknown_env_names(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``MEMBRANE_*`` variable that names no setting: a misspelt one
    (``MEMBRANE_FLUSH_INTERVAL`` for ``…_MS``) would otherwise be ignored without a word."""
    env = os.environ if environ is None else environ
    known = {name for names in config.ENV_VARS.values() for name in names}
    unknown = sorted(
        name
        for name in env
        if name.startswith("MEMBRANE_") and name not in known and not name.startswith(_COLLECTOR_PREFIXES)
    )
    if not unknown:
        return []
    import difflib  # only when there is something to say: start-up pays nothing otherwise

    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
        hint = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"{name} is not a membrane-otel setting, ignored{hint}")
    return lines


def _settings_or_exit(*, first: bool = False) -> config.Settings:
    try:
        from membrane_otel._setup import check_exporter_names

        check_exporter_names()
        settings = config.load_settings()
    except config.ConfigError as exc:
        # We run inside `site` (sitecustomize): raising would give the user a traceback
        # from the import system, or "Fatal Python error". Stop start-up with one line.
        print(f"membrane-otel: {exc}", file=sys.stderr, flush=True)
        os._exit(2)
    for line in _unknown_env_names() if first else ():  # a typo: a line (once), not a stop
        print(f"membrane-otel: {line}", file=sys.stderr, flush=True)
    return settings


class MembraneDistro(BaseDistro):  # type: ignore[misc]  # BaseDistro is Any to mypy
    """Sets our exporters as the defaults, as upstream's distro sets ``otlp``."""

    def _configure(self, **kwargs: Any) -> None:
        from membrane_otel._setup import _sdk_is_disabled, apply_env_defaults

        settings = _settings_or_exit(first=True)
        config.set_settings(settings)
        if not _sdk_is_disabled():
            apply_env_defaults(settings)

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        super().load_instrumentor(entry_point, **kwargs)
        # The logging instrumentation puts its handler on the root logger only now, after the
        # configurator ran: give it the console stand-in (also with OTEL_SDK_DISABLED=true,
        # when the handler is there but nothing else of ours is).
        from membrane_otel._internal.console_fallback import keep_console_output

        keep_console_output()


class MembraneConfigurator(BaseConfigurator):
    """Builds the SDK with membrane-otel's processors and exporters."""

    def _configure(self, **kwargs: Any) -> None:
        from membrane_otel._setup import configure

        _settings_or_exit()
        configure(_auto_instrumentation_version=kwargs.get("auto_instrumentation_version") or "unknown")
