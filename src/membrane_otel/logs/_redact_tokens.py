"""Provider token families, recognised by shape alone (learnt from the public gitleaks and
detect-secrets rule sets), case-sensitive as issued.

Most families are a short prefix, a separator and a random body (``npm_…``, ``glpat-…``,
``SG.….…``). Forty literal-first regexes would cost ~0.4 µs per KB each on every clean line, so
they share three: one per separator (``_``, ``-``, ``.``) that finds a long token-like run
after it, and a lookup of the word before it in :data:`PREFIXES`. The rest (no separator, or a
shape of their own) are rules of their own, each starting with its literal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from membrane_otel.logs._redact_keys import PLACEHOLDER
from membrane_otel.logs._redact_rules import Out, Rule

# Prefix → the shortest body after it that counts as a token.
PREFIXES: dict[str, int] = {
    # GitHub, GitLab, Bitbucket-style source hosts.
    "ghp_": 20, "gho_": 20, "ghu_": 20, "ghs_": 20, "ghr_": 20, "github_pat_": 22,
    "glpat-": 20, "gldt-": 20, "glrt-": 20, "glptt-": 20, "glcbt-": 20, "glimt-": 20, "glsoat-": 20,
    "glffct-": 20, "glagent-": 20,
    # Package registries.
    "npm_": 30, "pypi-": 50, "rubygems_": 40, "CLOJARS_": 40,
    # Payments.
    "sk_live_": 10, "sk_test_": 10, "rk_live_": 10, "rk_test_": 10, "whsec_": 20,
    "sq0atp-": 20, "sq0csp-": 20, "shippo_live_": 30, "shippo_test_": 30, "duffel_live_": 30,
    "duffel_test_": 30, "FLWSECK_TEST-": 20, "FLWSECK-": 20,
    # AI providers.
    "sk-": 16, "hf_": 30, "gsk_": 40, "r8_": 30, "pplx-": 40, "xai-": 50, "tvly-": 20, "pcsk_": 30,
    "lsv2_pt_": 30, "lsv2_sk_": 30,
    # Chat, mail, collaboration.
    "xoxb-": 10, "xoxp-": 10, "xoxa-": 10, "xoxo-": 10, "xoxs-": 10, "xoxr-": 10, "xoxe-": 10,
    "xapp-": 10, "SG.": 20, "xkeysib-": 40, "lin_api_": 30, "ntn_": 30, "secret_": 40, "figd_": 30,
    "tfp_": 30, "rdme_": 30, "PMAK-": 40, "fio-u-": 30,
    # Cloud and infrastructure.
    "dop_v1_": 40, "doo_v1_": 40, "dor_v1_": 40, "hvs.": 24, "hvb.": 24, "dp.pt.": 40, "dp.st.": 40,
    "dp.ct.": 40, "dp.sa.": 40, "dp.scim.": 40, "dp.audit.": 40, "pscale_tkn_": 30, "pscale_pw_": 30,
    "pscale_oauth_": 30, "pul-": 40, "glc_": 30, "glsa_": 30, "sbp_": 30, "fo1_": 30, "NRAK-": 20,
    "sntrys_": 30, "sntryu_": 30, "pnu_": 30, "dckr_pat_": 20, "AGE-SECRET-KEY-": 50,
}  # fmt: skip
# The shortest body any prefix needs, and which prefixes each separator anchors.
_MIN_BODY = 10
_ANCHORS: dict[str, tuple[str, ...]] = {}
for _prefix in PREFIXES:
    _anchor = min(i for i in (_prefix.find(c) for c in "_-.") if i >= 0)
    _ANCHORS.setdefault(_prefix[_anchor], ())
    _ANCHORS[_prefix[_anchor]] += (_prefix,)


def _word_start(text: str, end: int) -> int:
    start, floor = end, max(0, end - 32)  # prefixes are short; bounded so a hostile line stays linear
    while start > floor and text[start - 1].isalnum():
        start -= 1
    return start


def _chars(chars: Iterable[str]) -> str:
    """A character class body of ``chars`` (escaped)."""
    return "".join(re.escape(c) for c in sorted(set(chars)))


def _prefixed(anchor: str) -> Rule:
    prefixes = _ANCHORS[anchor]

    def repl(m: re.Match[str], text: str) -> Out:
        start = _word_start(text, m.start())
        # The word before the separator is the prefix; like gitleaks' \b, it must start a word.
        if start == m.start() or text[start - 1 : start] == "_":
            return None
        token = text[start : m.end()]
        for prefix in prefixes:
            if token.startswith(prefix):
                body = len(token) - len(prefix)
                if body >= PREFIXES[prefix] and (prefix != "secret_" or any(c.isdigit() for c in token)):
                    return start, PLACEHOLDER
                break
        return None

    # The two characters before the separator must end a known prefix ("pm" of npm_): one
    # fixed-width lookbehind, so the many "_" of snake_case cost a compare each. Issued tokens
    # are random: within their first characters comes a capital or a digit, which lowercase
    # names never have (bounded lookahead: a hostile run of them stays linear).
    tails = sorted({p[p.index(anchor) - 2 : p.index(anchor)] for p in prefixes})
    # The tails as a trie: each alternative starts with a literal, which re skips at one
    # compare, so a separator after a word that ends no prefix ("ab-") fails in a few steps.
    seconds: dict[str, list[str]] = {}
    for tail in tails:
        seconds.setdefault(tail[0], []).append(tail[1])
    trie = "|".join(re.escape(first) + f"[{_chars(rest)}]" for first, rest in seconds.items())
    pattern = (
        re.escape(anchor)
        + rf"(?<=[A-Za-z0-9]{{2}}{re.escape(anchor)})"  # a cheap class test first: "__" fails here
        + f"(?<=(?:{trie}){re.escape(anchor)})"
        + rf"(?=[a-z_\-.]{{0,64}}[A-Z0-9])[A-Za-z0-9_\-.]{{{_MIN_BODY},}}"
    )
    # Gated on the prefixes themselves (the separator alone is in every other word).
    return Rule(f"token{anchor}", re.compile(pattern), repl, needs=prefixes)


def _twilio(sid: str) -> Rule:
    # An account / API-key sid and its auth token side by side: the token goes.
    return Rule(
        f"twilio_pair_{sid}",
        re.compile(
            sid + rf"""(?<![A-Za-z0-9_]{sid})[0-9a-f]{{32}}"""
            r"""(?P<sep>["']?[ \t]*[:,/][ \t]*["']?)(?P<secret>[A-Za-z0-9]{32})(?![A-Za-z0-9])"""
        ),
        lambda m, text: text[m.start() : m.start("secret")] + PLACEHOLDER,
        # "AC" lies within "<REDACTED>", so it cannot gate: the pair waits for a capital "A"
        # (a memchr); no replacement forms an "AC" followed by 32 hex digits.
        needs=("A",) if sid == "AC" else (),
    )


