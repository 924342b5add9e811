"""What runs on the application thread before anything is queued: ids, redaction, fingerprints."""

from __future__ import annotations

import logging

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
