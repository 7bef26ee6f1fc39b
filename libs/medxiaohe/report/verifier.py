"""The verifier: every sentence of a report checked, claim by claim, against a source of truth
(the perception step's findings, or a reference report), and the source's findings that the
report leaves out.

Verdicts per sentence: supported; unsupported addition (an observation the source does not
have); contradiction, negation (the source asserts what the sentence negates, or the reverse) or
laterality (the other side); not checked (no claim in it). Omissions: observations the source
asserts as present that no sentence mentions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.report.claims import Claim, claims

SUPPORTED = "supported"
ADDITION = "addition"
NEGATION = "negation"
LATERALITY = "laterality"
NOT_CHECKED = "not_checked"
SEVERITY = (NOT_CHECKED, SUPPORTED, LATERALITY, NEGATION, ADDITION)  # worst last


@dataclass(frozen=True)
class SentenceVerdict:
    index: int
    sentence: str
    verdict: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verification:
    sentences: tuple[SentenceVerdict, ...]
    omissions: tuple[str, ...]  # concepts the source asserts and the report does not mention

    def flagged(self) -> list[SentenceVerdict]:
        return [s for s in self.sentences if s.verdict not in (SUPPORTED, NOT_CHECKED)]


def positive(assertion: str) -> bool:
    """Present or uncertain: the report asserts the observation (possibly hedged)."""
    return assertion in ("present", "uncertain")


def check_claim(claim: Claim, source: Sequence[Claim]) -> tuple[str, str]:
    """(verdict, reason) of one claim against the source's claims."""
    same = [s for s in source if s.concept == claim.concept]
    if not same:
        if positive(claim.assertion):
            return ADDITION, f"{claim.concept}: not in the source"
        return SUPPORTED, f"{claim.concept}: absent, and the source does not report it"
    if not any(positive(s.assertion) == positive(claim.assertion) for s in same):
        return NEGATION, f"{claim.concept}: the source says {same[0].assertion}"
    sided = [s.side for s in same if s.side and positive(s.assertion) == positive(claim.assertion)]
    if claim.side and sided and claim.side not in sided and claim.side != "bilateral":
        return LATERALITY, f"{claim.concept}: the source says {sided[0]}"
    return SUPPORTED, f"{claim.concept}: in the source"


def verify_sentence(
    index: int, sentence: str, source: Sequence[Claim], tagger: Any = None
) -> tuple[SentenceVerdict, list[Claim]]:
    """The sentence's verdict (its worst claim's) and its claims."""
    found = claims(sentence, tagger)
    if not found:
        return SentenceVerdict(index, sentence, NOT_CHECKED), found
    checked = [check_claim(c, source) for c in found]
    worst = max((v for v, _ in checked), key=SEVERITY.index)
    reasons = tuple(r for v, r in checked if v == worst)
    return SentenceVerdict(index, sentence, worst, reasons), found


def verify(sentences: Sequence[str], source: Sequence[Claim], tagger: Any = None) -> Verification:
    verdicts = []
    mentioned: set[str] = set()
    for index, sentence in enumerate(sentences):
        verdict, found = verify_sentence(index, sentence, source, tagger)
        verdicts.append(verdict)
        mentioned.update(c.concept for c in found)
    omitted = sorted({s.concept for s in source if s.assertion == "present"} - mentioned)
    return Verification(tuple(verdicts), tuple(omitted))
