"""Dynamic rubrics for reports: criteria generated from a study's structured findings (what the
perception step saw), graded deterministically against a report's sentences with the Medical
Entity Tree tagger, ConText assertions and laterality. The reward the RL stage uses for reports.

For each finding:

* present: "Mentions <finding>" (+5), met by a sentence that mentions it as present (or
  uncertain, when the finding is uncertain) on the same side; "Does not state the wrong side for
  <finding>" (-5) when it has a side;
* absent: "States no <finding>" (+3), met by a sentence that negates it; "Does not claim
  <finding>" (-5), met (a penalty) by a sentence that asserts it;

and for the report: "Hedges only where a finding is uncertain" (+3), not met when a sentence
hedges a finding the perception step was sure of; "Recommends nothing without a supporting
finding" (+3), not met when a sentence recommends (follow-up, further imaging, correlation)
without naming any finding that was present or uncertain.

A finding is matched to a sentence by its tree entities when the tagger finds some in the
finding's text, else by the finding's words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.rubric.deterministic import sentences
from medxiaohe.rubric.rubrics import Criterion, Rubric
from medxiaohe.rubric.scoring import Verdict

NAME = "dynamic"
ASSERTIONS = ("present", "absent", "uncertain")
_SIDES = {"left": "left", "right": "right", "bilateral": "bilateral", "both": "bilateral"}
_SIDE = re.compile(r"\b(left|right|bilateral|both)\b", re.I)
_NEGATED = re.compile(r"\b(?:no|not|without|negative for|free of|absent|resolved)\b", re.I)
_STOPWORDS = frozenset(
    ["a", "an", "the", "of", "in", "on", "at", "with", "and", "or", "is", "are", "there"]
)
_RECOMMENDS = re.compile(
    r"\b(?:recommend|suggest|advise|consider|follow-up|follow up|further (?:imaging|evaluation)|"
    r"correlat)",
    re.I,
)


@dataclass(frozen=True)
class Finding:
    """What the perception step reports about one observation."""

    text: str  # e.g. "left lower lobe opacity"
    assertion: str = "present"  # present, absent or uncertain
    laterality: str = ""  # left, right, bilateral or ""
    site: str = ""

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise InvalidInput("a finding needs text")
        if self.assertion not in ASSERTIONS:
            raise InvalidInput(f"a finding's assertion is one of {', '.join(ASSERTIONS)}")
        if self.laterality and self.laterality not in ("left", "right", "bilateral"):
            raise InvalidInput("a finding's laterality is left, right, bilateral or empty")


@dataclass(frozen=True)
class Check:
    finding: Finding | None  # None: a check of the whole report
    wants: str  # "mentioned", "negated", "asserted", "wrong_side", "hedging", "recommendation"


@dataclass(frozen=True)
class DynamicRubric:
    rubric: Rubric
    checks: dict[str, Check]  # criterion id -> what decides it


def _subject(finding: Finding) -> str:
    """The finding without its side (the side is checked on its own)."""
    return _SIDE.sub("", finding.text).strip() or finding.text


def rubric_for(findings: Sequence[Finding]) -> DynamicRubric:
    criteria: list[Criterion] = []
    checks: dict[str, Check] = {}

    def add(text: str, points: int, check: Check) -> None:
        kind = check.finding.assertion if check.finding else "report"
        criterion = Criterion(text, points, ("level:dynamic", f"finding:{kind}"))
        if criterion.id not in checks:
            criteria.append(criterion)
            checks[criterion.id] = check

    for finding in findings:
        if finding.assertion == "absent":
            add(f"States no {finding.text}", 3, Check(finding, "negated"))
            add(f"Does not claim {finding.text}", -5, Check(finding, "asserted"))
            continue
        add(f"Mentions {finding.text}", 5, Check(finding, "mentioned"))
        if finding.laterality:
            add(
                f"Does not state the wrong side for {_subject(finding)}",
                -5,
                Check(finding, "wrong_side"),
            )
    if not findings:
        raise InvalidInput("findings give no criterion to score: send at least one")
    add("Hedges only where a finding is uncertain", 3, Check(None, "hedging"))
    add("Recommends nothing without a supporting finding", 3, Check(None, "recommendation"))
    return DynamicRubric(Rubric(tuple(criteria), set_id="dynamic"), checks)


@dataclass(frozen=True)
class _Said:
    """One way a report's sentence speaks of a finding."""

    assertion: str  # present, negated, uncertain
    side: str


