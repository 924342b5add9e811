"""The ``opentelemetry_distro`` and ``opentelemetry_configurator`` entry points.

``opentelemetry-instrument python app.py`` loads :class:`MembraneDistro` (env defaults,
settings validated up front) and then :class:`MembraneConfigurator` (the SDK set-up), with
no change to the app. A bad ``MEMBRANE_*`` value stops start-up with one line naming it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # untyped module

from membrane_otel import settings as config
from membrane_otel._internal.compat import BaseConfigurator

__all__ = ["MembraneConfigurator", "MembraneDistro"]


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
    for line in config.unknown_env_names() if first else ():  # a typo: a line (once), not a stop
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
