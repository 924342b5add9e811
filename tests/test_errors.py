"""Error identity and shape: fingerprints, dedupe keys, node ids, severities, truncation."""

from __future__ import annotations

import importlib.util
import logging
import sys
import traceback
from pathlib import Path
from types import ModuleType

import pytest

from membrane_otel.logs._errors import (
    BODY_MAX_BYTES,
    CONTENT_MAX_CHARS,
    STACK_MAX_BYTES,
    STACK_MAX_LINES,
    TRUNCATED,
    capture_call_site,
    capture_exception,
    capture_frames,
    dedupe_key,
    exception_type_name,
    fingerprint_from_stacktrace,
    level_to_severity,
    node_id,
    normalise_message,
    render_stack,
    severity_to_urgency,
    stack_fingerprint,
    truncate,
    truncate_stack,
)

# A small "script": two entry points reaching the same failing function.
WORKER = """\
{pad}def load(cfg):
{pad}    return parse(cfg)


{pad}def load_other_way(cfg):
{pad}    return parse(cfg)


{pad}def parse(cfg):
{pad}    return cfg["missing"]


{pad}def fail_with(value):
{pad}    raise ValueError(value)
"""


def _load(directory: Path, name: str, blank_lines: int) -> ModuleType:
    """Write the worker module into ``directory`` (with extra blank lines) and import it."""
    directory.mkdir(parents=True)
    path = directory / "worker.py"
    source = "\n" * blank_lines + WORKER.replace("{pad}", "")
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raised(fn: object, *args: object) -> BaseException:
    try:
        fn(*args)
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


@pytest.fixture
def two_deployments(tmp_path: Path) -> tuple[ModuleType, ModuleType]:
    """The same worker at two absolute paths, its lines shifted differently."""
    first = _load(tmp_path / "releases" / "v1" / "app", "worker_v1", blank_lines=0)
    second = _load(tmp_path / "elsewhere" / "srv", "worker_v2", blank_lines=7)
    return first, second


def test_fingerprint_is_stable_across_paths_and_line_edits(
    two_deployments: tuple[ModuleType, ModuleType],
) -> None:
    """The same error from a moved, edited copy of a file has the same fingerprint."""
    first, second = two_deployments
    exc1, exc2 = _raised(first.load, {}), _raised(second.load, {})
    lines1 = [ln for _, ln, _ in capture_frames(exc1.__traceback__)]
    lines2 = [ln for _, ln, _ in capture_frames(exc2.__traceback__)]
    assert lines1 != lines2  # the edit really moved the code
    assert stack_fingerprint(exc1.__traceback__) == stack_fingerprint(exc2.__traceback__)