class FindingGrader:
    """Grades a report against a dynamic rubric. ``tagger`` (a DictionaryTagger) matches findings
    to sentences by tree entities with their ConText assertions; without one, by words."""

    name = NAME

    def __init__(self, tagger: Any = None) -> None:
        self.tagger = tagger

    def grade(self, report: str, dynamic: DynamicRubric) -> list[Verdict]:
        units = sentences(report)
        findings = [c.finding for c in dynamic.checks.values() if c.finding is not None]
        verdicts = []
        for criterion in dynamic.rubric.criteria:
            check = dynamic.checks[criterion.id]
            if check.finding is None:
                met, why = self._report_check(check.wants, units, findings)
            else:
                said = [s for unit in units if (s := self._said(unit, check.finding))]
                met, why = _decide(check, said)
            verdicts.append(Verdict(criterion.id, met, why, NAME))
        return verdicts

    def _report_check(
        self, wants: str, units: list[str], findings: list[Finding]
    ) -> tuple[bool, str]:
        if wants == "hedging":
            for finding in findings:
                if finding.assertion == "uncertain":
                    continue
                for unit in units:
                    said = self._said(unit, finding)
                    if said and said.assertion == "uncertain":
                        return False, f"hedges a certain finding: {finding.text}"
            return True, "hedges no certain finding"
        supported = [f for f in findings if f.assertion != "absent"]
        for unit in units:
            if _RECOMMENDS.search(unit) and not any(self._said(unit, f) for f in supported):
                return False, "a recommendation names no finding"
        return True, "every recommendation names a finding"

    def _said(self, sentence: str, finding: Finding) -> _Said | None:
        side_found = _SIDE.search(sentence)
        side = _SIDES[side_found.group(1).lower()] if side_found else ""
        wanted = self._entities(_subject(finding))
        if wanted:
            mentions = [m for m in self.tagger.tag(sentence) if m.node_id in wanted]
            if not mentions:
                return None
            assertion = str(mentions[0].assertion.value)
            return _Said("negated" if assertion == "negated" else assertion, side)
        words = {w for w in re.findall(r"[a-z]+", _subject(finding).lower()) if w not in _STOPWORDS}
        have = set(re.findall(r"[a-z]+", sentence.lower()))
        if not words or len(words & have) < max(1, (2 * len(words) + 2) // 3):
            return None
        return _Said("negated" if _NEGATED.search(sentence) else "present", side)

    def _entities(self, text: str) -> frozenset[str]:
        if self.tagger is None:
            return frozenset()
        return frozenset(m.node_id for m in self.tagger.tag(text, assertions=False))


def _decide(check: Check, said: list[_Said]) -> tuple[bool, str]:
    finding = check.finding
    assert finding is not None  # report-level checks are decided elsewhere
    positive = [s for s in said if s.assertion in ("present", "uncertain", "historical")]
    if check.wants == "negated":
        found = any(s.assertion == "negated" for s in said)
        return found, "a sentence negates it" if found else "no sentence negates it"
    if check.wants == "asserted":
        return bool(positive), "a sentence asserts it" if positive else "no sentence asserts it"
    if check.wants == "wrong_side":
        wrong = [s for s in positive if s.side and s.side != finding.laterality]
        return bool(wrong), f"stated on the {wrong[0].side}" if wrong else "no wrong side"
    wanted = ("uncertain", "present") if finding.assertion == "uncertain" else ("present",)
    right = [
        s
        for s in positive
        if s.assertion in wanted and (not finding.laterality or s.side in ("", finding.laterality))
    ]
    return bool(right), "mentioned as found" if right else "not mentioned as found"
