"""Which keys name a secret, and which values are no secret at all (already masked, empty, a literal).

Shared by the text rules (:mod:`membrane_otel.logs._redact_rules`) and by the value walker of
:class:`membrane_otel.logs._redact.Redactor`, so ``password=…`` in a line and ``{"password": …}``
in a payload follow one list.
"""

from __future__ import annotations

import re

PLACEHOLDER = "<REDACTED>"

# A key that ends in one of these words names a secret (``*_key`` words are in KEY_PREFIXES).
SECRET_WORDS = (
    r"password|passwd|passphrase|pwd|secret|token|credential"
    r"|passwort|kennwort|wachtwoord|contrase(?:ñ|n)a|senha|parola|haslo|hasło|пароль|密码|パスワード"
    r"|(?:api|access|secret|private|signing|encryption|account|shared[_-]?access|auth|session|master"
    r"|client|license|subscription|webhook)[_-]?key"
)
# What comes before a literal "key" for the key to name a secret ("cache_key", "sort_key" do not).
KEY_PREFIXES = tuple(
    p + sep
    for p in (
        "api",
        "access",
        "secret",
        "private",
        "signing",
        "encryption",
        "account",
        "auth",
        "sharedaccess",
        "shared_access",
        "shared-access",
        "session",
        "master",
        "client",
        "license",
        "subscription",
        "webhook",
    )
    for sep in ("", "_", "-")
)

# What every rule needs: a short string in which none of these occur holds no secret the rules
# could find, so they do not run (and are not even compiled: the shell emitter's start-up).
# Keep in step with _redact_forms / _redact_tokens (test_redact_corpus proves it on the corpus).
# Words, looked for in the lowercased text (one literal alternation: keep it short, each
# alternative costs a little at every position).
HINTS = (
    r"auth|bearer|basic|cookie|://|@|sig|credential|code=|key|pass|pwd|secret|token|hook|\(|-u"
    r"|identif|login|kennwort|wachtwoord|senha|mysql|redis-cli"
)
# Provider tokens, looked for in the text itself: a separator then, within nine characters, a
# capital or a digit (random bodies have one at once; snake_case names have none), or a
# family's literal start. Bounded, so each separator costs a few steps.
TOKEN_HINTS = (
    r"[_\-.][a-z_\-.]{0,8}[A-Z0-9][A-Za-z0-9_\-.]{8}"
    r"|A[KSGIRN][IAPO][ADA]|AIza|dapi|LTAI|Q~|eyJ|-us|AC[0-9a-f]{32}|SK[0-9a-f]{32}|:AA"
)

# Keys that end in "token" but hold a cursor, not a credential (pagination, sync, resume).
CURSOR_TOKENS = (
    "page_token",
    "pagetoken",
    "page-token",
    "next_token",
    "nexttoken",
    "next-token",
    "continuation_token",
    "continuationtoken",
    "continuation-token",
    "sync_token",
    "synctoken",
    "cursor_token",
    "resume_token",
    "resumetoken",
    "pagination_token",
    "paginationtoken",
)

_SENSITIVE_KEY = re.compile(r"(?:" + SECRET_WORDS + r"|authorization|cookie|\Aauth)\Z", re.IGNORECASE)
_CURSOR_KEY = re.compile(r"(?:" + "|".join(CURSOR_TOKENS) + r")\Z", re.IGNORECASE)


def names_secret(key: str) -> bool:
    """Whether a key (``password``, ``apiKey``, ``http.request.header.authorization``) names a secret."""
    return _SENSITIVE_KEY.search(key) is not None and _CURSOR_KEY.search(key) is None


# JSON / Python literals that carry no secret; replacing them would only break the syntax.
NOT_SECRETS = frozenset(
    {"", "null", "none", "nil", "true", "false", "undefined", "[]", "{}", "''", '""', PLACEHOLDER.lower()}
)
# What someone already masked stays exactly as it is: rewriting it would say we found a secret.
_MASKED = re.compile(
    r"""\A(?:[*•#]+|[xX]{3,}|\.{3,}|…"""
    r"""|[\[<(](?i:redacted|filtered|masked|hidden|removed|omitted|scrubbed|secret|sensitive)[\]>)]"""
    r"""|(?i:redacted|filtered|masked|scrubbed)|\*+[A-Za-z]*\*+|\*+\d{1,4}"""
    r"""|Secret(?:Str|Bytes)\(b?['"]?\**['"]?\)?"""
    r"""|\$\{[^}]*\}|\$[A-Z_][A-Z0-9_]*|%\([a-z_]+\)s|\{\{[^}]*\}\}?|<[a-z][a-z _\-]*>)\Z"""
)


# Cheap first test: masked and placeholder values start with one of these (see _MASKED).
_MASK_STARTS = frozenset("*•#xX.…[<($%{Ssrfmh")
_MASKED_WORDS = ("redacted", "filtered", "masked", "scrubbed", "<redacted>")


def lowered(text: str) -> str:
    """``text.lower()`` with the same length, so a match in it is a match at the same place in
    ``text``: only "İ" (U+0130) lowercases to two characters, so it is folded to "i" first."""
    low = text.lower()
    return low if len(low) == len(text) else text.replace("\u0130", "i").lower()


def is_masked(value: str) -> bool:
    """A value with no secret in it: masked (``***``, ``[REDACTED]``, ``SecretStr('**')``),
    a placeholder (``${DB_PASSWORD}``, ``<your-token>``), a literal (``null``) or a redacted one."""
    if value and value[0] not in _MASK_STARTS and value[-1] != ">":
        low = value.lower()
        return low in NOT_SECRETS or low.endswith(_MASKED_WORDS)
    low = value.lower()
    if low in NOT_SECRETS or low.endswith(PLACEHOLDER.lower()) or low.startswith(("${", "{{", "<redacted>")):
        return True
    return _MASKED.match(value) is not None
