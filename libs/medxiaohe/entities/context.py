"""ConText assertions: is a mention present, negated, uncertain, historical, or in the family?

The rules follow ConText (Harkema et al., 2009) as medspaCy implements it: trigger phrases with
a direction (forward: the mentions after it; backward: the mentions before it), scopes that end
at the sentence boundary or at a termination term, and pseudo-triggers ("no increase",
"not only") that look like triggers but are not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from medxiaohe.common import cancel
from medxiaohe.common.cancel import CHECK_EVERY


class Assertion(StrEnum):
    PRESENT = "present"
    NEGATED = "negated"
    UNCERTAIN = "uncertain"
    HISTORICAL = "historical"
    FAMILY = "family"
    HYPOTHETICAL = "hypothetical"  # only when asked for (``assert_spans(hypothetical=True)``)


FORWARD, BACKWARD, BOTH = "forward", "backward", "both"
# (phrase, assertion, direction); phrases are matched case-insensitively on word boundaries.
TRIGGERS: list[tuple[str, Assertion, str]] = [
    *[
        (p, Assertion.NEGATED, FORWARD)
        for p in (
            "no",
            "not",
            "denies",
            "denied",
            "denying",
            "without",
            "negative for",
            "free of",
            "clear of",
            "resolution of",
            "no evidence of",
            "no signs of",
            "no sign of",
            "absence of",
            "absent",
            "ruled out",
            "rules out",
            "not demonstrate",
            "no history of",
            "never had",
            "resolved",
            "no new",
            "fails to reveal",
            "not seen",
            "no suspicious",
            "no further",
            "negative",
            "nor",
            "rather than",
            "declined",
            "no complaints of",
            "unremarkable for",
        )
    ],
    *[
        (p, Assertion.NEGATED, BACKWARD)
        for p in (
            "was ruled out",
            "is ruled out",
            "are ruled out",
            "have been ruled out",
            "was negative",
            "is negative",
            "unlikely",
            "is absent",
            "are absent",
            "was absent",
            "not present",
            "is not seen",
            "resolved",
            "has resolved",
        )
    ],
    *[
        (p, Assertion.UNCERTAIN, FORWARD)
        for p in (
            "possible",
            "possibly",
            "probable",
            "probably",
            "suspected",
            "suspicious for",
            "suspicion of",
            "questionable",
            "question of",
            "rule out",
            "r/o",
            "may be",
            "may have",
            "could be",
            "concern for",
            "concerning for",
            "cannot exclude",
            "cannot be excluded",
            "can not rule out",
            "differential diagnosis",
            "ddx",
            "likely",
            "suggestive of",
            "consistent with possible",
            "presumed",
            "versus",
            "vs",
        )
    ],
    *[
        (p, Assertion.UNCERTAIN, BACKWARD)
        for p in (
            "is possible",
            "is suspected",
            "cannot be excluded",
            "cannot be ruled out",
            "not excluded",
            "is likely",
            "is questionable",
            "?",
        )
    ],
    *[
        (p, Assertion.HISTORICAL, FORWARD)
        for p in (
            "history of",
            "h/o",
            "hx of",
            "past medical history",
            "pmh",
            "past history of",
            "previous",
            "previously",
            "prior",
            "status post",
            "s/p",
            "remote history of",
            "in the past",
            "childhood",
        )
    ],
    *[
        (p, Assertion.FAMILY, BOTH)
        for p in (
            "family history",
            "family history of",
            "fhx",
            "fh of",
            "mother",
            "father",
            "brother",
            "sister",
            "sibling",
            "siblings",
            "aunt",
            "uncle",
            "grandmother",
            "grandfather",
            "maternal",
            "paternal",
            "cousin",
            "son",
            "daughter",
            "parents",
        )
    ],
]
# medspaCy's hypothetical triggers: a mention in their scope is imagined, not asserted ("if you
# were to go to the emergency room"). Their scope also ends at a comma or "then", where the
# main clause of a conditional begins ("if the fever lasts, see a doctor": the doctor is advice).
HYPOTHETICAL_TRIGGERS = ("if", "in case", "unless", "whether", "would", "were to", "in the event")
PSEUDO = (
    "not hesitate",
    "not delay",
    "not wait",
    "without delay",
    "no increase",
    "no change",
    "no significant change",
    "not only",
    "not certain if",
    "not necessarily",
    "gram negative",
    "without difficulty",
    "not cause",
    "no further change",
    "not ruled out",
    "not been ruled out",
    "history and physical",
    "history and examination",
    "social history",
    "history taking",
    "no interval change",
    "without any further",
    "not well seen",
    "not well visualized",
    "not well evaluated",
)
TERMINATIONS = (
    "but",
    "however",
    "although",
    "though",
    "except",
    "aside from",
    "apart from",
    "which",
    "presents with",
    "presented with",
    "presenting with",
    "complains of",
    "reports",
    "secondary to",
    "due to",
    "cause of",
    "etiology of",
    "now",
    "currently",
    "today",
    "and has",
)
PRIORITY = (
    Assertion.NEGATED,
    Assertion.HYPOTHETICAL,
    Assertion.UNCERTAIN,
    Assertion.FAMILY,
    Assertion.HISTORICAL,
)
HYPO, CLAUSE = Assertion.HYPOTHETICAL, "clause"
_SENTENCE = re.compile(r"[.!;\n]+(?=\s|$)|\n")
# Triggers bind no further than this many characters from the mention.
MAX_SCOPE_CHARS = 120


def _alternation(phrases: Sequence[str]) -> re.Pattern[str]:
    escaped = sorted((re.escape(p) for p in phrases), key=len, reverse=True)
    return re.compile(r"(?<![\w/])(?:" + "|".join(escaped) + r")(?![\w/])", re.IGNORECASE)


_TRIGGER_RE = _alternation([t[0] for t in TRIGGERS])
_TRIGGER_RULES: dict[str, list[tuple[Assertion, str]]] = {}
for _phrase, _assertion, _direction in TRIGGERS:
    _TRIGGER_RULES.setdefault(_phrase.lower(), []).append((_assertion, _direction))
_PSEUDO_RE = _alternation(PSEUDO)
_TERM_RE = _alternation(TERMINATIONS)
_HYPOTHETICAL_RE = _alternation(HYPOTHETICAL_TRIGGERS)
_CLAUSE_END = re.compile(r",|\bthen\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    assertion: Assertion | None  # None: a termination
    direction: str


def _hits(sentence: str, offset: int, hypothetical: bool = False) -> list[_Hit]:
    pseudo = [(m.start(), m.end()) for m in _PSEUDO_RE.finditer(sentence)]
    hits = []
    if hypothetical:
        for match in _HYPOTHETICAL_RE.finditer(sentence):
            hits.append(_Hit(match.start() + offset, match.end() + offset, HYPO, FORWARD))
        for match in _CLAUSE_END.finditer(sentence):  # ends a hypothetical scope only
            hits.append(_Hit(match.start() + offset, match.end() + offset, None, CLAUSE))
    for match in _TRIGGER_RE.finditer(sentence):
        if any(s <= match.start() < e for s, e in pseudo):
            continue
        for assertion, direction in _TRIGGER_RULES[match.group(0).lower()]:
            hits.append(_Hit(match.start() + offset, match.end() + offset, assertion, direction))
    for match in _TERM_RE.finditer(sentence):
        hits.append(_Hit(match.start() + offset, match.end() + offset, None, BOTH))
    return sorted(hits, key=lambda h: h.start)


def _ends(term: _Hit, hit: _Hit) -> bool:
    """Whether ``term`` closes ``hit``'s scope (a clause end closes hypotheticals only)."""
    return term.assertion is None and (term.direction != CLAUSE or hit.assertion is HYPO)