def _aws_pair(m: re.Match[str], text: str) -> Out:
    # The secret half of an id/secret pair written together ("AKIA…:wJalr…", "AKIA… wJalr…").
    return PLACEHOLDER + (m.group("sep") or "") + (PLACEHOLDER if m.group("secret") else "")


_TOKEN_RULES: tuple[Rule, ...] = (
    _prefixed("_"),
    _prefixed("-"),
    _prefixed("."),
    Rule(
        "aws_access_key_id",
        re.compile(
            r"A(?<![A-Za-z0-9_]A)(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA)[A-Z0-9]{16}(?![A-Za-z0-9_])"
            r"""(?:(?P<sep>["']?[ \t]*[:,/| \t][ \t]*["']?)(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+]))?"""
        ),
        _aws_pair,
    ),
    Rule("gcp_api_key", re.compile(r"AIza(?<![A-Za-z0-9_]AIza)[0-9A-Za-z_\-]{35}"), PLACEHOLDER),
    Rule("databricks_token", re.compile(r"dapi(?<![A-Za-z0-9_]dapi)[a-f0-9]{32}(?:-\d)?"), PLACEHOLDER),
    Rule("alibaba_key_id", re.compile(r"LTAI(?<![A-Za-z0-9_]LTAI)[A-Za-z0-9]{20}"), PLACEHOLDER),
    _twilio("AC"),
    _twilio("SK"),
    Rule(
        "mailchimp_key",
        re.compile(r"-us(?<=[0-9a-f]{32}-us)\d{1,2}(?![0-9])"),
        PLACEHOLDER,
        lead=32,
    ),
    Rule(
        "azure_ad_client_secret",
        re.compile(r"Q~(?<=[A-Za-z0-9_~.]{3}\dQ~)[A-Za-z0-9_~.\-]{31,34}"),
        PLACEHOLDER,
        lead=4,
    ),
    Rule(
        "telegram_bot_token",
        re.compile(r":(?<=[0-9]{8}:)(?P<secret>AA[A-Za-z0-9_\-]{33})(?![A-Za-z0-9_\-])"),
        lambda m, text: ":" + PLACEHOLDER,
    ),
    Rule(
        "slack_webhook",
        re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]+"),
        lambda m, text: "hooks.slack.com/" + PLACEHOLDER,
    ),
    Rule(
        "discord_webhook",
        re.compile(r"/api/webhooks/\d+/[A-Za-z0-9_\-]+"),
        lambda m, text: "/api/webhooks/" + PLACEHOLDER,
    ),
    Rule(
        "jwt",
        re.compile(
            r"eyJ(?<![A-Za-z0-9_]eyJ)[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}(?:\.[A-Za-z0-9_\-]+){0,3}"
        ),
        PLACEHOLDER,
    ),
)

# Each rule runs only when its leading literal occurs (read off the pattern: see
# logs/_redact_engine.py).
TOKEN_RULES = _TOKEN_RULES
