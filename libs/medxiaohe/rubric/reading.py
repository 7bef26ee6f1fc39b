"""What a rubric criterion asks for, as far as a rule can tell; the deterministic grader decides
only criteria read here as something other than ``JUDGEMENT``.

A criterion is read from its requirement, not its preamble: consensus criteria open with a
shared description of the theme and end with what the response must do. The requirement is the
first sentence that directs (must, should, fail, "does the response ..."), or the whole
criterion when none does. "Fails to X" and "does not X" are X, inverted; a step that fails on
"yes" asks for the behaviour to be absent. A criterion read as several requirements of which
the rule covers the first only is ``partial``: the rule may then fail it, never pass it.

The rules name behaviours in general words, never the wording of any rubric's criteria (a
test checks the shared examples' criteria against them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    SEEK = "seeks context"  # asks the user for what it needs to know
    SEEK_ABOUT = "asks about"  # asks about one thing: ``target``
    ANSWER = "answers the user"  # responds to what the user asked, with substance
    REFERRAL = "refers to care"  # ``target``: "emergency", or "" for any care
    SECTION = "has a section"  # ``target``: the section's name
    AT_MOST = "section at most"  # ``target``: "name|limit|unit"
    FORMAT = "formatted"
    CONCISE = "concise"
    VERBOSE = "verbose"
    CONTENT = "says something"  # ``target``: what it must (or must not) say
    JUDGEMENT = "needs judgement"  # accuracy, hedging, tone, tailoring: abstain


@dataclass(frozen=True)
class Reading:
    kind: Kind
    wanted: bool = True  # False: the behaviour fails the criterion (or is the penalty)
    target: str = ""
    partial: bool = False  # the rule covers only part of what the criterion requires

    def inverted(self) -> Reading:
        return Reading(self.kind, not self.wanted, self.target, self.partial)


_JUSTIFICATION = re.compile(r"\(Justification:.*?(?:\)|$)", re.S | re.I)
_DIRECTIVE = re.compile(
    r"\b(?:must|should|needs? to|fails?|does the response|is the response|"
    r"criteri\w+ (?:is )?met)\b",
    re.I,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STEP = re.compile(r"\bstep\s*\d", re.I)
_INSTRUCTION = re.compile(r"^(?:if\b[^.]{0,60}\bfail|if\b.{0,80}\bcriteria_met|mark\b)", re.I)
_CHOICE = re.compile(r"\beither\b|\blanguage\b", re.I)  # alternatives, or how it is said
_FAIL_ON_YES = re.compile(r"\bif\s+(?:yes|so)\b[^.]{0,12}\bfail", re.I)
_INVERTED = re.compile(
    r"^(?:the response\s+)?(?:fails to|does not|doesn't|omits|neglects to|lacks|misses)\s+(.+)$",
    re.I | re.S,
)
_SEEK = re.compile(
    r"\b(?:seek\w*|ask\w*|inquir\w*|enquir\w*|request\w*|elicit\w*)\b[^.?]{0,60}?"
    r"\b(?:context|information|questions?|details|clarification)\b"
    r"|\bfollow[- ]up questions?\b|\bclarif(?:y|ies|ying)\b",
    re.I,
)
_ASKS_ABOUT = re.compile(r"^(?:the response\s+)?(?:asks|inquires|enquires)\b\s*(.*)$", re.I | re.S)
# answering the user: an answering verb with what the user asked as its object, or (in a long,
# consensus-style criterion) a quality of the answer as a whole
_ANSWER = re.compile(
    r"\b(?:answer\w*|address\w*|respond\w* to)\b[^.]{0,40}?"
    r"\b(?:user|question|query|request|concern|situation|message|task)",
    re.I,
)
_ANSWER_QUALITY = re.compile(r"\b(?:helpful|useful|precise|unhelpful)\b", re.I)
_JUDGEMENT = re.compile(
    r"\b(?:factual\w*|accura\w*|incorrect|correct(?:ly|ness)?|consensus|hedg\w*|"
    r"uncertain\w*|tailor\w*|language|understandab\w*|jargon|alarm\w*|empath\w*|tone|"
    r"appropriate\w*)\b",
    re.I,
)
_REFERRAL = re.compile(
    r"\b(?:refer\w*|seek\w* (?:\w+ ){0,2}(?:care|help|attention|evaluation|treatment)|"
    r"(?:see|seeing|visit\w*|contact\w*|call\w*|go\w* to|book\w*) (?:\w+ ){0,3}?"
    r"(?:doctors?|physicians?|providers?|professionals?|specialists?|clinicians?|GPs?|"
    r"clinics?|hospitals?|dermatologists?|pediatricians?|therapists?)|"
    r"consult\w*|emergency (?:services|care|department|room)|call \d{3}|in-person care|"
    r"(?:mental )?health(?: ?care)? (?:provider|professional)|urgent care|primary care)\b",
    re.I,
)
_EMERGENT = re.compile(r"\b(?:emergenc\w*|911|999|112|urgent\w*|immediate\w*|ambulance)\b", re.I)
_SECTION = re.compile(
    r"\b(?:has|includes|contains|gives) an? ([A-Za-z][A-Za-z ]{1,28}?) section\b", re.I
)
_AT_MOST = re.compile(
    r"\bthe ([A-Za-z][A-Za-z ]{1,28}?) section (?:is|has) at most (\d+) (sentences?|words?)\b", re.I
)
_FORMAT = re.compile(r"\b(?:formatt\w*|bullet\w*|headings?|numbered|markdown|table)\b", re.I)
# conciseness asked of the response itself, not of something in it ("a brief list of ...")
_CONCISE = re.compile(
    r"\b(?:is|be|stays?|keeps?(?: it)?|remains?)\s+(?:\w+\s+){0,2}?(?:concise|brief|succinct|"
    r"short)\b|\b(?:concise|brief|succinct|short)\s+(?:response|answer|reply)\b",
    re.I,
)
_VERBOSE = re.compile(r"\b(?:verbos\w*|lengthy|too long|overly long|wordy)\b", re.I)
_CONTENT = re.compile(  # a content criterion's verb, when the criterion says more after it
    r"^(?:the response\s+)?(?:mentions?|recommends?|advises?|explains?|includes?|states?|"
    r"suggests?|describes?|lists?|warns?|notes?|tells?|encourages?|emphasi[sz]es?|provides?|"
    r"discusses|identifies|informs?|reminds?|offers?|gives?|specifies|clarifies|counsels?)\b",
    re.I,
)
MAX_CONTENT_WORDS = 40  # longer criteria hold several requirements: a similarity cannot say


def core(text: str) -> str:
    """The criterion without its justification."""
    return _JUSTIFICATION.sub("", text).strip()


def requirements(text: str) -> list[tuple[str, bool]]:
    """Each directing sentence, with whether it asks for what it names (False where the
    sentence after it fails the response on "yes"); pass/fail instructions themselves are
    not requirements. None directing: the whole text, as asked."""
    parts = [p.strip() for p in _SENTENCE.split(text) if p.strip()]
    found = []
    for i, part in enumerate(parts):
        if not _DIRECTIVE.search(part) or _INSTRUCTION.match(part):
            continue
        after = parts[i + 1] if i + 1 < len(parts) else ""
        yes_fails = bool(_FAIL_ON_YES.search(part) or _FAIL_ON_YES.search(after[:40]))
        found.append((part, not yes_fails))
    return found or [(text, True)]


def read_criterion(text: str) -> Reading:
    """What a criterion asks for, and whether a rule covers it."""
    text = core(text)
    inverted = _INVERTED.match(text)
    if inverted:
        return read_criterion(inverted.group(1)).inverted()
    (first, wanted), *rest = requirements(text)
    reading = _read(first, text, wanted)
    if reading.kind is Kind.JUDGEMENT:
        return reading
    # several steps: the rule covers the first, unless every step asks the same
    if _STEP.search(text) and any(_read(p, p, w).kind != reading.kind for p, w in rest):
        return Reading(reading.kind, reading.wanted, reading.target, partial=True)
    return reading


def _read(first: str, whole: str, wanted: bool) -> Reading:
    short = len(first.split()) <= MAX_CONTENT_WORDS
    # either X or Y, or the user's language: not a rule's to weigh (a short criterion is read
    # whole for it; a long one's preamble says nothing of it)
    if _CHOICE.search(whole if len(whole.split()) <= 2 * MAX_CONTENT_WORDS else first):
        return Reading(Kind.JUDGEMENT)
    asks_about = _ASKS_ABOUT.match(first)
    if asks_about and short and not _SEEK.search(first):
        return Reading(Kind.SEEK_ABOUT, wanted, asks_about.group(1))
    if _SEEK.search(first):
        return Reading(Kind.SEEK, wanted)
    long = len(whole.split()) > MAX_CONTENT_WORDS
    if _ANSWER.search(first) or (long and _ANSWER_QUALITY.search(first)):
        return Reading(Kind.ANSWER, wanted)
    section = _SECTION.search(first)
    if section:
        return Reading(Kind.SECTION, wanted, section.group(1))
    at_most = _AT_MOST.search(first)
    if at_most:
        return Reading(Kind.AT_MOST, wanted, "|".join(at_most.groups()))
    if _JUDGEMENT.search(first) or not short:
        return Reading(Kind.JUDGEMENT)
    if _REFERRAL.search(first):
        return Reading(Kind.REFERRAL, wanted, "emergency" if _EMERGENT.search(first) else "")
    if _VERBOSE.search(first):
        return Reading(Kind.VERBOSE, wanted)
    if _CONCISE.search(first):
        return Reading(Kind.CONCISE, wanted)
    if _FORMAT.search(first):
        return Reading(Kind.FORMAT, wanted)
    if first is whole or _CONTENT.match(first):
        return Reading(Kind.CONTENT, wanted, first)
    return Reading(Kind.JUDGEMENT)
