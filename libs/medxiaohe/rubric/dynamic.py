"""Dynamic rubrics for reports: criteria generated from a study's structured findings (what the
perception step saw), graded deterministically against a report's sentences with the Medical
Entity Tree tagger, ConText assertions and laterality. The reward the RL stage uses for reports.

For each finding:

* present: "Mentions <finding>" (+5), met by a sentence that mentions it as present (or
  uncertain, when the finding is uncertain) on the same side; "Does not state the wrong side for
  <finding>" (-5) when it has a side;
* absent: "States no <finding>" (+3), met by a sentence that negates it; "Does not claim
  <finding>" (-5), met (a penalty) by a sentence that asserts it;

and for the report: "Reports no observation beyond the findings" (+3), not met when a sentence
asserts an observation the study's findings do not have; "Hedges only where a finding is
uncertain" (+3), not met when a sentence hedges a finding the perception step was sure of;
"Recommends nothing without a supporting finding" (+3), not met when the report recommends
(follow-up, further imaging, correlation) while no finding is present or uncertain.

Sentences are read as claims (``medxiaohe.report.claims``: observation, ConText assertion,
side); a finding names an observation the same way.

A finding is matched to a sentence by its tree entities when the tagger finds some in the
finding's text, else by the finding's words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.report.claims import Claim, claims
from medxiaohe.rubric.deterministic import sentences
from medxiaohe.rubric.rubrics import Criterion, Rubric
from medxiaohe.rubric.scoring import Verdict

NAME = "dynamic"
ASSERTIONS = ("present", "absent", "uncertain")
_SIDE = re.compile(r"\b(left|right|bilateral|both)\b", re.I)
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

    present = {_concept(f) for f in findings if f.assertion != "absent"}
    for finding in findings:
        if finding.assertion == "absent" and _concept(finding) in present:
            continue  # absent on one side, present on the other: the present one is checked
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
    add("Reports no observation beyond the findings", 3, Check(None, "beyond"))
    add("Hedges only where a finding is uncertain", 3, Check(None, "hedging"))
    add("Recommends nothing without a supporting finding", 3, Check(None, "recommendation"))
    return DynamicRubric(Rubric(tuple(criteria), set_id="dynamic"), checks)


@dataclass(frozen=True)
class _Said:
    """One way a report's sentence speaks of a finding."""

    assertion: str  # present, negated, uncertain
    side: str


class FindingGrader:
    """Grades a report against a dynamic rubric: each sentence is read as claims once (the
    chest X-ray lexicon, and tree entities when a ``tagger`` is given), and each finding's
    observation is looked up among them."""

    name = NAME

    def __init__(self, tagger: Any = None) -> None:
        self.tagger = tagger

    def grade(self, report: str, dynamic: DynamicRubric) -> list[Verdict]:
        units = sentences(report)
        per_unit = [claims(unit, self.tagger) for unit in units]
        findings = [c.finding for c in dynamic.checks.values() if c.finding is not None]
        concepts = {f: _concept(f, self.tagger) for f in findings}

        def said(finding: Finding) -> list[_Said]:
            """How each sentence that names the finding's observation speaks of it (its first
            claim of it)."""
            out = []
            for found in per_unit:
                claim = next((c for c in found if c.concept == concepts[finding]), None)
                if claim is not None:
                    out.append(_Said(claim.assertion, claim.side))
            return out

        verdicts = []
        for criterion in dynamic.rubric.criteria:
            check = dynamic.checks[criterion.id]
            if check.finding is None:
                met, why = _report_check(check.wants, units, per_unit, findings, concepts, said)
            else:
                met, why = _decide(check, said(check.finding))
            verdicts.append(Verdict(criterion.id, met, why, NAME))
        return verdicts


def _report_check(
    wants: str,
    units: list[str],
    per_unit: list[list[Claim]],
    findings: list[Finding],
    concepts: dict[Finding, str],
    said: Callable[[Finding], list[_Said]],
) -> tuple[bool, str]:
    if wants == "beyond":
        known = set(concepts.values())
        for found in per_unit:
            for claim in found:
                if claim.assertion != "negated" and claim.concept not in known:
                    return False, f"asserts {claim.concept}, which the findings do not have"
        return True, "asserts only the findings"
    if wants == "hedging":
        for finding in findings:
            if finding.assertion != "uncertain" and any(
                s.assertion == "uncertain" for s in said(finding)
            ):
                return False, f"hedges a certain finding: {finding.text}"
        return True, "hedges no certain finding"
    if any(f.assertion != "absent" for f in findings):
        return True, "there is a finding to recommend on"
    if any(_RECOMMENDS.search(unit) for unit in units):
        return False, "recommends while nothing was found"
    return True, "recommends nothing"


def _concept(finding: Finding, tagger: Any = None) -> str:
    """The observation a finding names: its first claim's concept, else its own words."""
    found = claims(_subject(finding), tagger)
    return found[0].concept if found else _subject(finding).lower()


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
