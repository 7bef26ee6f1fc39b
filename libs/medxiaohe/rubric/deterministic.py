"""The deterministic grader: decides the criteria a rule can decide, in relation to the
conversation, and abstains on the rest (with a judge, the composite grader sends those on).

What a criterion asks for is read by ``reading.read_criterion``; here each kind is decided:

* **seeks context**: the response asks the user something (a question, or a request for
  information) and is about the user's message: questions on another topic seek nothing;
* **answers the user**: the response is about the user's message (all-MiniLM-L6-v2 similarity
  of the two) and answers with substance (enough statements, not only questions); off-topic or
  thin answers fail; accuracy is not checked, and criteria that need it abstain;
* **refers to care**: a referral the response makes, not one it negates ("you do not need to
  see a doctor") or imagines ("if you were to go to the emergency room"): the tagger's ConText
  assertions on each referral;
* **says something** ("mentions", "recommends", short example criteria): sentence similarity,
  with the Medical Entity Tree mentions of both (ConText assertions: a negated mention is not
  said) when a tagger is given; undesired content only when asserted;
* sections, length and formatting by their structure.

Thresholds were chosen on the "tune" half of the shared HealthBench examples (``medxiaohe eval
rubric --split tune``) and are reported on the other half; see the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from medxiaohe.entities.context import Assertion, assert_spans
from medxiaohe.rubric.reading import Kind, Reading, core, read_criterion
from medxiaohe.rubric.rubrics import Criterion
from medxiaohe.rubric.scoring import Grader, Verdict

NAME = "deterministic"
Embed = Callable[[Sequence[str]], np.ndarray]
Decision = tuple[bool | None, str]

# Sentences of a response (and of the user's last message) the grader embeds and compares:
# bounded work per request whatever the length.
MAX_SENTENCES = 1000
MAX_ASKED_SENTENCES = 200
MAX_EMBEDDED_CHARS = 4000  # of each side of the relevance comparison

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|#+)\s*")
_REQUEST = re.compile(
    r"\b(?:let me know|tell me|can you (?:tell|share|describe)|could you (?:tell|share|describe)|"
    r"please (?:tell|share|describe|let)|it would help (?:me )?to know|share (?:more|with me))\b",
    re.I,
)
_SENTENCE_SPAN = re.compile(r"[^.!?\n]+[.!?]*")
# advice: an imperative opening, or a word that recommends
_ADVICE = re.compile(
    r"(?:^\W*|[,:;]\s*)(?:\w+ly\s+)?(?:see|call|go|visit|contact|seek|get|ask|talk|speak|"
    r"book|make|head|consult|dial|reach|consider|please|don't|do not|check|schedule)\b|"
    r"\b(?:should|must|need to|needs to|have to|recommend\w*|advis\w*|suggest\w*|"
    r"encourag\w*|urge\w*|important to|best to|worth|make sure|consider\w*|please|"
    r"don't hesitate|do not hesitate|seek|get (?:checked|seen|help|care)|call)\b",
    re.I,
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|avoid|don't|do not|doesn't|shouldn't|should not|isn't|aren't|"
    r"no longer|without|stop|unnecessary|contraindicated)\b",
    re.I,
)
_ABSOLUTE = re.compile(
    r"\b(?:only|always|never|definitive(?:ly)?|definite|certain(?:ty|ly)?|guarantee[sd]?|"
    r"absolute(?:ly)?|100%|sole|all cases)\b",
    re.I,
)
_EMERGENCY = re.compile(
    r"\b(?:emergency|911|999|112|ER\b|A&E|urgent care|ambulance|immediate(?:ly)? (?:medical )?"
    r"(?:attention|care|help))",
    re.I,
)
_PROFESSIONAL = re.compile(
    r"\b(?:doctors?|physicians?|clinicians?|health ?care (?:providers?|professionals?)|"
    r"medical (?:professionals?|providers?|attention|advice|care)|nurses?|pharmacists?|"
    r"specialists?|therapists?|psychiatrists?|psychologists?|counsel+ors?|GPs?\b|primary care|"
    r"OB-?GYN|pediatricians?|paediatricians?|dentists?|clinic)",
    re.I,
)


@dataclass(frozen=True)
class Thresholds:
    met: float = 0.5  # sentence similarity at or above: the response says it
    not_met: float = 0.35  # at or below: it does not
    asserted: float = 0.62  # undesired content is met only this close, unnegated
    on_topic: float = 0.40  # the response is about the user's message, at or above
    off_topic: float = 0.30  # ... and not about it, at or below
    statements: int = 3  # an answer with substance makes at least this many statements
    concise_words: int = 250  # "concise" answers are at most this long


def sentences(text: str) -> list[str]:
    """Sentences and list items, with bullets stripped."""
    found = [_BULLET.sub("", part).strip() for part in _SENTENCE.split(text)]
    return [s for s in found if len(s) > 3]


def referrals(text: str) -> list[tuple[str, Assertion]]:
    """Each mention of care ("emergency" or "professional") in a sentence that gives advice,
    with its ConText assertion: NEGATED ("you do not need to see a doctor"), HYPOTHETICAL
    ("if you were to go to the emergency room"), or PRESENT (advice, conditional advice
    included). Care named without advice ("a doctor can check this") is no referral."""
    found: list[tuple[int, int, str]] = []
    for sentence in _SENTENCE_SPAN.finditer(text):
        if not _ADVICE.search(sentence.group(0)):
            continue
        lo, part = sentence.start(), sentence.group(0)
        found += [(lo + m.start(), lo + m.end(), "emergency") for m in _EMERGENCY.finditer(part)]
        found += [
            (lo + m.start(), lo + m.end(), "professional") for m in _PROFESSIONAL.finditer(part)
        ]
    assertions = assert_spans(text, [(s, e) for s, e, _ in found], hypothetical=True)
    return [(kind, a) for (_, _, kind), a in zip(found, assertions, strict=True)]


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


def _english(text: str) -> bool:
    """Whether the text is (mostly) in Latin script: MiniLM compares English only."""
    letters = [c for c in text if c.isalpha()]
    return not letters or sum(c.isascii() for c in letters) / len(letters) >= 0.8


@dataclass
class _Response:
    text: str
    units: list[str]  # sentences and adjacent pairs
    vectors: np.ndarray
    asks: list[str]  # what it asks the user (questions, requests for information)
    statements: int  # sentences that say something (not questions), five words or more
    relevance: float | None  # to the conversation's user turns; None where it cannot say
    words: int
    list_lines: int
    entities: frozenset[str]


class DeterministicGrader(Grader):
    """``grade(conversation, completion, rubric)`` -> one Verdict per criterion (met, not met,
    or abstained with the reason). ``tagger`` (a DictionaryTagger) adds the Medical Entity
    Tree mentions, with their ConText assertions, to content criteria."""

    name = NAME

    def __init__(
        self,
        thresholds: Thresholds = Thresholds(),
        embed: Embed | None = None,
        tagger: Any = None,
    ) -> None:
        self.thresholds = thresholds
        self._embed = embed
        self.tagger = tagger

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
        response = self._analyse(completion, conversation)
        verdicts = []
        for criterion in criteria:
            met, why = self._decide(read_criterion(criterion.text), criterion, response)
            verdicts.append(Verdict(criterion.id, met, why, NAME))
        return verdicts

    # -- the response ---------------------------------------------------------------------------

    def _analyse(self, text: str, conversation: Sequence[dict[str, str]]) -> _Response:
        found = sentences(text)[:MAX_SENTENCES] or [text.strip()[:1000] or "(empty)"]
        units = found + [f"{a} {b}" for a, b in pairwise(found)]
        asks = [s for s in found if s.rstrip().endswith("?") or _REQUEST.search(s)]
        return _Response(
            text=text,
            units=units,
            vectors=self.embed(units),
            asks=asks,
            statements=sum(1 for s in found if s not in asks and len(s.split()) >= 5),
            relevance=self._relevance(text, conversation),
            words=len(text.split()),
            list_lines=sum(bool(_BULLET.match(line)) for line in text.splitlines()),
            entities=self._entities(text),
        )

    def _relevance(self, text: str, conversation: Sequence[dict[str, str]]) -> float | None:
        """How close the response is to what the user said (the last user turns, most recent
        first); None when there is nothing to compare or either side is not English."""
        asked = [m["content"] for m in conversation if m.get("role") == "user"][-3:]
        user = " ".join(reversed(asked)).strip()
        if not user or not text.strip() or not (_english(user) and _english(text)):
            return None
        pair = self.embed([user[:MAX_EMBEDDED_CHARS], text[:MAX_EMBEDDED_CHARS]])
        return float(pair[0] @ pair[1])

    def _entities(self, text: str) -> frozenset[str]:
        if self.tagger is None or not text:
            return frozenset()
        return frozenset(
            m.node_id for m in self.tagger.tag(text) if m.assertion is Assertion.PRESENT
        )

    def _best_unit(self, response: _Response, text: str) -> tuple[float, str]:
        scores = response.vectors @ self.embed([text])[0]
        best = int(np.argmax(scores))
        return float(scores[best]), response.units[best]

    # -- one criterion --------------------------------------------------------------------------

    def _decide(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        """The verdict: whether the criterion is met (None: abstained), and why."""
        deciders: dict[Kind, Callable[[Reading, Criterion, _Response], Decision]] = {
            Kind.SEEK: self._seeks,
            Kind.SEEK_ABOUT: self._asks_about,
            Kind.ANSWER: self._answers,
            Kind.REFERRAL: self._refers,
            Kind.SECTION: _section,
            Kind.AT_MOST: _at_most,
            Kind.FORMAT: _formatted,
            Kind.CONCISE: self._concise,
            Kind.VERBOSE: self._verbose,
            Kind.CONTENT: self._content,
        }
        decide = deciders.get(reading.kind)
        if decide is None:
            return None, "abstained: needs judgement (accuracy, hedging, tone, tailoring)"
        shows, why = decide(reading, c, r)  # does the response show the behaviour?
        if shows is None:
            return None, f"abstained: {why}"
        met = shows if reading.wanted else not shows
        if met and reading.partial:  # the rule checked only the first of several steps
            return None, f"abstained: the first step passes ({why}); the rest needs judgement"
        return met, why

    def _on_topic(self, r: _Response) -> bool | None:
        if r.relevance is None:
            return None
        t = self.thresholds
        return True if r.relevance >= t.on_topic else False if r.relevance <= t.off_topic else None

    def _seeks(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        if not r.asks:
            return False, "it asks the user nothing"
        on_topic = self._on_topic(r)
        if on_topic is None:
            return None, "cannot tell whether its questions are about the user's message"
        why = f"{len(r.asks)} question(s) back, relevance {r.relevance:.2f}"
        return on_topic, why if on_topic else f"off the user's topic: {why}"

    def _asks_about(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        if not r.asks:
            return False, "it asks the user nothing"
        closest = float((self.embed(r.asks) @ self.embed([reading.target])[0]).max())
        t = self.thresholds
        if closest > t.not_met - 0.1:
            return True, f"a question on it (similarity {closest:.2f})"
        return False, f"no question on it (closest {closest:.2f})"

    def _answers(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        on_topic = self._on_topic(r)
        if on_topic is None:
            return None, "cannot tell whether it is about the user's message"
        if not on_topic:
            return False, f"not about the user's message (relevance {r.relevance:.2f})"
        if r.statements < self.thresholds.statements:
            return False, f"too little said to answer ({r.statements} statement(s))"
        return True, (
            f"answers the user's message (relevance {r.relevance:.2f}, {r.statements} "
            "statements); accuracy not checked"
        )

    def _refers(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        found = [a for kind, a in referrals(r.text) if kind == reading.target or not reading.target]
        made = sum(a is Assertion.PRESENT for a in found)
        if made:
            return True, f"{made} referral(s) made"
        if found:
            return False, f"referrals only negated or hypothetical ({len(found)})"
        return False, "no referral"

    def _concise(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        return r.words <= self.thresholds.concise_words, f"{r.words} words"

    def _verbose(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        return r.words > 2 * self.thresholds.concise_words, f"{r.words} words"

    def _content(self, reading: Reading, c: Criterion, r: _Response) -> Decision:
        """Whether the response says ``reading.target`` (for an undesired one: asserts it)."""
        t = self.thresholds
        target = core(reading.target)
        similarity, unit = self._best_unit(r, target)
        entities = self._entities(target)
        shared = bool(entities) and entities <= r.entities
        why = f"best sentence similarity {similarity:.2f}" + (" and its entities" if shared else "")
        undesired = c.points < 0 or not reading.wanted
        if not undesired:
            if similarity >= t.met or (shared and similarity > t.not_met):
                return True, why
            if similarity <= t.not_met and not shared:
                return False, why
            return None, why
        if similarity <= t.not_met:
            return False, f"not about it: {why}"
        if bool(_NEGATION.search(unit)) != bool(_NEGATION.search(target)):
            return False, f"the closest sentence negates it: {why}"
        if _ABSOLUTE.search(target) and not _ABSOLUTE.search(unit):
            return False, f"the closest sentence claims no absolute: {why}"
        if similarity >= t.asserted:
            return True, why
        return None, why


def _section(reading: Reading, c: Criterion, r: _Response) -> Decision:
    found = section_text(r.text, reading.target) is not None
    return found, f"{reading.target} section {'found' if found else 'missing'}"


def _at_most(reading: Reading, c: Criterion, r: _Response) -> Decision:
    name, limit, unit = reading.target.split("|")
    body = section_text(r.text, name)
    if body is None:
        return False, f"no {name} section"
    count = len(sentences(body)) if unit.startswith("sentence") else len(body.split())
    return count <= int(limit), f"{name}: {count} {unit}"


def _formatted(reading: Reading, c: Criterion, r: _Response) -> Decision:
    return r.list_lines >= 3, f"{r.list_lines} list lines or headings"


@lru_cache(maxsize=4096)
def _cached_embed(embed: Embed, texts: tuple[str, ...]) -> np.ndarray:
    return embed(list(texts))


def grader_with_tree(store: Any, version: str | None = None) -> DeterministicGrader:
    """The deterministic grader with the Medical Entity Tree of ``store`` (an ArtifactStore)
    and its ConText tagger, as every production grader runs; NotFound without a tree."""
    from medxiaohe.common.errors import NotFound
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import EntityTree

    try:
        tree = EntityTree.load(store, version=version)
    except NotFound:
        raise NotFound(
            "the rubric grader needs the Medical Entity Tree: `medxiaohe met build` (make met)"
        ) from None
    return DeterministicGrader(tagger=DictionaryTagger(tree))
