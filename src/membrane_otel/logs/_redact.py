r"""Secret redaction: one policy for every exit, so secrets never leave the process.

A :class:`Redactor` is a small callable: ``__call__(text)`` returns the text with every secret
value replaced by ``<REDACTED>``; ``redact_value(value)`` does the same for the strings inside
lists, tuples and dicts, replacing whole any value whose key names a secret
(``is_sensitive_key``). What it recognises lives in three modules:

* :mod:`~membrane_otel.logs._redact_forms` — where a secret sits by syntax: key/value pairs in
  env, INI, YAML, JSON, Python and Go reprs, HTTP headers (``Authorization`` of any scheme,
  cookies), URL user-info and DSNs, signed and webhook URLs, command lines (``curl -u``,
  ``--password``), SQL, protocol ``AUTH``/``PASS`` lines, positional credentials
  (``Client('AC…', 'token')``), prose in several languages, PEM blocks;
* :mod:`~membrane_otel.logs._redact_tokens` — provider tokens by shape (GitHub, GitLab, npm,
  PyPI, Stripe, SendGrid, Slack, OpenAI, Anthropic, AWS id/secret pairs, JWTs, …);
* :mod:`~membrane_otel.logs._redact_keys` — which keys name a secret (``next_page_token`` does
  not), and which values are no secret (``***``, ``[REDACTED]``, ``SecretStr('**')``, ``null``):
  those stay exactly as they are.

Safe: a second pass changes nothing (what was replaced is recognised as masked); every rule
starts with a literal and none nests quantifiers, so a hostile 100 KB input stays linear.
Prose that only looks alike stays: "token bucket refilled", "password reset email sent",
``ssh://git@host``, ``PWD=/home/x``, ``/etc/passwd: permission denied``, ``Authorization: denied``.
The rules are compiled on first use, so importing this module costs next to nothing (the
shell emitter imports it only when it has something to redact).
"""

from __future__ import annotations

import re

from membrane_otel.logs._redact_keys import HINTS, PLACEHOLDER, TOKEN_HINTS, is_masked, lowered, names_secret

# typing.TYPE_CHECKING without importing typing: the shell emitter imports this module, and its
# start-up is the feature (mypy honours the name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, TypeVar

    from membrane_otel.logs._redact_engine import RuleSet

    _V = TypeVar("_V")

__all__ = [
    "PLACEHOLDER",
    "REDACTED_COUNT_ATTRIBUTE",
    "Redactor",
    "configured_redactor",
    "default_redactor",
    "redact_secrets",
    "redact_value",
]

# The attribute that says how many values were redacted on a record (never what they were).
REDACTED_COUNT_ATTRIBUTE = "membrane.redacted_count"

_MAX_DEPTH = 32
# Before the rules are built, a short string (most attribute values) takes one combined search:
# what every rule needs, lowercased (an alternation: ~150 ns a character). A process that never
# sees a candidate never builds the rules; once they are built, their own gates decide.
_PREFILTER_MAX = 80
# Short values repeat (script names, paths, routes, status words): the built-in rules' result
# for them is remembered. It depends on the text alone, so every Redactor shares it.
_CACHE_MAX = 4096
_short_cache: dict[str, str] = {}
_PREFILTER = re.compile(HINTS)
_TOKEN_PREFILTER = re.compile(TOKEN_HINTS)
_rules: tuple[RuleSet, RuleSet] | None = None


def _builtin_rules() -> tuple[RuleSet, RuleSet]:
    """The built-in rules, compiled on first use (a process that never sees a candidate never
    pays for them)."""
    global _rules
    if _rules is None:
        from membrane_otel.logs import _redact_forms as forms
        from membrane_otel.logs import _redact_tokens as tokens
        from membrane_otel.logs._redact_engine import RuleSet

        _rules = (RuleSet(forms.FORM_RULES + tokens.TOKEN_RULES), RuleSet(forms.NON_ASCII_RULES))
    return _rules


def _compile_extra(pattern: str | tuple[str, str]) -> tuple[re.Pattern[str], str]:
    source, repl = pattern if isinstance(pattern, tuple) else (pattern, PLACEHOLDER)
    try:
        return re.compile(source), repl
    except re.error as exc:
        raise ValueError(f"redaction pattern {source!r} is not a valid regular expression: {exc}") from None


