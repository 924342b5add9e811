"""The shared tables: limits and truncation, severities and urgency, ledger keys, defaults.

Each table has this one home; every stage imports it from here. Standard library only and
no ``typing`` at run time, so the shell emitter can import it within its start-up budget.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Severity = Literal["info", "warn", "error", "critical"]
else:
    Severity = str

# ------------------------------------------------------------------ limits (seeds/000)

STACK_MAX_LINES = 60
STACK_MAX_BYTES = 16 * 1024
CONTENT_MAX_CHARS = 500
BODY_MAX_BYTES = 64 * 1024
# A text far past BODY_MAX_BYTES is cut first, to this, then redacted, then cut to
# BODY_MAX_BYTES: the redactor still reads 16 KiB past the final cut, so a secret that starts
# before it is seen whole (a PEM key block is ~3 KB), and the caller's thread redacts ~80 KB,
# not the whole text (a 10 MB message cost the logging call ~200 ms; plain logging, 16 ms).
PRE_CUT = BODY_MAX_BYTES + 16 * 1024
TRUNCATED = "...<truncated>"

# ------------------------------------------------------------------------- defaults

DEFAULT_BUS_URL = "ws://127.0.0.1:8000/api/ws"
DEFAULT_LEDGER_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024

# ------------------------------------------------------------------------ ledger keys

ID_KEYS = ("task_id", "persona_id", "session_id")
# The event name of a membrane stimulus record (the one event that becomes an envelope).
STIMULUS_EVENT = "membrane.stimulus"
# Keys a ledger line owns; a payload field of the same name is kept as payload_<name>.
RESERVED = frozenset(
    ("event", "ts", "ts_unix", "otel_trace_id", "otel_span_id", "record_id", "seq", "prev_hash", "hash")
)


def iso(ns: int) -> str:
    """ISO 8601 UTC with milliseconds, as every ledger line's ``ts`` (``2025-10-30T12:00:00.123Z``)."""
    # time, not datetime: one import less for the shell emitter; integer arithmetic, so the
    # milliseconds are truncated exactly rather than rounded through a float.
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


# -------------------------------------------------------------- severity and urgency

# OTel severity numbers (logs data model) at the bottom of each range.
SEV_INFO, SEV_WARN, SEV_ERROR, SEV_FATAL = 9, 13, 17, 21
# Python logging levels (as numbers: importing logging costs the emitter start-up).
_CRITICAL, _ERROR, _WARNING = 50, 40, 30
_LEVEL_FLOORS: tuple[tuple[int, Severity], ...] = (
    (_CRITICAL, "critical"),
    (_ERROR, "error"),
    (_WARNING, "warn"),
)
_OTEL_FLOORS: tuple[tuple[int, Severity], ...] = (
    (SEV_FATAL, "critical"),
    (SEV_ERROR, "error"),
    (SEV_WARN, "warn"),
)
URGENCY: dict[str, float] = {"critical": 0.95, "error": 0.7, "warn": 0.4, "info": 0.2}
# The seeds' severity names (and their aliases) → (OTel severity number, severity text).
OTEL_SEVERITY: dict[str, tuple[int, str]] = {
    "debug": (5, "DEBUG"),
    "info": (SEV_INFO, "INFO"),
    "warn": (SEV_WARN, "WARN"),
    "warning": (SEV_WARN, "WARN"),
    "error": (SEV_ERROR, "ERROR"),
    "critical": (SEV_FATAL, "FATAL"),
    "fatal": (SEV_FATAL, "FATAL"),
}

# OTel's severity texts → the seeds' level names, for ledger lines and envelope metadata.
SEED_LEVEL_NAMES: dict[str, str] = {"WARN": "WARNING", "FATAL": "CRITICAL"}


def level_to_severity(levelno: int) -> Severity:
    """A Python logging level → the seeds' categorical severity (DEBUG counts as info)."""
    for floor, name in _LEVEL_FLOORS:
        if levelno >= floor:
            return name
    return "info"


def otel_to_severity(severity_number: int) -> Severity:
    """An OTel severity number → the seeds' categorical severity (ERROR 17 → ``error``)."""
    for floor, name in _OTEL_FLOORS:
        if severity_number >= floor:
            return name
    return "info"


