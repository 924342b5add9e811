"""What runs on the application thread before anything is queued: ids, redaction, fingerprints."""

from __future__ import annotations

import logging

import pytest

from membrane_otel.testing import capture


def test_extra_fields_are_redacted_by_key_and_value() -> None:
    """A plain logger's extra fields: secrets by key name and by value pattern are redacted."""
    log = logging.getLogger("plain.app")
    with capture() as got:
        log.error(
            "login failed for bob", extra={"password": "hunter2", "note": "Authorization: Bearer abc.def"}
        )
    (line,) = got.ledger_lines("script_error")
    assert line["password"] == "<REDACTED>"
    assert "abc.def" not in line["note"]
    assert "hunter2" not in str(line)


def test_every_record_gets_a_stable_id() -> None:
    """Each record carries a record id, the key that makes replays idempotent."""
    with capture() as got:
        logging.getLogger("plain.app").error("one")
        logging.getLogger("plain.app").error("two")
    ids = [ln["record_id"] for ln in got.ledger_lines("script_error")]
    assert len(set(ids)) == 2 and all(len(i) == 24 for i in ids)


def test_plain_logger_errors_get_fingerprint_and_dedupe_key() -> None:
    """Errors from any logger (not only setup_l2_logger) are fingerprinted, from the traceback."""
    log = logging.getLogger("plain.app")
    with capture() as got:
        for n in (17, 18):
            try:
                raise ValueError(f"bad citizen {n}")
            except ValueError:
                log.exception("Bootstrap failed for %d", n)
    a, b = got.ledger_lines("script_error")
    assert len(a["membrane.fingerprint"]) == 40
    assert a["membrane.fingerprint"] == b["membrane.fingerprint"]
    assert a["membrane.dedupe_key"] == b["membrane.dedupe_key"]


def _straddling(secret: str) -> str:
    """10 MB of text with ``secret`` starting just before the 64 KB cut and ending past it."""
    head = "x" * (64 * 1024 - 40) + " api_key="
    return head + secret + " " + "word " * 2_000_000


def test_a_huge_message_is_cut_to_64_kb_after_the_redactor_read_past_the_cut() -> None:
    """A 10 MB message (or ``extra`` string) is cut before it is redacted (the caller's thread
    redacted all 10 MB: ~200 ms a call), but with a margin: a secret that starts before the
    64 KB cut and ends after it is redacted, not left half there for a later reader."""
    token = "sk_live_" + "Q7" * 20
    text = _straddling(token)
    log = logging.getLogger("plain.huge")
    with capture() as got:
        log.error(text)
        log.error("payload", extra={"blob": text})
    body, extra = got.ledger_lines("script_error")
    for value in (body["message"], extra["blob"]):
        assert len(value.encode()) <= 64 * 1024 and value.endswith("...<truncated>")
        assert value.startswith("xxxx")
        assert token[:12] not in value, value[-200:]  # no prefix of the secret survives the cut
        assert "<REDACTED>" in value[-200:]


def test_the_console_fallback_cuts_a_huge_message_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    """What stands in for ``logging.lastResort`` prints the same 64 KB, redacted past the cut."""
    from membrane_otel._internal.console_fallback import ConsoleWhenAlone

    token = "ghp_" + "Zk" * 20
    name = "plain_huge_alone"
    # A logger with no handler that does not propagate (pytest's own handlers sit on the root).
    logging.getLogger(name).propagate = False
    record = logging.LogRecord(name, logging.ERROR, __file__, 1, _straddling(token), None, None)
    assert ConsoleWhenAlone().filter(record) is True
    err = capsys.readouterr().err
    assert err.startswith("xxxx") and token[:10] not in err and "...<truncated>" in err
    assert len(err.encode()) < 66 * 1024