def _key_rule(keys: Iterable[str]) -> RuleSet | None:
    """A key/value rule for the user's own key names (``pin``, ``ssn``)."""
    words = sorted({k.lower() for k in keys if k}, key=len, reverse=True)
    if not words:
        return None
    from membrane_otel.logs._redact_engine import RuleSet
    from membrane_otel.logs._redact_rules import ci, kv, replace_keyed

    pattern = kv("(?<![a-z0-9])(?:" + "|".join(re.escape(w) for w in words) + ")")
    return RuleSet((ci("extra_keys", pattern, replace_keyed),))


class Redactor:
    r"""Replace secrets in text with ``<REDACTED>``.

    ``extra_patterns`` adds rules after the built-in ones: a string is a regex whose every
    match is replaced by ``<REDACTED>``; a ``(regex, replacement)`` pair is applied with
    :func:`re.sub`, so groups can keep context (``(r"(pin=)\d+", r"\1<REDACTED>")``).
    ``extra_keys`` are more key names whose values are secrets (in text and in mappings).
    ``extra`` is a last callback over the result. If it raises, the whole text becomes
    ``<REDACTED>``: a scrubber that failed must not let through what it was meant to remove.
    """

    __slots__ = ("_extra", "_extra_keys", "_extra_rules", "_key_cache", "_key_rule")

    def __init__(
        self,
        extra_patterns: Sequence[str | tuple[str, str]] = (),
        extra: Callable[[str], str] | None = None,
        extra_keys: Sequence[str] = (),
    ) -> None:
        self._extra_rules = tuple(_compile_extra(p) for p in extra_patterns)
        self._extra = extra
        self._extra_keys = tuple(k.lower() for k in extra_keys)
        self._key_rule = _key_rule(extra_keys)
        self._key_cache: dict[str, bool] = {}

    def __call__(self, text: str) -> str:
        if not text:
            return text
        short = len(text) <= _PREFILTER_MAX
        cached = _short_cache.get(text) if short else None
        if cached is not None:
            text, low = cached, ""
        else:
            original = text
            low = lowered(text)
            rules = _rules
            # Until the rules are built, a short ASCII text with no hint of a secret is not worth
            # building them for (the shell emitter's start-up); once built, their own one-pass
            # gates are cheaper than this prefilter.
            if rules is None and (
                not short
                or not text.isascii()
                or _PREFILTER.search(low) is not None
                or _TOKEN_PREFILTER.search(text) is not None
            ):
                rules = _builtin_rules()
            if rules is not None:
                text, low = rules[0].run(text, low)
                if not text.isascii():
                    text, low = rules[1].run(text, low)
            if short:
                if len(_short_cache) >= _CACHE_MAX:  # a flood of distinct values must not grow it
                    _short_cache.clear()
                _short_cache[original] = text
        if self._key_rule is not None:
            low = low or lowered(text)
            text, low = self._key_rule.run(text, low)
        for regex, repl in self._extra_rules:
            text = regex.sub(repl, text)
        if self._extra is not None:
            try:
                text = self._extra(text)
            except Exception:
                from membrane_otel._internal import counters

                counters.incr("redact_errors")
                return PLACEHOLDER
        return text

    def unchanged(self, texts: Sequence[str]) -> bool:
        """True when ``self(text)`` is proven to return each of ``texts`` as it is, by one pass
        of the gates over them joined (a gate met in one text is met in the join): the values of
        a batch unique to each record (ids, messages with numbers) cost one scan, not one each.

        False proves nothing (redact them one by one): so it is for non-ASCII text, before the
        built-in rules are built, and with extra patterns or a callback, whose matches in a
        part need not be matches in the join.
        """
        rules = _rules
        if rules is None or self._extra_rules or self._extra is not None:
            return False
        joined = "\n".join(texts)
        if not joined.isascii():
            return False
        low = joined.lower()  # ASCII: the same length, each text's lowercase in its place
        if not rules[0].clean(joined, low):
            return False
        return self._key_rule is None or self._key_rule.clean(joined, low)

    def counted(self, text: str) -> tuple[str, int]:
        """``(redacted text, how many values were replaced)``."""
        out = self(text)
        if out is text or out == text:
            return text, 0
        return out, max(1, out.count(PLACEHOLDER) - text.count(PLACEHOLDER))

    def is_sensitive_key(self, key: str) -> bool:
        """Whether an attribute / payload key names a secret (``password``, ``apiKey``, ``Cookie``)."""
        hit = self._key_cache.get(key)
        if hit is None:
            hit = names_secret(key) or (
                bool(self._extra_keys) and key.lower().rsplit(".", 1)[-1] in self._extra_keys
            )
            if len(self._key_cache) >= 4096:  # attribute keys repeat; a flood of new ones must not grow this
                self._key_cache.clear()
            self._key_cache[key] = hit
        return hit

    def redact_value(self, value: _V) -> _V:
        """Redact a string, or the strings inside lists, tuples and dicts (recursively).

        A dict value whose key names a secret (``{"password": "hunter2"}``) is replaced
        whole, since a bare value has no context for the text rules to recognise.
        """
        return self._value(value, 0, None)  # type: ignore[no-any-return]  # same shape as value

    def redact_counted(self, value: _V) -> tuple[_V, int]:
        """:meth:`redact_value` and how many values it replaced (for the record's count attribute)."""
        tally = [0]
        out = self._value(value, 0, tally)
        return out, tally[0]

    def _value(self, value: Any, depth: int, tally: list[int] | None) -> Any:
        if isinstance(value, str):
            if tally is None:
                return self(value)
            out, n = self.counted(value)
            tally[0] += n
            return out
        if depth >= _MAX_DEPTH:
            # Deeper than any real payload, or a cycle: refuse rather than recurse forever.
            return PLACEHOLDER
        if isinstance(value, dict):
            out_d: dict[Any, Any] = {}
            for k, v in value.items():
                if isinstance(k, str) and self.is_sensitive_key(k):
                    out_d[k] = self._mask(v, tally)
                else:
                    out_d[k] = self._value(v, depth + 1, tally)
            return out_d
        if isinstance(value, list | tuple):
            # Numbers only (a metric series, ids): nothing to redact, and no per-item call — a
            # list of a million ints in `extra` cost the caller's thread ~0.5 s.
            if _NUMBERS.issuperset(map(type, value)):
                return value
            items = self._items(value, depth, tally)
            return items if isinstance(value, list) else tuple(items)
        return value

    def _items(self, items: list[Any] | tuple[Any, ...], depth: int, tally: list[int] | None) -> list[Any]:
        """A sequence's items; one that follows a secret's flag (``["--password", "hunter2"]``,
        an argv kept as a list attribute) is masked whole: alone it has no context for the rules."""
        out: list[Any] = []
        flagged = False
        for item in items:
            if flagged and isinstance(item, str | bytes):
                out.append(self._mask(item, tally))
                flagged = False
                continue
            flagged = type(item) is str and item[:1] == "-" and self.is_sensitive_key(item.lstrip("-"))
            out.append(self._value(item, depth + 1, tally))
        return out

    def _mask(self, value: Any, tally: list[int] | None) -> Any:
        if isinstance(value, str | bytes):
            if not value or (isinstance(value, str) and is_masked(value)):
                return value
            if tally is not None:
                tally[0] += 1
            return PLACEHOLDER
        if isinstance(value, list | tuple):
            masked = [self._mask(v, tally) if isinstance(v, str | bytes) else v for v in value]
            return masked if isinstance(value, list) else tuple(masked)
        return self._value(value, 1, tally)


# Item types that hold no text (exact types: a str subclass is text).
_NUMBERS = frozenset((int, float, bool, type(None)))

default_redactor = Redactor()


_configured: tuple[tuple[str, ...], Redactor] | None = None


def configured_redactor() -> Redactor:
    """The redactor with the settings' extra patterns (``MEMBRANE_REDACT_PATTERNS``).

    One compiled instance for the whole process: the logs processor, every span at
    translation, the console formatter, the otlp wrapper, ledger events and narratives all
    redact with the same rules. Rebuilt only when the patterns change (``configure()`` with new
    settings); a settings error falls back to the built-in rules — ``configure()`` reports it.
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


def redact_capped(text: str, redactor: Redactor) -> str:
    """``redactor(text)`` for a text of any length, cut to 64 KB (``tables.BODY_MAX_BYTES``)
    when it is longer, having redacted 16 KiB past the cut."""
    from membrane_otel._internal.tables import BODY_MAX_BYTES, PRE_CUT, truncate

    if len(text) <= PRE_CUT:
        return redactor(text)
    return truncate(redactor(text[:PRE_CUT]), BODY_MAX_BYTES, unit="bytes")
