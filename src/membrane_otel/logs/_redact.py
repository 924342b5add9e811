r"""Secret redaction: everything is scrubbed before it is queued, so secrets never leave the process.

A :class:`Redactor` is a small callable: its rules are compiled once (the built-in ones at
import, extra patterns in ``__init__``) and ``__call__(text)`` returns the text with every
secret value replaced by ``<REDACTED>``. What it recognises:

* the seeds' forms: ``"token": "<REDACTED>"``, ``Authorization: Bearer <REDACTED>``,
  ``https://<REDACTED>:<REDACTED>@host``;
* ``key=value``, ``key: value`` and JSON / YAML / dict-repr pairs whose key *ends* in a
  secret word (password, passwd, pwd, secret, token, api key, access key, client secret,
  private key, account key, ...). Keys are case-insensitive; the key and its quoting stay,
  only the value is replaced. A key must end in the word, so ``tokens_saved=45``,
  ``token_count=3`` and ``max_tokens=100`` are counts, not secrets;
* ``Authorization`` / ``Proxy-Authorization`` values (any scheme), a bare ``Bearer <token>``,
  ``Cookie`` / ``Set-Cookie`` values, URL user-info of any scheme, query-string signatures;
* well-known token formats: AWS access key ids, GCP API keys, GitHub / GitLab / Slack tokens,
  Slack webhooks, Stripe secret keys, ``sk-`` / ``sk-ant-`` API keys, JWTs and PEM
  private-key blocks. Stripe *publishable* keys (``pk_live_``) are public by design and stay.

Prose that only looks alike stays: "token bucket refilled", "password reset email sent",
"the secret to good tests", "Bearer of bad news" (a key needs a ``:``/``=`` and a value).

Speed: most log lines hold no secret, so what matters is the cost of *not* matching. ``re``
skips ahead fast only to a literal prefix (~0.4 us per KB, as fast as ``in``); a pattern
that starts with a class, ``\b``, a lookbehind or ``(?i)`` tries every position (~9-90 us
per KB). So every rule starts with a literal and asserts its left boundary by a lookbehind
*after* it, and case-insensitive rules are lowercase patterns run over ``text.lower()``
(computed once). A clean 1 KB line costs ~10 us.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from membrane_otel._internal import counters

__all__ = ["PLACEHOLDER", "Redactor", "default_redactor", "redact_secrets", "redact_value"]

PLACEHOLDER = "<REDACTED>"

_V = TypeVar("_V")
# A replacement: a fixed string, or a function of (match, original text). Matches of the
# case-insensitive rules are found in ``text.lower()``; spans are the same in the original.
_Repl = Callable[["re.Match[str]", str], str]

# A key that ends in one of these words names a secret (``*_key`` words are listed below).
_SECRET_WORDS = (
    r"password|passwd|passphrase|pwd|secret|token"
    r"|(?:api|access|secret|private|signing|encryption|account|shared[_-]?access|auth)[_-]?key"
)
# The same words as fixed-width lookbehinds behind a literal "key", so that regex starts with
# a literal: re only skips ahead quickly to a literal prefix (one starting with a lookbehind,
# \b or a class costs ~9 us per KB instead of ~0.4).
_KEY_PREFIXES = tuple(
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
    )
    for sep in ("", "_", "-")
)
_KEY_LOOKBEHIND = "(?:" + "|".join(f"(?<={re.escape(p)}key)" for p in _KEY_PREFIXES) + ")"

# The key must end where the word ends: "tokens_saved" or "token.expiry" are other keys.
_KEY_END = r"(?![a-z0-9_.\-])"
# Optional closing quote of the key (also the escaped \" of JSON inside a string), separator.
_SEP = r"""(?P<sep>\\?["']?[ \t]*(?:=>|:=|[:=])[ \t]*)"""
# A value: escaped-JSON, double- or single-quoted (unterminated quotes run to the end of the
# line, so a truncated record leaks nothing), or a bare run up to a delimiter.
_VALUE = (
    r'(?:\\"(?P<ev>[^"\\\r\n]*)\\"'
    r"""|"(?P<dv>[^"\\\r\n]*(?:\\.[^"\\\r\n]*)*)(?:"|(?=[\r\n])|\Z)"""
    r"""|'(?P<sv>[^'\\\r\n]*(?:\\.[^'\\\r\n]*)*)(?:'|(?=[\r\n])|\Z)"""
    r"""|(?P<uv>[^\s'",;&}\])\\]+))"""
)
_VALUE_GROUPS = ("ev", "dv", "sv", "uv", "cred")
# JSON / Python literals that carry no secret; replacing them would only break the syntax.
_NOT_SECRETS = frozenset({"", "null", "none", "nil", "true", "false", "undefined", PLACEHOLDER.lower()})


def _replace_value(m: re.Match[str], text: str) -> str:
    """Replace whichever value group matched, keeping the key, separator and quotes."""
    index = m.re.groupindex
    for group in _VALUE_GROUPS:
        if group in index and m.start(group) >= 0:
            vs, ve = m.span(group)
            if text[vs:ve].lower() in _NOT_SECRETS:
                return text[m.start() : m.end()]
            return text[m.start() : vs] + PLACEHOLDER + text[ve : m.end()]
    return text[m.start() : m.end()]


def _replace_userinfo(m: re.Match[str], text: str) -> str:
    if m.start("password") < 0:
        return f"://{PLACEHOLDER}@"
    # redis://:secret@host has no user: keep it empty rather than invent one.
    return f"://{PLACEHOLDER if m.end('user') > m.start('user') else ''}:{PLACEHOLDER}@"


def _replace_pem(m: re.Match[str], text: str) -> str:
    label = m.group("label")
    return f"-----BEGIN {label}-----{PLACEHOLDER}-----END {label}-----"


def _replace_slack_hook(m: re.Match[str], text: str) -> str:
    return "hooks.slack.com/" + PLACEHOLDER


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    regex: re.Pattern[str]
    repl: str | _Repl
    # Lowercase rules run on text.lower() (see above); ``ci_regex`` is their fallback for the
    # rare text whose lowercase has another length (a few non-ASCII letters).
    lower: bool = False
    ci_regex: re.Pattern[str] | None = None
    # Characters before the match that belong to the secret (asserted by a lookbehind).
    lead: int = 0


def _ci(name: str, pattern: str, repl: str | _Repl) -> _Rule:
    """A case-insensitive rule; ``pattern`` is written in lowercase."""
    return _Rule(name, re.compile(pattern), repl, True, re.compile(pattern, re.IGNORECASE))


def _kv(word_pattern: str) -> str:
    return word_pattern + _KEY_END + _SEP + _VALUE


_BUILTIN_RULES: tuple[_Rule, ...] = (
    # First, so the key rule below sees a "private_key": "<REDACTED>" and not the block's lines.
    _Rule(
        "pem_private_key",
        re.compile(
            r"-----BEGIN (?P<label>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----.*?(?:-----END (?P=label)-----|\Z)",
            re.DOTALL,
        ),
        _replace_pem,
    ),
    # Authorization / Proxy-Authorization, any scheme; the scheme stays.
    _ci(
        "authorization",
        r"authorization" + _KEY_END + _SEP + r"""(?:\\?["'])?"""
        r"(?:(?:bearer|basic|digest|token|negotiate|ntlm|apikey|hmac|aws4-hmac-sha256)[ \t]+)?"
        r"""(?P<cred>[^\s"'\\,;&]+)""",
        _replace_value,
    ),
    # A bearer token outside an Authorization header; it must look like one (long, with a
    # digit), so "Bearer of bad news" stays.
    _ci(
        "bearer",
        r"bearer(?<![a-z0-9_]bearer)[ \t]+(?P<cred>(?=[a-z._~+/\-]*\d)[a-z0-9._~+/\-]{16,}=*)",
        _replace_value,
    ),
    # A cookie header's value is a list of secrets: all of it goes, to the end of the line.
    _ci(
        "cookie",
        r"cookie" + _KEY_END + r"""(?P<sep>\\?["']?[ \t]*[:=][ \t]*)"""
        r"""(?:"(?P<dv>[^"\r\n]*)"?|'(?P<sv>[^'\r\n]*)'?|(?P<uv>[^\s"'][^\r\n"']*))""",
        _replace_value,
    ),
    # scheme://user:password@host, for any scheme. The password may hold '@': the greedy run
    # backtracks to the last '@' before the path.
    _Rule(
        "url_userinfo",
        re.compile(
            r"""://(?<=[A-Za-z0-9+.\-]://)(?P<user>[^\s:/?#@'"<>]*)(?::(?P<password>[^\s/?#'"<>]*))?@"""
        ),
        _replace_userinfo,
    ),
    # Signed URLs (S3, GCS, Azure SAS) and ?key=: the signature or key is the secret.
    _ci(
        "query_signature",
        "=(?:"
        + "|".join(
            f"(?<=[?&;]{re.escape(k)}=)"
            for k in (
                "sig",
                "signature",
                "x-amz-signature",
                "x-amz-credential",
                "x-goog-signature",
                "x-goog-credential",
                "key",
                "apikey",
            )
        )
        + r""")(?P<uv>[^&#\s"'<>]+)""",
        _replace_value,
    ),
    # key=value pairs, one regex per literal start (see _KEY_LOOKBEHIND for why).
    _ci("password_value", _kv(r"pass(?:word|wd|phrase)"), _replace_value),
    _ci("pwd_value", _kv(r"pwd"), _replace_value),
    _ci("secret_value", _kv(r"secret"), _replace_value),
    _ci("token_value", _kv(r"token"), _replace_value),
    _ci("key_value", _kv(r"key" + _KEY_LOOKBEHIND), _replace_value),
    # Well-known token formats, recognised by shape alone and case-sensitive as issued. Each
    # starts with its literal; the lookbehind after it stands for a leading \b.
    _Rule(
        "aws_access_key_id",
        re.compile(r"A(?<![A-Za-z0-9_]A)(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9_])"),
        PLACEHOLDER,
    ),
    _Rule("gcp_api_key", re.compile(r"AIza(?<![A-Za-z0-9_]AIza)[0-9A-Za-z_\-]{35}"), PLACEHOLDER),
    _Rule(
        "github_token",
        re.compile(r"gh(?<![A-Za-z0-9_]gh)[pousr]_[A-Za-z0-9]{20,255}(?![A-Za-z0-9_])"),
        PLACEHOLDER,
    ),
    _Rule(
        "github_fine_grained_token",
        re.compile(r"github_pat_(?<![A-Za-z0-9_]github_pat_)[A-Za-z0-9_]{22,255}"),
        PLACEHOLDER,
    ),
    _Rule("gitlab_token", re.compile(r"glpat-(?<![A-Za-z0-9_]glpat-)[A-Za-z0-9_\-]{20,}"), PLACEHOLDER),
    _Rule(
        "slack_token",
        re.compile(r"x(?<![A-Za-z0-9_]x)(?:ox[abposr]-[A-Za-z0-9\-]{10,}|app-\d-[A-Za-z0-9\-]{10,})"),
        PLACEHOLDER,
    ),
    _Rule(
        "slack_webhook",
        re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]+"),
        _replace_slack_hook,
    ),
    # Stripe secret and restricted keys ("pk_" publishable keys are public by design).
    _Rule(
        "stripe_key",
        re.compile(r"k_(?<![A-Za-z0-9_][sr]k_)(?<=[sr]k_)(?:live|test)_[A-Za-z0-9]{10,}"),
        PLACEHOLDER,
        lead=1,
    ),
    _Rule("stripe_webhook_secret", re.compile(r"whsec_(?<![A-Za-z0-9_]whsec_)[A-Za-z0-9]{20,}"), PLACEHOLDER),
    # OpenAI (sk-, sk-proj-) and Anthropic (sk-ant-) keys; "task-..." is not one.
    _Rule("sk_api_key", re.compile(r"sk-(?<![A-Za-z0-9_\-]sk-)[A-Za-z0-9_\-]{20,}"), PLACEHOLDER),
    _Rule(
        "jwt",
        re.compile(
            r"eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}(?:\.[A-Za-z0-9_\-]+){0,3}"
        ),
        PLACEHOLDER,
    ),
)

# Short strings (most attribute values) take one combined search first: what every rule
# above needs, lowercased. An alternation costs ~18 ns a character, so past a few hundred
# characters running the literal-first rules directly is cheaper.
_ANY_RULE = re.compile(
    r"-----begin |authorization|bearer|cookie|://|sig=|signature=|credential=|key|pass|pwd|secret"
    r"|token|akia|asia|aiza|gh[pousr]_|github_pat_|glpat-|xox|xapp-|hooks\.slack\.com/|k_live_"
    r"|k_test_|whsec_|sk-|eyj"
)
_PREFILTER_MAX = 256

# Attribute / payload keys that name a secret: their whole string value is one.
_SENSITIVE_KEY = re.compile(r"(?:" + _SECRET_WORDS + r"|authorization|cookie)\Z", re.IGNORECASE)
_MAX_DEPTH = 32


def _compile_extra(pattern: str | tuple[str, str]) -> tuple[re.Pattern[str], str]:
    source, repl = pattern if isinstance(pattern, tuple) else (pattern, PLACEHOLDER)
    try:
        return re.compile(source), repl
    except re.error as exc:
        raise ValueError(f"redaction pattern {source!r} is not a valid regular expression: {exc}") from None


def _apply(rule: _Rule, text: str, low: str) -> str:
    """``text`` with every match of ``rule`` replaced (a no-match costs one regex search)."""
    if rule.lower:
        if len(low) == len(text):
            regex, subject = rule.regex, low
        else:
            regex, subject = cast("re.Pattern[str]", rule.ci_regex), text
    else:
        regex, subject = rule.regex, text
    first = regex.search(subject)
    if first is None:
        return text
    repl, lead = rule.repl, rule.lead
    parts: list[str] = []
    last = 0
    for m in regex.finditer(subject, first.start()):
        start = m.start() - lead
        if start < last:  # overlapping a previous match: already replaced
            continue
        parts.append(text[last:start])
        parts.append(repl if isinstance(repl, str) else repl(m, text))
        last = m.end()
    parts.append(text[last:])
    return "".join(parts)


class Redactor:
    r"""Replace secrets in text with ``<REDACTED>``.

    ``extra_patterns`` adds rules after the built-in ones: a string is a regex whose every
    match is replaced by ``<REDACTED>``; a ``(regex, replacement)`` pair is applied with
    :func:`re.sub`, so groups can keep context (``(r"(pin=)\d+", r"\1<REDACTED>")``).
    ``extra`` is a last callback over the result. If it raises, the whole text becomes
    ``<REDACTED>``: a scrubber that failed must not let through what it was meant to remove.
    """

    __slots__ = ("_extra", "_extra_rules", "_key_cache")

    def __init__(
        self,
        extra_patterns: Sequence[str | tuple[str, str]] = (),
        extra: Callable[[str], str] | None = None,
    ) -> None:
        self._extra_rules = tuple(_compile_extra(p) for p in extra_patterns)
        self._extra = extra
        self._key_cache: dict[str, bool] = {}

    def __call__(self, text: str) -> str:
        if not text:
            return text
        low = text.lower()
        if len(text) > _PREFILTER_MAX or _ANY_RULE.search(low) is not None:
            text = self._builtin(text, low)
        for regex, repl in self._extra_rules:
            text = regex.sub(repl, text)
        if self._extra is not None:
            try:
                text = self._extra(text)
            except Exception:
                counters.incr("redact_errors")
                return PLACEHOLDER
        return text

    @staticmethod
    def _builtin(text: str, low: str) -> str:
        for rule in _BUILTIN_RULES:
            new = _apply(rule, text, low)
            if new is not text:
                text = new
                low = text.lower()
        return text

    def is_sensitive_key(self, key: str) -> bool:
        """Whether an attribute / payload key names a secret (``password``, ``apiKey``, ``Cookie``)."""
        hit = self._key_cache.get(key)
        if hit is None:
            hit = _SENSITIVE_KEY.search(key) is not None
            if len(self._key_cache) >= 4096:  # attribute keys repeat; a flood of new ones must not grow this
                self._key_cache.clear()
            self._key_cache[key] = hit
        return hit

    def redact_value(self, value: _V) -> _V:
        """Redact a string, or the strings inside lists, tuples and dicts (recursively).

        A dict value whose key names a secret (``{"password": "hunter2"}``) is replaced
        whole, since a bare value has no context for the text rules to recognise.
        """
        return cast(_V, self._value(value, 0))

    def _value(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self(value)
        if depth >= _MAX_DEPTH:
            # Deeper than any real payload, or a cycle: refuse rather than recurse forever.
            return PLACEHOLDER
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if isinstance(k, str) and self.is_sensitive_key(k):
                    out[k] = self._mask(v)
                else:
                    out[k] = self._value(v, depth + 1)
            return out
        if isinstance(value, list):
            return [self._value(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            return tuple(self._value(v, depth + 1) for v in value)
        return value

    def _mask(self, value: Any) -> Any:
        if isinstance(value, str | bytes):
            return PLACEHOLDER if value else value
        if isinstance(value, list | tuple):
            masked = [PLACEHOLDER if isinstance(v, str | bytes) and v else v for v in value]
            return masked if isinstance(value, list) else tuple(masked)
        return self._value(value, 1)


default_redactor = Redactor()


_configured: tuple[tuple[str, ...], Redactor] | None = None


def configured_redactor() -> Redactor:
    """The redactor with the settings' extra patterns (``MEMBRANE_REDACT_PATTERNS``).

    One compiled instance for the whole process: the logs processor, HRM summaries, ledger
    events and narratives all redact with the same rules. Rebuilt only when the patterns change
    (``configure()`` with new settings); a settings error falls back to the built-in rules —
    it is reported by ``configure()`` itself.
    """
    global _configured
    try:
        from membrane_otel.settings import get_settings

        patterns = get_settings().redact_patterns
    except Exception:
        patterns = ()
    cached = _configured
    if cached is not None and cached[0] == patterns:
        return cached[1]
    redactor = Redactor(extra_patterns=patterns) if patterns else default_redactor
    _configured = (patterns, redactor)
    return redactor


def redact_secrets(text: str) -> str:
    """``text`` with every secret the default rules recognise replaced by ``<REDACTED>``."""
    return default_redactor(text)


def redact_value(value: _V, redactor: Redactor | None = None) -> _V:
    """Redact a string, or recursively the strings in lists, tuples and dicts (attributes, payloads)."""
    return (redactor or default_redactor).redact_value(value)