def test_fingerprint_differs_by_call_path(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """The same failing function reached another way is another error."""
    first, _ = two_deployments
    via_load = stack_fingerprint(_raised(first.load, {}).__traceback__)
    via_other = stack_fingerprint(_raised(first.load_other_way, {}).__traceback__)
    assert via_load != via_other


def test_fingerprint_is_forty_hex_chars(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """A fingerprint is a full sha1 hex digest."""
    fp = stack_fingerprint(_raised(two_deployments[0].load, {}).__traceback__)
    assert len(fp) == 40 and int(fp, 16) >= 0


def test_fingerprint_uses_the_five_innermost_frames() -> None:
    """Frames beyond the 5 innermost (callers further out) do not change the fingerprint."""
    inner = [("/a/x.py", "f1"), ("/a/x.py", "f2"), ("/a/y.py", "f3"), ("/a/y.py", "f4"), ("/a/z.py", "f5")]
    assert stack_fingerprint(frames=[("/a/main.py", "main"), *inner]) == stack_fingerprint(frames=inner)
    assert stack_fingerprint(frames=[*inner, ("/a/z.py", "f6")]) != stack_fingerprint(frames=inner)


def test_fingerprint_ignores_directories_but_not_package_of_init() -> None:
    """Only the basename counts, except that __init__.py keeps its package name."""
    assert stack_fingerprint(frames=[("/srv/a/mod.py", "f")]) == stack_fingerprint(
        frames=[("C:\\b\\mod.py", "f")]
    )
    assert stack_fingerprint(frames=[("/srv/pkg_a/__init__.py", "f")]) != stack_fingerprint(
        frames=[("/srv/pkg_b/__init__.py", "f")]
    )


def test_fingerprint_from_frames_matches_traceback(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """Captured frame triples give the same fingerprint as the live traceback."""
    exc = _raised(two_deployments[0].load, {})
    assert stack_fingerprint(frames=capture_frames(exc.__traceback__)) == stack_fingerprint(exc.__traceback__)
    assert capture_exception(exc).fingerprint == stack_fingerprint(exc.__traceback__)


def test_fingerprint_from_rendered_text_matches(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """A record that arrives with only its stack text gets the same fingerprint."""
    exc = _raised(two_deployments[0].load, {})
    text = "".join(traceback.format_exception(exc))
    assert fingerprint_from_stacktrace(text) == stack_fingerprint(exc.__traceback__)


def test_fingerprint_from_text_expands_repeated_frames() -> None:
    """'[Previous line repeated N more times]' stands for N more frames."""

    def recurse(n: int) -> None:
        if n == 0:
            raise RecursionError("deep")
        recurse(n - 1)

    exc = _raised(recurse, 8)
    text = "".join(traceback.format_exception(exc))
    assert "Previous line repeated" in text
    assert fingerprint_from_stacktrace(text) == stack_fingerprint(exc.__traceback__)
    assert fingerprint_from_stacktrace("no traceback here") is None


def test_call_site_fingerprint_without_exception() -> None:
    """An error logged with no exception still gets a fingerprint, from its call site."""

    def here() -> str:
        return stack_fingerprint()

    def there() -> str:
        return stack_fingerprint()

    assert here() == here()
    assert here() != there()


class _FingerprintingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.fingerprints: list[str] = []
        self.sites: list[tuple[tuple[str, int, str], ...]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.fingerprints.append(stack_fingerprint())
        self.sites.append(capture_call_site())


def test_call_site_fingerprint_skips_logging_internals() -> None:
    """Taken inside a handler, the fingerprint is that of the logger.error(...) call."""
    handler = _FingerprintingHandler()
    logger = logging.getLogger("test_errors.call_site")
    logger.propagate = False
    logger.addHandler(handler)
    try:

        def site() -> str:
            direct = stack_fingerprint()
            logger.error("Bootstrap failed for %s", 17)
            return direct

        direct = site()
    finally:
        logger.removeHandler(handler)
    assert handler.fingerprints == [direct]
    innermost_file, _, innermost_function = handler.sites[0][-1]
    assert innermost_function == "site" and innermost_file == __file__
    assert stack_fingerprint(frames=handler.sites[0]) == direct


def test_call_site_from_given_frame() -> None:
    """stack= takes the innermost frame to start from."""
    frame = sys._getframe()
    assert stack_fingerprint(stack=frame) == stack_fingerprint(stack=frame)
    assert stack_fingerprint(stack=frame) != stack_fingerprint(stack=frame.f_back)


def test_capture_frames_holds_plain_data(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """Captured frames are (file, line, function) tuples, outermost first, no frame objects."""
    exc = _raised(two_deployments[0].load, {})
    frames = capture_frames(exc.__traceback__)
    assert [fn for _, _, fn in frames] == ["_raised", "load", "parse"]
    assert all(type(f) is str and type(ln) is int and type(n) is str for f, ln, n in frames)


def test_capture_frames_keeps_innermost_when_limited() -> None:
    """A very deep traceback keeps its innermost frames."""

    def recurse(n: int) -> None:
        if n == 0:
            raise ValueError("bottom")
        recurse(n - 1)

    frames = capture_frames(_raised(recurse, 100).__traceback__, limit=10)
    assert len(frames) == 10
    assert all(fn == "recurse" for _, _, fn in frames)


def test_render_matches_the_standard_traceback(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """Rendering captured data later gives exactly traceback.format_exception's text."""
    exc = _raised(two_deployments[0].load, {})
    assert capture_exception(exc).render() == "".join(traceback.format_exception(exc))


def test_render_includes_chained_exceptions_and_notes(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """Causes, handling contexts and notes render as Python prints them."""
    module = two_deployments[0]

    def explicit() -> None:
        try:
            module.load({})
        except KeyError as exc:
            raise RuntimeError("config broken") from exc

    def implicit() -> None:
        try:
            module.load({})
        except KeyError:
            err = ValueError("while handling")
            err.add_note("note: retried 3 times")
            raise err  # noqa: B904 -- the implicit "During handling" chain is what this test renders

    for fn in (explicit, implicit):
        exc = _raised(fn)
        assert capture_exception(exc).render() == "".join(traceback.format_exception(exc))


def test_render_stack_from_frames_only(two_deployments: tuple[ModuleType, ModuleType]) -> None:
    """From bare frame triples the text has the standard shape, source lines included."""
    exc = _raised(two_deployments[0].load, {})
    text = render_stack("KeyError", "'missing'", capture_frames(exc.__traceback__))
    assert text.startswith("Traceback (most recent call last):\n  File ")
    assert '    return cfg["missing"]\n' in text
    assert text.endswith("KeyError: 'missing'\n")
    assert render_stack("StopIteration", "", []) == "Traceback (most recent call last):\nStopIteration\n"


def test_capture_exception_with_broken_str() -> None:
    """An exception whose __str__ raises is still captured."""

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    def fail() -> None:
        raise Broken()

    captured = capture_exception(_raised(fail))
    assert captured.message == "<exception str() failed>"
    assert captured.type_name.endswith("Broken")


def test_exception_type_name() -> None:
    """Builtins are bare, others qualified by module."""
    assert exception_type_name(KeyError) == "KeyError"
    assert exception_type_name(logging.Handler) == "logging.Handler"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Bootstrap failed for 17", "Bootstrap failed for 18"),
        ("KeyError: 'citizen_a'", "KeyError: 'citizen_b'"),
        ('lookup "alice" failed', 'lookup "bob" failed'),
        (
            "request 123e4567-e89b-12d3-a456-426614174000 timed out",
            "request 00000000-0000-4000-8000-000000000000 timed out",
        ),
        ("object at 0x7f3a2c0d10 closed", "object at 0x7f99aa00ff closed"),
        ("task 8f2a61c0d9e4 failed", "task 01b2c3d4e5f6 failed"),
        ("mail to a@example.com bounced", "mail to b.c@example.org bounced"),
        ("connect 10.0.0.1:5432 refused", "connect 192.168.1.20:6543 refused"),
        ("at 2025-01-01T10:00:00Z retry 1", "at 2025-02-03 11:12:13.456 retry 2"),
        ("took 1.5 s, -3 left", "took 20.25 s, 4 left"),
        ("citizen_17 missing", "citizen_42 missing"),
    ],
)
def test_dedupe_key_groups_messages_differing_in_ids(a: str, b: str) -> None:
    """Messages that differ only in ids, numbers or quoted values share a dedupe key."""
    assert dedupe_key("resurrect", "KeyError", a, "f" * 40) == dedupe_key(
        "resurrect", "KeyError", b, "f" * 40
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Bootstrap failed for 17", "Shutdown failed for 17"),
        ("utf8 decode failed", "utf16 decode failed"),
        ("http2 stream reset", "http3 stream reset"),
    ],
)
def test_dedupe_key_separates_different_messages(a: str, b: str) -> None:
    """Different wording, or numbers that are part of a name, are different errors."""
    assert dedupe_key("s", "E", a, "f" * 40) != dedupe_key("s", "E", b, "f" * 40)


def test_dedupe_key_covers_every_part() -> None:
    """Script, error type and fingerprint each change the key."""
    base = dedupe_key("s", "E", "m", "a" * 40)
    assert len({base, dedupe_key("t", "E", "m", "a" * 40), dedupe_key("s", "F", "m", "a" * 40),
                dedupe_key("s", "E", "m", "b" * 40)}) == 4  # fmt: skip
    assert dedupe_key("s", None, "m", "a" * 40) == dedupe_key("s", "", "m", "a" * 40)


def test_normalise_message_placeholders() -> None:
    """Each kind of variable part has its own placeholder; apostrophes in words are not quotes."""
    assert normalise_message("can't load user's file 3") == "can't load user's file <n>"
    assert normalise_message("id 'x' at 0xdead") == "id <str> at <hex>"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "orchestration/scripts/resurrect_all_citizens.py",
            "code_substrate_orchestration_scripts_resurrect_all_citizens_py",
        ),
        ("orchestration/scripts/x.py", "code_substrate_orchestration_scripts_x_py"),
        ("./orchestration/services/queue-poller.py", "code_substrate_orchestration_services_queue_poller_py"),
        (
            "orchestration\\services\\health\\health_checks.py",
            "code_substrate_orchestration_services_health_health_checks_py",
        ),
        ("/abs/Tool.py", "code_substrate_abs_Tool_py"),
    ],
)
def test_node_id(path: str, expected: str) -> None:
    """Script path → the seed's code_substrate_ node id."""
    assert node_id(path) == expected


@pytest.mark.parametrize(
    ("level", "severity", "urgency"),
    [
        (logging.DEBUG, "info", 0.2),
        (logging.INFO, "info", 0.2),
        (logging.WARNING, "warn", 0.4),
        (logging.ERROR, "error", 0.7),
        (logging.ERROR + 5, "error", 0.7),
        (logging.CRITICAL, "critical", 0.95),
    ],
)
def test_severity_and_urgency(level: int, severity: str, urgency: float) -> None:
    """Logging levels map to the design's severity and urgency."""
    assert level_to_severity(level) == severity
    assert severity_to_urgency(level) == urgency
    assert severity_to_urgency(level_to_severity(level)) == urgency


def test_truncate_chars_at_the_content_limit() -> None:
    """Content up to 500 chars is kept whole; longer is cut to exactly 500 with the marker."""
    assert truncate("x" * CONTENT_MAX_CHARS, CONTENT_MAX_CHARS) == "x" * CONTENT_MAX_CHARS
    cut = truncate("x" * (CONTENT_MAX_CHARS + 1), CONTENT_MAX_CHARS)
    assert len(cut) == CONTENT_MAX_CHARS and cut.endswith(TRUNCATED)
    assert truncate("abcdef", 3) == "abc"  # no room for the marker


def test_truncate_bytes_at_the_body_limit_is_utf8_safe() -> None:
    """A body over 64 KB is cut within 64 KB of UTF-8 without splitting a character."""
    body = "é" * BODY_MAX_BYTES  # 2 bytes each: twice the limit
    cut = truncate(body, BODY_MAX_BYTES, unit="bytes")
    encoded = cut.encode("utf-8")
    assert len(encoded) <= BODY_MAX_BYTES and cut.endswith(TRUNCATED)
    assert set(cut[: -len(TRUNCATED)]) == {"é"}
    fits = "é" * (BODY_MAX_BYTES // 2)
    assert truncate(fits, BODY_MAX_BYTES, unit="bytes") is fits
    emoji = truncate("😀" * 10, 17, unit="bytes", marker="…")
    assert emoji == "😀" * 3 + "…" and len(emoji.encode()) <= 17


def _stack(lines: int, width: int = 10) -> str:
    return "".join(f"{i:0{width}d}\n" for i in range(lines))


def test_truncate_stack_keeps_sixty_lines() -> None:
    """60 lines pass unchanged; 61 are cut to 60 plus a ...<truncated> line."""
    assert truncate_stack(_stack(STACK_MAX_LINES)) == _stack(STACK_MAX_LINES)
    assert truncate_stack(_stack(STACK_MAX_LINES).rstrip("\n")) == _stack(STACK_MAX_LINES).rstrip("\n")
    cut = truncate_stack(_stack(STACK_MAX_LINES + 1))
    assert cut == _stack(STACK_MAX_LINES) + TRUNCATED


def test_truncate_stack_keeps_sixteen_kilobytes() -> None:
    """Fewer, longer lines are cut at 16 KB (marker included), on a character boundary."""
    text = "".join("ü" * 999 + "\n" for _ in range(20))  # 20 lines, ~40 KB
    cut = truncate_stack(text)
    assert len(cut.encode("utf-8")) <= STACK_MAX_BYTES
    assert cut.endswith("\n" + TRUNCATED)
    assert text.startswith(cut[: -len(TRUNCATED) - 1])
    exact = "a" * (STACK_MAX_BYTES - 1) + "\n"
    assert truncate_stack(exact) == exact
