"""The README's settings table, generated from the settings model so the two cannot drift.

``python -m membrane_otel._internal.settings_doc README.md`` rewrites the table between the
``<!-- settings-table:start -->`` and ``<!-- settings-table:end -->`` markers; a test fails
when README and model differ. One row per field: its variable(s) from ``ENV_VARS``, its
default, and its description (the text after ``VARIABLE…:``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from membrane_otel.settings import ENV_VARS, Settings

START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
_MIB = 1024 * 1024


def _default(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "computed (see meaning)"
    if value is None or value == ():
        return "—"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, int) and value >= _MIB and value % _MIB == 0:
        return f"{value // _MIB} MiB"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _meaning(description: str | None) -> str:
    text = description or ""
    head, sep, rest = text.partition(": ")
    meaning = rest if sep and head.split()[0].isupper() else text
    return meaning.replace("|", "\\|").replace("<", "&lt;")


def settings_table() -> str:
    """The markdown table of every setting, in the model's field order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for info in dataclasses.fields(Settings):
        name = info.name
        names = ENV_VARS.get(name, ())
        if not names:
            continue
        var = f"`{names[0]}`" + "".join(f" (alias `{alias}`)" for alias in names[1:])
        default = dataclasses.MISSING if info.default_factory is not dataclasses.MISSING else info.default
        shown = _default(default)
        if name == "l2_level":  # a logging level: its name reads better than 40
            shown = "`ERROR`"
        elif name.endswith("_mode") and isinstance(default, int):  # file modes read in octal
            shown = f"`{default:04o}`"
        rows.append(f"| {var} | {shown} | {_meaning(info.metadata['description'])} |")
    return "\n".join(rows)


def readme_with_table(text: str) -> str:
    """``text`` with the table between the markers replaced by the generated one."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[:start] + "\n" + settings_table() + "\n" + text[end:]


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    path.write_text(readme_with_table(path.read_text()))
