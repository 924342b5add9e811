r"""How a rule set runs: one pass finds which rules can match, only those search the text.

Every rule starts with a literal (:mod:`._redact_rules`). The literals every match of a rule
starts with are read off its compiled pattern (:func:`literal_prefixes`); those of two or more
characters are found together in one Aho-Corasick pass over the lowercased text's UTF-8 bytes
(``ahocorasick_rs``: a few µs per KB whatever their number), one-character ones with a memchr
(``in``). A rule whose literal is a poor gate names better words in ``needs`` (a token
family's prefixes). Only the rules whose gate holds search the text, in order; a clean line
costs the one pass plus the few rules whose literal it holds.

Exact, not approximate: a literal of a case-sensitive rule is looked for lowercased and then
compared as spelt; gates are checked once, before any replacement, and no gate word can be
formed by one (none contains "<" or ">" or lies within "<redacted>"). tests/test_redact_engine.py
checks that gating never changes what is redacted. A long or dense text is searched in chunks
under an occurrence budget (:meth:`_Scanner.occurring`). Without ``ahocorasick_rs`` (a platform
with no wheel) the words are found with ``str.find``: slower, the same result.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from re import _constants as sre  # type: ignore[attr-defined]  # the stdlib's own parser, read only
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from membrane_otel.logs._redact_keys import PLACEHOLDER, lowered
from membrane_otel.logs._redact_rules import Rule

# A text with more matches of one rule than this is hostile or a dump: the rest of it, from
# that match on, is withheld whole. Fails closed, and bounds the time any input can take.
MAX_MATCHES = 256
# More word occurrences than this in one text (hostile, or a dump): the rest are found by `in`.
_MAX_HITS = 4096
# Past this many alternatives a prefix set is no literal worth looking for.
_MAX_ALTERNATIVES = 64
_MARKER = PLACEHOLDER.lower()

# A long text is searched for the words this many bytes at a time (see _Scanner.occurring).
_CHUNK = 8192
# When a dense text leaves this few words unseen, they are looked for with `in`.
_FEW = 16
# An edit of one rule: (start, end) in the text before it, and the length of what replaced it.
Edit = tuple[int, int, int]


def literal_prefixes(regex: re.Pattern[str]) -> frozenset[str] | None:
    """The literals of which every match of ``regex`` starts with one, or None when there is no
    such set (the pattern starts with a class or a repeat, or is case-insensitive)."""
    if regex.flags & re.IGNORECASE:
        return None  # a case-folded literal is no literal ("ſ" folds to "s")
    try:
        parsed = sre_parse.parse(regex.pattern, regex.flags)
    except Exception:
        return None
    found, _ = _sequence(list(parsed))
    if not found or "" in found:
        return None
    return frozenset(found)


def _sequence(items: list[tuple[Any, Any]]) -> tuple[set[str] | None, bool]:
    """(prefixes, whether the whole sequence was literal, so what follows may be appended)."""
    out = {""}
    for op, av in items:
        if op is sre.LITERAL:
            out = {s + chr(av) for s in out}
        elif op in (sre.ASSERT, sre.ASSERT_NOT, sre.AT):
            continue  # zero-width: the match's text still starts with what comes next
        elif op is sre.SUBPATTERN or op is sre.BRANCH:
            branches = [av[3]] if op is sre.SUBPATTERN else av[1]
            subs = [_sequence(list(b)) for b in branches]
            if any(s is None for s, _ in subs):
                return out, False
            alternatives: set[str] = set().union(*(s for s, _ in subs if s is not None))
            out = {a + b for a in out for b in alternatives}
            if not all(complete for _, complete in subs):
                return out, False
        elif op is sre.IN and len(av) <= 4 and all(o is sre.LITERAL for o, _ in av):
            out = {a + chr(v) for a in out for _, v in av}
        else:
            return out, False
        if len(out) > _MAX_ALTERNATIVES:
            return None, False
    return out, True


def _formable(word: str) -> bool:
    """Whether inserting ``<REDACTED>`` could form ``word`` (then it is no gate: see RuleSet)."""
    return "<" in word or ">" in word or word.lower() in _MARKER


def _gate(rule: Rule) -> tuple[str, ...]:
    """The words of which one must occur for ``rule`` to match; () when it always runs.

    The literals read off the pattern when each has two characters or more (found in the one
    pass), else the rule's ``needs`` (a token family's prefixes, a rare character: its author
    vouches that no replacement forms them into a match), else its one-character literal.
    """
    prefixes = literal_prefixes(rule.regex)
    if prefixes and min(map(len, prefixes)) >= 2 and not any(map(_formable, prefixes)):
        return tuple(sorted(prefixes))
    if rule.needs:
        return tuple(sorted(rule.needs))
    if prefixes and not any(map(_formable, prefixes)):
        return tuple(sorted(prefixes))
    return ()


class _Scanner:
    """Which of a word list occur in a text: the indexes of every occurrence, overlapping ones
    included (positions are not needed, so the search runs over the UTF-8 bytes: cheaper than
    over ``str``, whose indexes the binding would map back)."""

    __slots__ = ("_ac", "_longest", "_rest", "_words")

    def __init__(self, words: Sequence[str]) -> None:
        self._words = tuple(words)
        self._longest = max((len(w.encode()) for w in words), default=1)
        self._rest: dict[frozenset[int], tuple[Any, tuple[int, ...]]] = {}
        try:
            import ahocorasick_rs
        except ImportError:  # no wheel for this platform: str.find below finds the same
            self._ac = None
        else:
            # A DFA: the fastest search for a hundred-odd words (memory is a few hundred KB).
            dfa = ahocorasick_rs.Implementation.DFA
            encoded = [w.encode() for w in words]
            self._ac = ahocorasick_rs.BytesAhoCorasick(encoded, implementation=dfa) if words else None

    def occurring(self, low: str) -> set[int]:
        """The indexes of the words that occur in ``low``.

        A long text is searched in chunks. Past ``_MAX_HITS`` occurrences (a hostile or dump-like
        text: 100 KB of "://" holds 33,000) the rest is searched for the words not seen yet only,
        so a dense text never costs a list of every occurrence of the words that made it dense."""
        if self._ac is None:
            return {i for i, w in enumerate(self._words) if w in low}
        data = low.encode("utf-8", "surrogatepass")
        if len(data) <= _CHUNK:
            return {h[0] for h in self._ac.find_matches_as_indexes(data, overlapping=True)}
        found: set[int] = set()
        search, numbering = self._ac, None
        budget, overlap = _MAX_HITS, self._longest - 1  # a word starting in a chunk ends within
        for at in range(0, len(data), _CHUNK):
            hits = search.find_matches_as_indexes(data[at : at + _CHUNK + overlap], overlapping=True)
            found.update(h[0] for h in hits) if numbering is None else found.update(
                numbering[h[0]] for h in hits
            )
            budget -= len(hits)
            if budget < 0:
                rest = [i for i in range(len(self._words)) if i not in found]
                if len(rest) <= _FEW:  # a few words: one `in` each beats building a search
                    return found.union(i for i in rest if self._words[i] in low)
                search, numbering = self._without(found)
                budget = _MAX_HITS
        return found

    def _without(self, found: set[int]) -> tuple[Any, tuple[int, ...]]:
        """A search for the words not in ``found`` (and their numbers), remembered per set."""
        key = frozenset(found)
        kept = self._rest.get(key)
        if kept is None:
            import ahocorasick_rs

            numbering = tuple(i for i in range(len(self._words)) if i not in found)
            # An NFA: built in ~0.2 ms where a DFA takes ~1 ms; this search runs once per text.
            nfa = ahocorasick_rs.Implementation.NoncontiguousNFA
            words = [self._words[i].encode() for i in numbering]
            kept = (ahocorasick_rs.BytesAhoCorasick(words, implementation=nfa), numbering)
            if len(self._rest) >= 16:  # hostile texts vary: a bounded memory of them
                self._rest.clear()
            self._rest[key] = kept
        return kept


Plan = tuple[tuple[Callable[..., re.Match[str] | None], bool, Rule], ...]


class RuleSet:
    """Rules applied in order, each only when one of its gate words occurs (module doc).

    The gates are checked once per text, up front, on the text as given: a replacement only
    removes text and adds ``<REDACTED>`` (or puts back text of its own match), so a gate it
    would close only costs a search that finds nothing, and no gate word contains "<" or ">"
    or lies within "<redacted>", so none can be formed by one. The rules a mask of gates lets
    through are remembered per mask: a text pays one flat loop over the rules that can match.
    """

    __slots__ = ("_bits", "_chars", "_exact", "_gate_bits", "_plans", "_scanner", "rules")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        gates = [_gate(r) for r in rules]
        bit_of = {g: 1 << i for i, g in enumerate(dict.fromkeys(g for g in gates if g))}
        self._gate_bits = tuple(bit_of.get(g, 0) for g in gates)
        words: dict[str, int] = {}  # a word of two characters or more, lowercased → gate bits
        exact: dict[str, dict[str, int]] = {}  # … and its spellings with capitals → their bits
        chars: dict[tuple[str, bool], int] = {}  # (character, in the text as given) → gate bits
        for gate, bit in bit_of.items():
            for word in gate:
                if len(word) == 1:  # a memchr; a capital in the text as given
                    key = (word, word.isupper())
                    chars[key] = chars.get(key, 0) | bit
                    continue
                low = word.lower()
                words.setdefault(low, 0)
                if word == low:
                    words[low] |= bit
                else:  # a case-sensitive rule's literal ("AUTH", "eyJ"): checked as spelt on a hit
                    spellings = exact.setdefault(low, {})
                    spellings[word] = spellings.get(word, 0) | bit
        self._scanner = _Scanner(list(words))
        self._bits = tuple(words.values())
        self._exact = tuple(tuple(exact[w].items()) if w in exact else () for w in words)
        self._chars = tuple((c, on_text, bits) for (c, on_text), bits in chars.items())
        self._plans: dict[int, Plan] = {}

    def _plan(self, mask: int) -> Plan:
        plan = tuple(
            (r.regex.search, r.lower, r)
            for r, bit in zip(self.rules, self._gate_bits, strict=True)
            if not bit or mask & bit
        )
        self._plans[mask] = plan
        return plan

    def mask(self, text: str, low: str) -> int:
        """The gates that hold for ``text``: one pass for the words, a memchr per character."""
        mask = 0
        for char, on_text, char_bits in self._chars:
            if char in (text if on_text else low):
                mask |= char_bits
        bits, exact = self._bits, self._exact
        found = self._scanner.occurring(low)
        for word in found:
            mask |= bits[word]
            for spelt, more in exact[word]:
                if spelt in text:
                    mask |= more
        return mask

    def clean(self, text: str, low: str) -> bool:
        """True when :meth:`run` returns ``text`` as it is, proven without running a rule: no
        gate holds and no rule runs ungated. A gate holds on a text only if one of its words or
        characters occurs in it, so on texts joined into one, clean means each of them is."""
        if self.mask(text, low):
            return False
        plan = self._plans.get(0)
        if plan is None:
            plan = self._plan(0)
        return not plan

    def run(self, text: str, low: str) -> tuple[str, str]:
        """Apply the rules in order to ``text`` (``low`` is ``lowered(text)``)."""
        mask = self.mask(text, low)
        plan = self._plans.get(mask)
        if plan is None:  # (an empty plan is remembered too: the usual one for a clean text)
            plan = self._plan(mask)
        ascii_text = text.isascii()
        for search, lower, rule in plan:
            # The no-match case inline (most rules, most texts): one search, no call.
            subject = low if lower else text
            first = search(subject)
            if first is None:
                continue
            # Every rule starts with a literal, so no match is empty: the next one starts at or
            # after this one's end, as finditer would find it. One match (the usual) needs no iterator.
            second = search(subject, first.end())
            found = (
                (first,)
                if second is None
                else chain((first, second), rule.regex.finditer(subject, second.end()))
            )
            new, edits = apply(rule, text, found)
            if edits:
                low = _lower_after(low, new, edits, ascii_text)
                text = new
        return text, low


def _lower_after(low: str, new: str, edits: list[Edit], ascii_text: bool) -> str:
    """``lowered(new)``, by splicing: ASCII lowercases character by character (1 µs a KB saved
    per replacement); other scripts are lowered whole (a Greek final sigma depends on what follows)."""
    if not ascii_text or not new.isascii():
        return lowered(new)
    parts: list[str] = []
    last, delta = 0, 0
    for start, end, size in edits:
        parts.append(low[last:start])
        parts.append(new[start + delta : start + delta + size].lower())
        last = end
        delta += size - (end - start)
    parts.append(low[last:])
    return "".join(parts)


def apply(rule: Rule, text: str, matches: Iterable[re.Match[str]]) -> tuple[str, list[Edit]]:
    """``text`` with ``matches`` of ``rule`` replaced, and the edits made (ascending).

    A replacement may also be ``(start, new)`` when the secret begins before the match (found
    by looking back), or ``(start, new, end)`` when it runs past it (a PEM block to its END line).
    """
    repl, lead = rule.repl, rule.lead
    parts: list[str] = []
    edits: list[Edit] = []
    copied = 0  # text[:copied] is in parts
    floor = 0  # the end of the last match handled, kept or replaced: no overlap past it
    count = 0
    for m in matches:
        start, end = m.start() - lead, m.end()
        if start < floor:  # overlapping a previous match: already handled
            continue
        count += 1
        if count > MAX_MATCHES:
            parts.append(text[copied:start])
            parts.append(PLACEHOLDER)
            edits.append((start, len(text), len(PLACEHOLDER)))
            copied = len(text)
            break
        if isinstance(repl, str):
            new = repl
        else:
            out = repl(m, text)
            if out is None:  # kept: a masked value, a path, a cursor
                floor = end
                continue
            if isinstance(out, tuple):
                if len(out) == 3:
                    start, new, end = out
                else:
                    start, new = out
                if start < floor:
                    continue
            else:
                new = out
        floor = max(end, m.end())
        parts.append(text[copied:start])
        parts.append(new)
        edits.append((start, end, len(new)))
        copied = end
    if not edits:
        return text, edits
    parts.append(text[copied:])
    return "".join(parts), edits