def _applies(hit: _Hit, start: int, end: int, hits: list[_Hit]) -> bool:
    if hit.direction in (FORWARD, BOTH) and hit.end <= start <= hit.end + MAX_SCOPE_CHARS:
        return not any(_ends(t, hit) and hit.end <= t.start < start for t in hits)
    if hit.direction in (BACKWARD, BOTH) and end <= hit.start <= end + MAX_SCOPE_CHARS:
        return not any(_ends(t, hit) and end <= t.start < hit.start for t in hits)
    return False


def assert_spans(
    text: str, spans: Sequence[tuple[int, int]], hypothetical: bool = False
) -> list[Assertion]:
    """The assertion of each (start, end) span of ``text``; with ``hypothetical``, spans in
    the scope of a hypothetical trigger are HYPOTHETICAL (after negation, before the rest)."""
    result = [Assertion.PRESENT] * len(spans)
    if not spans:
        return result
    bounds = [0, *(m.end() for m in _SENTENCE.finditer(text)), len(text)]
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    sentence = 0
    cache: dict[int, list[_Hit]] = {}
    for n, i in enumerate(order):
        if n % CHECK_EVERY == 0:
            cancel.check()  # a long text's caller may have gone
        start, end = spans[i]
        while sentence + 1 < len(bounds) - 1 and bounds[sentence + 1] <= start:
            sentence += 1
        lo, hi = bounds[sentence], bounds[sentence + 1]
        if sentence not in cache:
            cache[sentence] = _hits(text[lo:hi], lo, hypothetical)
        hits = cache[sentence]
        found = {
            h.assertion
            for h in hits
            if h.assertion
            and _applies(h, start, end, hits)
            and not (h.start < end and start < h.end)
        }
        result[i] = next((a for a in PRIORITY if a in found), Assertion.PRESENT)
    return result
