"""The rule engine (logs/_redact_engine.py): gates read off the patterns, one pass for all of
them, and the same result with or without the compiled word search."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membrane_otel.logs._redact import _builtin_rules
from membrane_otel.logs._redact_engine import RuleSet, _gate, literal_prefixes
from membrane_otel.logs._redact_keys import lowered
from membrane_otel.logs._redact_rules import Rule
from tests.data.secret_corpus import build, hostile_inputs


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"secret(?![a-z])", {"secret"}),
        (r"pass(?:word|wd)", {"password", "passwd"}),
        (r"(?:kennwort|senha)[ :]", {"kennwort:", "senha:", "kennwort ", "senha "}),
        (r"A(?<![a-z]A)(?:KIA|SIA)[A-Z]{16}", {"AKIA", "ASIA"}),
        (r"-----BEGIN (?P<label>[A-Z ]+)", {"-----BEGIN "}),
        (r"eyJ[A-Za-z]+", {"eyJ"}),
        (r"\bkey=", {"key="}),  # zero-width assertions take no text: the match still starts with it
    ],
)
def test_literal_prefixes_are_read_off_the_pattern(pattern: str, expected: set[str]) -> None:
    assert literal_prefixes(re.compile(pattern)) == frozenset(expected)


@pytest.mark.parametrize("pattern", [r"[a-z]+=", r"(?i)secret", r"(?:a|b*)c", r".x"])
def test_a_pattern_without_a_literal_start_has_no_prefixes(pattern: str) -> None:
    assert literal_prefixes(re.compile(pattern)) is None


def test_every_built_in_rule_is_gated() -> None:
    """A rule with no gate would cost a scan of every text: each needs a literal to wait for."""
    ungated = [r.name for rs in _builtin_rules() for r in rs.rules if not _gate(r)]
    assert ungated == []


def test_no_gate_word_can_be_formed_by_the_placeholder() -> None:
    """Gates are checked once, before any replacement: a word that a replacement could form
    would hide a match made possible by an earlier rule."""
    rs = _builtin_rules()[0]
    derived = [w for r in rs.rules if not r.needs for w in _gate(r)]
    assert derived and not any(w.lower() in "<redacted>" or "<" in w or ">" in w for w in derived)


def test_without_the_compiled_search_the_result_is_the_same() -> None:
    """On a platform with no ahocorasick_rs wheel the words are found with str.find: slower,
    never different (the whole corpus and the hostile inputs, both ways)."""
    rules, _ = _builtin_rules()
    fallback = RuleSet(rules.rules)
    fallback._scanner._ac = None  # what the ImportError branch leaves
    cases, benign = build()
    texts = [c.text for c in cases + benign] + list(hostile_inputs(20_000).values())
    assert len(texts) > 1500
    for text in texts:
        low = lowered(text)
        assert rules.run(text, low) == fallback.run(text, low), text[:200]


def test_a_case_sensitive_literal_is_compared_as_spelt() -> None:
    """ "AUTH" (a protocol line) is looked for lowercased, then compared in the text as given:
    "auth" in prose does not run the rule, "AUTH" does."""
    rule = Rule("auth_line", re.compile(r"AUTH[ \t]+(?P<rest>\S+)"), "<X>")
    rs = RuleSet((rule,))
    assert rs.mask("oauth token refreshed", "oauth token refreshed") == 0
    assert rs.mask("AUTH hunter2", lowered("AUTH hunter2")) != 0
    assert rs.run("AUTH hunter2", lowered("AUTH hunter2"))[0] == "<X>"


class _Ungated(RuleSet):
    """The same rules with every gate open: each rule searches every text (the reference)."""

    def mask(self, text: str, low: str) -> int:
        return -1


_CASES, _BENIGN = build()
_FRAGMENTS = [c.text for c in _CASES + _BENIGN]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(st.integers(min_value=0, max_value=len(_FRAGMENTS) - 1), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=400), min_size=2, max_size=2),
    glue=st.sampled_from([" ", "\n", "; ", "&", "=", "", "://", "@", "\t", "İ", "ß", "密码 "]),
)
def test_the_gates_never_change_what_is_redacted(picks: list[int], cuts: list[int], glue: str) -> None:
    """Gating is exact: any text — corpus lines glued together, cut at arbitrary places so
    literals are split and joined across a seam — redacts the same as when every rule searches
    it (and so a replacement never hides a match a later rule would have made)."""
    text = glue.join(_FRAGMENTS[i] for i in picks)
    lo, hi = sorted(cuts)
    text = text[:lo] + text[hi:]  # a stretch cut out: what was either side of it now touches
    gated_rules = _builtin_rules()
    for gated in gated_rules:
        low = lowered(text)
        assert gated.run(text, low) == _Ungated(gated.rules).run(text, low)