def severity_to_urgency(severity: Severity | int) -> float:
    """Severity (``"error"``) or logging level (``40``) → urgency: INFO 0.2, WARNING 0.4,
    ERROR 0.7, CRITICAL 0.95."""
    if isinstance(severity, int):
        severity = level_to_severity(severity)
    return URGENCY.get(severity, 0.2)


# ------------------------------------------------------------------ attribute values


def attr_value(value: object, *, sort_keys: bool = False) -> object:
    """A value OTel accepts as an attribute: scalars and lists of one scalar type stay as
    they are; anything else becomes its JSON text (the SDK would drop it with a warning)."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        kinds = {type(v) for v in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return list(value)
    import json

    try:
        return json.dumps(value, default=str, ensure_ascii=False, sort_keys=sort_keys)
    except (TypeError, ValueError):  # mixed key types, cycles: the text form still says something
        try:
            return str(value)
        except Exception:  # a broken __str__ must not break the caller
            return f"<unprintable {type(value).__name__}>"


# ------------------------------------------------------------------------ identifiers


def slug(text: str) -> str:
    """``text`` as an identifier part: every run of non-alphanumerics one ``_`` (channel names, ids)."""
    return _sub(r"[^0-9A-Za-z]+", text).strip("_") or "unknown"


def node_id(script_path: str) -> str:
    """The graph node id of a script: ``orchestration/scripts/x.py`` →
    ``code_substrate_orchestration_scripts_x_py`` (each non-alphanumeric becomes ``_``)."""
    path = script_path.replace("\\", "/")
    while path.startswith(("./", "/")):
        path = path[2:] if path.startswith("./") else path[1:]
    return "code_substrate_" + _sub(r"[^A-Za-z0-9_]", path)


def _sub(pattern: str, text: str) -> str:
    # re is imported on first use: the shell emitter, which imports this module, never slugs.
    import re

    return re.sub(pattern, "_", text)  # re caches the compiled pattern


# ------------------------------------------------------------------------------ truncation


def _cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``max_bytes``."""
    if max_bytes <= 0:
        return ""
    if len(text) * 4 <= max_bytes:  # cannot exceed: skip the encode
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    end = max_bytes
    while end > 0 and (data[end] & 0xC0) == 0x80:  # back off to a character boundary
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass")


def truncate(
    text: str,
    limit: int,
    *,
    unit: str = "chars",  # "chars" or "bytes"
    marker: str = TRUNCATED,
) -> str:
    """``text`` unchanged if it fits ``limit`` (characters, or UTF-8 bytes), else its head
    plus ``marker``, the whole within ``limit``. Never splits a character."""
    if unit == "chars":
        if len(text) <= limit:
            return text
        if limit < len(marker):
            return text[: max(limit, 0)]
        return text[: limit - len(marker)] + marker
    if len(text) * 4 <= limit or len(text.encode("utf-8", "surrogatepass")) <= limit:
        return text
    room = limit - len(marker.encode("utf-8"))
    if room < 0:
        return _cut_utf8(text, limit)
    return _cut_utf8(text, room) + marker


def truncate_stack(text: str, max_lines: int = STACK_MAX_LINES, max_bytes: int = STACK_MAX_BYTES) -> str:
    """A stack trace cut to its first ``max_lines`` lines and ``max_bytes`` UTF-8 bytes,
    with a last line ``...<truncated>`` when anything was cut (the marker line is within
    ``max_bytes`` but not counted in ``max_lines``)."""
    # Find the end of line max_lines without splitting the whole text.
    end = -1
    for _ in range(max_lines):
        end = text.find("\n", end + 1)
        if end < 0:
            break
    cut_lines = end >= 0 and end + 1 < len(text)
    head = text[: end + 1] if cut_lines else text
    if not cut_lines and (
        len(head) * 4 <= max_bytes or len(head.encode("utf-8", "surrogatepass")) <= max_bytes
    ):
        return text
    head = _cut_utf8(head, max_bytes - len(TRUNCATED) - 1)  # room for "\n" + marker
    return head + ("" if not head or head.endswith("\n") else "\n") + TRUNCATED
