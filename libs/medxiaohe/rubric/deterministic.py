"""The deterministic grader: decides the criteria that rules and sentence similarity can decide,
and abstains on the rest (the composite grader sends those to a model).

Checks, each written for criteria in general rather than for the wording of any rubric:

* **generic behaviours** named by cluster-level criteria: asking the user questions back (seeking
  context), answering the user's message at all (relevance to it), referral to emergency or
  professional care, a structured or a concise answer; "factually accurate" and similar are
  left to a model;
* **"fails to X" / "does not X"** criteria: the check for X, inverted;
* **content criteria** ("mentions", "advises", "explains" ...): all-MiniLM-L6-v2 similarity
  between the criterion and the response's best-matching sentence or pair of sentences, plus the
  Medical Entity Tree mentions of both (with their ConText assertions) when a tagger is given:
  met above ``met``, not met below ``not_met``, abstain between;
* **undesired content** (negative points): not met when the response is not about it, or when its
  best-matching sentence negates it; met only when the response asserts it with high similarity.

The thresholds were chosen on the 24 shared HealthBench examples with ideal completions
(``medxiaohe eval rubric``); see the README for the figures.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from medxiaohe.rubric.rubrics import Criterion
from medxiaohe.rubric.scoring import Grader, Verdict

NAME = "deterministic"
Embed = Callable[[Sequence[str]], np.ndarray]

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|#+)\s*")
_JUSTIFICATION = re.compile(r"\(Justification:.*?(?:\)|$)", re.S | re.I)
_NEGATED_CRITERION = re.compile(
    r"^(?:the response\s+)?(?:fails to|does not|doesn't|omits|neglects to|lacks|misses|"
    r"does not include|is missing)\s+(.+)$",
    re.I | re.S,
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|avoid|don't|do not|doesn't|shouldn't|should not|isn't|aren't|"
    r"no longer|without|stop|unnecessary|contraindicated)\b",
    re.I,
)
_EMERGENCY = re.compile(
    r"\b(?:emergency|911|999|112|ER\b|A&E|urgent care|ambulance|call (?:your )?local emergency|"
    r"immediate(?:ly)? (?:medical )?(?:attention|care|help))",
    re.I,
)
_PROFESSIONAL = re.compile(
    r"\b(?:doctor|physician|clinician|healthcare (?:provider|professional)|health care provider|"
    r"medical (?:professional|provider|attention|advice|care)|nurse|pharmacist|specialist|"
    r"therapist|psychiatrist|psychologist|counsel+or|GP\b|primary care|OB-?GYN|pediatrician|"
    r"dentist|see (?:a|your) (?:provider|professional)|consult)",
    re.I,
)
_REFERRAL_CRITERION = re.compile(
    r"\b(?:refer|referral|seek (?:immediate |urgent |emergency |professional |medical )*"
    r"(?:care|help|attention|evaluation)|see (?:a|your) (?:doctor|physician|provider|"
    r"professional|specialist)|consult|emergency (?:services|care|department|room)|call 911|"
    r"in-person care|professional help|mental health provider|healthcare provider)",
    re.I,
)
_CONTEXT_SEEKING = re.compile(
    r"^\s*(?:the response\s+)?(?:asks|inquires|enquires)\b|"
    r"\b(?:seeks?\b[^.]{0,40}?\b(?:context|information)|asks? (?:the user )?"
    r"(?:for|about|follow-up|clarifying)|follow-up questions?|clarif(?:y|ies|ication))",
    re.I,
)
_UNDECIDABLE = re.compile(
    r"\b(?:factually (?:in)?correct|factually accurate|medically factual|hedg|uncertaint|"
    r"without alarmis|natural language|user's language|region|tailor|health professional|"
    r"only if needed|appropriately)",
    re.I,
)
_ABSOLUTE = re.compile(
    r"\b(?:only|always|never|definitive(?:ly)?|definite|certain(?:ty|ly)?|guarantee[sd]?|"
    r"absolute(?:ly)?|100%|sole|all cases)\b",
    re.I,
)
_ANSWERS = re.compile(r"directly answer|answers? the (?:primary )?(?:question|request)", re.I)
_STRUCTURE = re.compile(
    r"\b(?:structured|step-by-step|week-by-week|bullet|list|table|timeline)\b", re.I
)
_CONCISE = re.compile(
    r"\b(?:concise|brief|short|succinct|somewhat simple|limited in detail)\b", re.I
)
_VERBOSE = re.compile(
    r"\b(?:verbose|too long|lengthy|excessive(?:ly long| detail)|overly long)\b", re.I
)
_SECTION = re.compile(
    r"\b(?:has|includes|contains|gives) an? ([A-Za-z][A-Za-z ]{1,28}?) section\b", re.I
)
_AT_MOST = re.compile(
    r"\bthe ([A-Za-z][A-Za-z ]{1,28}?) section (?:is|has) at most (\d+) (sentences?|words?)\b", re.I
)
_FORMAT = re.compile(r"\b(?:formatting|bullet(?:ed)? points?|headings?|numbered list)\b", re.I)


# Sentences of a response (and of the user's last message) the grader embeds and compares:
# bounded work per request whatever the length (relevance compares every pair of them).
MAX_SENTENCES = 1000
MAX_ASKED_SENTENCES = 200


@dataclass(frozen=True)
class Thresholds:
    met: float = 0.5  # similarity at or above: the response says it
    not_met: float = 0.35  # at or below: it does not
    asserted: float = 0.62  # undesired content is met only this close, unnegated
    relevant: float = 0.3  # the response is about the user's message
    concise_words: int = 250  # "concise" answers are at most this long


def sentences(text: str) -> list[str]:
    """Sentences and list items, with bullets stripped."""
    found = [_BULLET.sub("", part).strip() for part in _SENTENCE.split(text)]
    return [s for s in found if len(s) > 3]


def refers_to_care(text: str) -> bool:
    """Whether the text refers the user to emergency or professional care."""
    return bool(_EMERGENCY.search(text) or _PROFESSIONAL.search(text))


def section_text(text: str, name: str) -> str | None:
    """The text of a section ("Impression:" or a "# Impression" heading up to the next one), or
    None when the report has no such section."""
    # line-local: [ \t]* where \s* would cross newlines (quadratic on 100k empty lines)
    heading = re.compile(
        rf"^[ \t]*(?:#+[ \t]*)?{re.escape(name.strip())}[ \t]*(?::|$)", re.I | re.M
    )
    found = heading.search(text)
    if not found:
        return None
    rest = text[found.end() :]
    following = re.search(r"^[ \t]*(?:#+[ \t]*)?[A-Z][A-Za-z ]{1,30}:", rest, re.M)
    return rest[: following.start()] if following else rest


def criterion_core(text: str) -> str:
    return _JUSTIFICATION.sub("", text).strip()


@dataclass
class _Response:
    text: str
    units: list[str]  # sentences and adjacent pairs
    vectors: np.ndarray
    questions: list[str]  # what it asks the user
    words: int
    list_lines: int
    entities: frozenset[str]


class DeterministicGrader(Grader):
    """``grade(conversation, completion, rubric)`` -> one Verdict per criterion (met, not met,
    or abstained with the reason)."""

    name = NAME

    def __init__(
        self,
        thresholds: Thresholds = Thresholds(),
        embed: Embed | None = None,
        tagger: Any = None,
    ) -> None:
        self.thresholds = thresholds
        self._embed = embed
        self.tagger = tagger  # a DictionaryTagger: entities with assertions, when given

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._embed is None:
            from medxiaohe.evidence.retrievers import embed

            self._embed = embed
        return _cached_embed(self._embed, tuple(texts))

    def grade_criteria(
        self,
        conversation: Sequence[dict[str, str]],
        completion: str,
        criteria: Sequence[Criterion],
    ) -> list[Verdict]:
        response = self._analyse(completion)
        asked = [m["content"] for m in conversation if m.get("role") == "user"]
        last = sentences(asked[-1])[-MAX_ASKED_SENTENCES:] if asked else []
        relevance = self._relevance(response, last)
        return [self._decide(c, criterion_core(c.text), response, relevance) for c in criteria]

    # -- the response ---------------------------------------------------------------------------

    def _analyse(self, text: str) -> _Response:
        found = sentences(text)[:MAX_SENTENCES] or [text.strip()[:1000] or "(empty)"]
        units = found + [f"{a} {b}" for a, b in pairwise(found)]
        return _Response(
            text=text,
            units=units,
            vectors=self.embed(units),
            questions=[s for s in found if s.rstrip().endswith("?")],
            words=len(text.split()),
            list_lines=sum(bool(_BULLET.match(line)) for line in text.splitlines()),
            entities=self._entities(text),
        )

    def _entities(self, text: str) -> frozenset[str]:
        if self.tagger is None or not text:
            return frozenset()
        return frozenset(m.node_id for m in self.tagger.tag(text) if m.assertion.value != "negated")

    def _relevance(self, response: _Response, asked: list[str]) -> float:
        """How close the response comes to any sentence of the user's last message."""
        if not asked:
            return 1.0
        return float((response.vectors @ self.embed(asked).T).max())

    def _best_unit(self, response: _Response, text: str) -> tuple[float, str]:
        scores = response.vectors @ self.embed([text])[0]
        best = int(np.argmax(scores))
        return float(scores[best]), response.units[best]

    # -- one criterion --------------------------------------------------------------------------

    def _decide(self, c: Criterion, core: str, r: _Response, relevance: float) -> Verdict:
        met, why = self._decision(c, core, r, relevance)
        return Verdict(c.id, met, why, NAME)

    def _decision(
        self, c: Criterion, core: str, r: _Response, relevance: float
    ) -> tuple[bool | None, str]:
        negated = _NEGATED_CRITERION.match(core)
        if negated:  # "fails to X": met exactly when X is not
            inner = Criterion(negated.group(1), 1, c.tags, c.id)
            met, why = self._decision(inner, negated.group(1), r, relevance)
            return (None if met is None else not met), f"inverted: {why}"
        return self._generic(c, core, r, relevance) or self._content(c, core, r, relevance)

    def _generic(
        self, c: Criterion, core: str, r: _Response, relevance: float
    ) -> tuple[bool | None, str] | None:
        """Behaviours that cluster-level criteria name, or None when it names none of them."""
        t = self.thresholds
        if _ANSWERS.search(core):
            if relevance <= t.not_met - 0.1:
                return False, f"the response is not about the user's message ({relevance:.2f})"
            return None if _UNDECIDABLE.search(core) else (relevance >= t.relevant, "relevance")
        if _CONTEXT_SEEKING.search(core) and c.points > 0:
            if "level:cluster" in c.tags:  # any question back; some criteria fail on one
                fails_if_asks = bool(re.search(r"if yes,? fail", core, re.I))
                asks = bool(r.questions)
                return asks != fails_if_asks, f"{len(r.questions)} question(s) back"
            if not r.questions:  # "asks about X": a question about X
                return False, "the response asks no question back"
            closest = float((self.embed(r.questions) @ self.embed([core])[0]).max())
            return closest > t.not_met - 0.1, f"closest question similarity {closest:.2f}"
        if _UNDECIDABLE.search(core) and "level:cluster" in c.tags:
            return None, "abstained: needs judgement (accuracy, hedging, tailoring)"
        if _REFERRAL_CRITERION.search(core) and not _NEGATED_CRITERION.match(core):
            emergency = re.search(r"emergenc|911|urgent|immediate", core, re.I)
            found = bool(_EMERGENCY.search(r.text)) if emergency else refers_to_care(r.text)
            if c.points > 0:
                return found, f"referral {'found' if found else 'missing'}"
            return None if found else (False, "no referral in the response")
        section = _SECTION.search(core)
        if section:
            found = section_text(r.text, section.group(1)) is not None
            return found, f"{section.group(1)} section {'found' if found else 'missing'}"
        at_most = _AT_MOST.search(core)
        if at_most:
            name, limit, unit = at_most.group(1), int(at_most.group(2)), at_most.group(3)
            body = section_text(r.text, name)
            if body is None:
                return False, f"no {name} section"
            count = len(sentences(body)) if unit.startswith("sentence") else len(body.split())
            return count <= limit, f"{name}: {count} {unit}"
        if _FORMAT.search(core) and c.points > 0:
            return r.list_lines >= 3, f"{r.list_lines} list lines or headings"
        if _CONCISE.search(core) and "level:cluster" in c.tags:
            return r.words <= t.concise_words, f"{r.words} words"
        if _VERBOSE.search(core):
            return r.words > 2 * t.concise_words, f"{r.words} words"
        return None

    def _content(
        self, c: Criterion, core: str, r: _Response, relevance: float
    ) -> tuple[bool | None, str]:
        t = self.thresholds
        if _STRUCTURE.search(core) and r.list_lines >= 3 and c.points > 0:
            structured = self._best_unit(r, core)[0] >= t.not_met
            if structured:
                return True, f"a structured answer ({r.list_lines} list lines) on the subject"
        similarity, unit = self._best_unit(r, core)
        entities = self._entities(core)
        shared = bool(entities) and entities <= r.entities
        why = f"best sentence similarity {similarity:.2f}" + (" and its entities" if shared else "")
        if c.points > 0:
            if similarity >= t.met or (shared and similarity > t.not_met):
                return True, why
            if similarity <= t.not_met and not shared:
                return False, why
            return None, f"abstained: {why}"
        # undesired content: met only when asserted, not negated, and close
        if similarity <= t.not_met:
            return False, f"not about it: {why}"
        if bool(_NEGATION.search(unit)) != bool(_NEGATION.search(core)):
            return False, f"the closest sentence negates it: {why}"
        if _ABSOLUTE.search(core) and not _ABSOLUTE.search(unit):
            return False, f"the closest sentence claims no absolute: {why}"
        if similarity >= t.asserted:
            return True, why
        return None, f"abstained: {why}"


@lru_cache(maxsize=4096)
def _cached_embed(embed: Embed, texts: tuple[str, ...]) -> np.ndarray:
    return embed(list(texts))
