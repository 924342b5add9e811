r"""The rules' shape and the structural rules: key/value pairs in every syntax a log line carries.

Speed: most log lines hold no secret, so what matters is the cost of *not* matching. ``re``
skips ahead fast only to a literal prefix (~0.4 µs per KB, as fast as ``in``); a pattern that
starts with a class, ``\b``, a lookbehind or ``(?i)`` tries every position (~9-90 µs per KB).
So every rule starts with a literal and asserts its left boundary by a lookbehind *after* it,
and case-insensitive rules are lowercase patterns run over ``text.lower()`` (computed once);
that literal is also the rule's gate (logs/_redact_engine.py runs a rule only where it occurs).

A replacement is a fixed string or a function of ``(match, text)`` (:data:`Out`): None keeps
the match, a string replaces it, ``(start, new[, end])`` replaces another stretch (the value
alone, a secret that began before the match or runs past it).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

from membrane_otel.logs._redact_keys import CURSOR_TOKENS, KEY_PREFIXES, PLACEHOLDER, is_masked

# None keeps the match; a string replaces it; (start, new) replaces from ``start`` (before the
# match: the secret began earlier) to its end; (start, new, end) replaces text[start:end].
Out = str | tuple[int, str] | tuple[int, str, int] | None
Repl = Callable[["re.Match[str]", str], Out]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    regex: re.Pattern[str]
    repl: str | Repl
    # Lowercase rules run on the text lowercased (``lowered``: same length, same positions).
    lower: bool = False
    # Characters before the match that belong to the secret (asserted by a lookbehind).
    lead: int = 0
    # Words of which one must occur for the rule to run, when the literal its pattern starts
    # with is a poor gate (one common character, or text a replacement could form): a token
    # family's prefixes, "key=" for the "=" of a signed URL. Otherwise the engine reads the
    # gate off the pattern (logs/_redact_engine.py).
    needs: tuple[str, ...] = ()


def ci(name: str, pattern: str, repl: str | Repl, flags: int = 0, needs: tuple[str, ...] = ()) -> Rule:
    """A case-insensitive rule; ``pattern`` is written in lowercase."""
    return Rule(name, re.compile(pattern, flags), repl, True, needs=needs)


# ------------------------------------------------------------------ key = value building blocks

# The same words as fixed-width lookbehinds behind a literal "key", so the regex starts with a literal.
KEY_LOOKBEHIND = "(?:" + "|".join(f"(?<={re.escape(p)}key)" for p in KEY_PREFIXES) + ")"
# The key must end where the word ends: "tokens_saved" or "token.expiry" are other keys.
KEY_END = r"(?![a-z0-9_.\-])"
# Optional closing quote of the key (also the escaped \" of JSON inside a string), separator
# (=, :, :=, =>, the full-width colon of CJK text).
SEP = r"""(?P<sep>\\?["']?[ \t]*(?:=>|:=|[:=：])[ \t]*)"""
# A value: escaped-JSON, double- or single-quoted (unterminated quotes run to the end of the
# line, so a truncated record leaks nothing), a Go-style [list], or a bare run up to a delimiter.
VALUE = (
    r'(?:\\"(?P<ev>[^"\\\r\n]*)\\"'
    r"""|b?"(?P<dv>[^"\\\r\n]*+(?:\\.[^"\\\r\n]*+)*+)(?:"|(?=[\r\n])|\Z)"""
    r"""|b?'(?P<sv>[^'\\\r\n]*+(?:\\.[^'\\\r\n]*+)*+)(?:'|(?=[\r\n])|\Z)"""
    r"""|\[(?P<bv>[^\]\r\n]*)(?:\]|(?=[\r\n])|\Z)"""
    r"""|(?P<uv>[^\s'",;&}\])\\]+))"""
)
VALUE_GROUPS = ("ev", "dv", "sv", "bv", "uv", "cred")


def _value_span(m: re.Match[str]) -> tuple[int, int]:
    # The value is the last group a rule closes: one lookup, not a walk over the names.
    last = m.lastgroup
    if last in VALUE_GROUPS:
        return m.span(last)
    index = m.re.groupindex
    for group in VALUE_GROUPS:
        if group in index and m.start(group) >= 0:
            return m.span(group)
    return -1, -1


def replace_value(m: re.Match[str], text: str) -> Out:
    """Replace whichever value group matched, keeping the key, separator and quotes."""
    vs, ve = _value_span(m)
    if vs < 0 or is_masked(text[vs:ve]) or _is_masked_call(text, vs, ve):
        return None
    return vs, PLACEHOLDER, ve


def _is_masked_call(text: str, vs: int, ve: int) -> bool:
    # password=SecretStr('**********'): the bare value stops at the quote, the mask follows.
    return text[vs:ve].lower() in ("secretstr(", "secretbytes(") and text[ve : ve + 3] in (
        "'**",
        '"**',
        "b'*",
    )


def kv(word_pattern: str, sep: str = SEP) -> str:
    return word_pattern + KEY_END + sep + VALUE


def _path_or_cursor(m: re.Match[str], text: str) -> bool:
    """``/etc/passwd:`` is a path, ``next_page_token=`` a cursor: neither names a secret."""
    start = m.start()
    if start > 0 and text[start - 1] in "/\\":
        return True
    return False


def replace_keyed(m: re.Match[str], text: str) -> Out:
    if _path_or_cursor(m, text):
        return None
    return replace_value(m, text)


def replace_pwd(m: re.Match[str], text: str) -> Out:
    """``PWD=/home/x`` is the shell's working directory, not a password."""
    vs, ve = _value_span(m)
    key_start, floor = m.start(), max(0, m.start() - 8)
    while key_start > floor and (text[key_start - 1].isalnum() or text[key_start - 1] == "_"):
        key_start -= 1
    if text[key_start : m.start() + 3] in ("PWD", "OLDPWD") and text[vs : vs + 1] in ("/", "~"):
        return None
    return replace_keyed(m, text)


# Words that answer "authorization?" without being a credential: "Authorization: denied".
_AUTH_STATUS = frozenset(
    "denied failed failure granted required missing invalid expired error refused rejected ok none "
    "pending succeeded successful passed revoked header disabled enabled true false null".split()
)


def replace_authorization(m: re.Match[str], text: str) -> Out:
    vs, ve = m.span("cred")
    if m.start("scheme") < 0 and text[vs:ve].lower().rstrip(".!") in _AUTH_STATUS:
        return None
    return replace_value(m, text)


def _looks_like_password(value: str) -> bool:
    """A phrase's value ("das Passwort ist geheim123") must look like one: a digit with a
    letter, six digits, or a symbol; "the password is required" stays."""
    core = value.rstrip(".,;!?)")
    if len(core) < 4:
        return False
    has_digit = any(c.isdigit() for c in core)
    has_alpha = any(c.isalpha() for c in core)
    if has_digit and (has_alpha or len(core) >= 6):
        return True
    return any(c in "!@#$%^&*+=~|/<>{}[]" for c in core) and not core.startswith("<")


def replace_phrase(m: re.Match[str], text: str) -> Out:
    vs, ve = m.span("uv")
    if not _looks_like_password(text[vs:ve]) or is_masked(text[vs:ve]):
        return None
    return vs, PLACEHOLDER, ve


def replace_userinfo(m: re.Match[str], text: str) -> Out:
    user = m.group("user")
    if m.start("password") < 0:
        # ssh://git@host names a user, not a credential; a long or token-named one is a token.
        low = user.lower()
        if len(user) < 20 and not any(w in low for w in ("token", "key", "secret", "pass", "pat")):
            return None
        return f"://{PLACEHOLDER}@"
    if is_masked(m.group("password")):
        return None
    # redis://:secret@host has no user: keep it empty rather than invent one.
    return f"://{PLACEHOLDER if user else ''}:{PLACEHOLDER}@"


def replace_pem(m: re.Match[str], text: str) -> Out:
    """The block to its END line (``str.find``, linear), or to the end of a truncated text."""
    label = m.group("label")
    end_marker = f"-----END {label}-----"
    at = text.find(end_marker, m.end())
    end = len(text) if at < 0 else at + len(end_marker)
    return m.start(), f"-----BEGIN {label}-----{PLACEHOLDER}{end_marker}", end


def _is_basic_blob(value: str) -> bool:
    """A base64 ``user:password`` (Docker's ``"auth"``, a bare ``Basic …``)."""
    if len(value) < 8 or len(value) % 4 == 1:
        return False
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def replace_auth_blob(m: re.Match[str], text: str) -> Out:
    vs, ve = _value_span(m)
    value = text[vs:ve]
    if vs < 0 or is_masked(value):
        return None
    if _is_basic_blob(value) or (len(value) >= 16 and " " not in value):
        return vs, PLACEHOLDER, ve
    return None


def replace_basic(m: re.Match[str], text: str) -> Out:
    vs, ve = m.span("cred")
    if not _is_basic_blob(text[vs:ve]):
        return None
    return vs, PLACEHOLDER, ve


# Cursor keys end in "token" too; one lookbehind each, behind the literal.
TOKEN_NOT_CURSOR = "".join(f"(?<!{re.escape(c)})" for c in CURSOR_TOKENS)
