"""Dynamic rubrics for reports: criteria generated from a study's structured findings (what the
perception step saw), graded against a report with the verifier's reading of radiology text
(``medxiaohe.radiology``: concept, assertion, side, location, severity, change). The reward the
RL stage uses for reports.

For each finding (its words read as the verifier reads a report: "small left lower lobe
opacity" is an opacity, mild, left, lower zone):

* present: "Mentions <finding>" (+5), met by a statement of it (or a kin concept) as present
  (or hedged, when the finding is uncertain) not placed elsewhere; when the finding states them,
  "Does not state the wrong side for <finding>" (-5), "... the wrong location ..." (-5) and
  "Does not misstate the severity of <finding>" (-3), met (a penalty) by a statement of it that
  disagrees on that attribute while none agrees;
* absent: "States no <finding>" (+3), met by a sentence that denies it (itself, or a normal
  statement that covers it: "lungs are clear" denies an opacity); "Does not claim <finding>"
  (-5), met (a penalty) by a statement of it as present;

and for the report: "Reports no observation beyond the findings" (+3), not met when the verifier
finds an addition against the findings; "Hedges only where a finding is uncertain" (+3);
"Recommends nothing without a supporting finding" (+3), not met when the report recommends
(follow-up, further imaging, correlation) while no finding is present or uncertain.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.radiology.reading import Finding as Read
from medxiaohe.radiology.verification import (
    ADDITION,
    LATERALITY,
    LOCATION,
    SEVERITY,
    Source,
    Verifier,
    findings_text,
)
from medxiaohe.radiology.vocabulary import GROUP
from medxiaohe.rubric.rubrics import Criterion, Rubric, content_version
from medxiaohe.rubric.scoring import Verdict

NAME = "dynamic"
ASSERTIONS = ("present", "absent", "uncertain")
_SIDE = re.compile(r"\b(left|right|bilateral|both)\b", re.I)
_RECOMMENDS = re.compile(
    r"\b(?:recommend|suggest|advise|consider|follow-up|follow up|further (?:imaging|evaluation)|"
    r"correlat)",
    re.I,
)
_PLACES = ("zone", "depth", "plane")


@dataclass(frozen=True)
class Finding:
    """What the perception step reports about one observation."""

    text: str  # e.g. "small left lower lobe opacity"
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
    finding: int | None  # the finding's position; None: a check of the whole report
    wants: str  # mentioned, negated, asserted, side, location, severity, beyond, hedging, ...


@dataclass(frozen=True)
class DynamicRubric:
    rubric: Rubric
    checks: dict[str, Check]  # criterion id -> what decides it
    findings: tuple[Finding, ...] = ()


def _subject(finding: Finding) -> str:
    """The finding without its side (the side is checked on its own)."""
    return " ".join(_SIDE.sub("", finding.text).split()) or finding.text


def _read(findings: Sequence[Finding], verifier: Verifier) -> tuple[Source, list[list[Read]]]:
    """The findings as a source, and each finding's statements in it."""
    text, spans = findings_text(findings)
    source = verifier.source(text)
    per = [[f for f in source.findings if lo <= f.start < hi] for lo, hi in spans]
    return source, per


def rubric_for(findings: Sequence[Finding], verifier: Verifier | None = None) -> DynamicRubric:
    if not findings:
        raise InvalidInput("findings give no criterion to score: send at least one")
    verifier = verifier or Verifier()
    _, per = _read(findings, verifier)
    criteria: list[Criterion] = []
    checks: dict[str, Check] = {}

    def add(text: str, points: int, check: Check) -> None:
        kind = findings[check.finding].assertion if check.finding is not None else "report"
        criterion = Criterion(text, points, ("level:dynamic", f"finding:{kind}"))
        if criterion.id not in checks:
            criteria.append(criterion)
            checks[criterion.id] = check

    present = {f.concept for i, x in enumerate(findings) if x.assertion != "absent" for f in per[i]}
    for i, finding in enumerate(findings):
        read = per[i]
        if finding.assertion == "absent":
            if read and all(f.concept in present for f in read):
                continue  # absent on one side, present on the other: the present one is checked
            add(f"States no {finding.text}", 3, Check(i, "negated"))
            add(f"Does not claim {finding.text}", -5, Check(i, "asserted"))
            continue
        add(f"Mentions {finding.text}", 5, Check(i, "mentioned"))
        subject = _subject(finding)
        if any(f.get("laterality") for f in read):
            add(f"Does not state the wrong side for {subject}", -5, Check(i, "side"))
        if any(f.get(a) for f in read for a in _PLACES):
            add(f"Does not state the wrong location for {subject}", -5, Check(i, "location"))
        if any(f.get("severity") or f.size_mm is not None for f in read):
            add(f"Does not misstate the severity of {subject}", -3, Check(i, "severity"))
    add("Reports no observation beyond the findings", 3, Check(None, "beyond"))
    add("Hedges only where a finding is uncertain", 3, Check(None, "hedging"))
    add("Recommends nothing without a supporting finding", 3, Check(None, "recommendation"))
    rubric = Rubric(tuple(criteria), set_id=NAME, version=content_version(criteria))
    return DynamicRubric(rubric, checks, tuple(findings))


class FindingGrader:
    """Grades a report against a dynamic rubric with the verifier's reading (the tree tagger
    adds concepts the radiology vocabulary does not name)."""

    name = NAME

    def __init__(self, tagger: Any = None) -> None:
        self.verifier = Verifier(tagger=tagger)

    def grade(self, report: str, dynamic: DynamicRubric) -> list[Verdict]:
        verifier, vocab = self.verifier, self.verifier.vocab
        source, per = _read(dynamic.findings, verifier)
        sentences = verifier.reader.read(report)
        stated = [f for s in sentences for f in s.findings]
        # each positive statement belongs to the findings of its concept (else of a kin one)
        # it disagrees with least
        assigned: dict[int, list[Read]] = {i: [] for i in range(len(per))}
        for f in (f for f in stated if f.positive and f.kind != GROUP):
            scored = [
                (min(len(verifier.disagreements(f, g, source)) for g in same), i)
                for i in range(len(per))
                if (same := [g for g in per[i] if g.concept == f.concept])
            ] or [
                (min(len(verifier.disagreements(f, g, source)) for g in kin), i)
                for i in range(len(per))
                if (kin := [g for g in per[i] if vocab.kin(f.concept, g.concept)])
            ]
            if scored:
                fewest = min(n for n, _ in scored)
                for n, i in scored:
                    if n == fewest:
                        assigned[i].append(f)

        def wrong(i: int, kinds: tuple[str, ...]) -> tuple[bool, str]:
            """(a statement of the finding disagrees on ``kinds``, why)."""
            for f in assigned[i]:
                found = [
                    reason
                    for g in per[i]
                    if vocab.kin(f.concept, g.concept)
                    for kind, reason in verifier.disagreements(f, g, source)
                    if kind in kinds
                ]
                if found:
                    return True, found[0]
            return False, "states it as the findings do" if assigned[i] else "does not state it"

        verdicts = []
        for criterion in dynamic.rubric.criteria:
            check = dynamic.checks[criterion.id]
            index = check.finding
            if index is None:
                met, why = self._report_check(check.wants, report, sentences, source, dynamic, per)
            elif check.wants == "mentioned":
                hedged = dynamic.findings[index].assertion == "uncertain"
                found = [
                    f
                    for f in assigned[index]
                    if (hedged or f.assertion == "present")
                    and any(_placed_alike(f, g) for g in per[index])
                ]
                met, why = bool(found), "mentioned as found" if found else "not mentioned as found"
            elif check.wants == "negated":
                lineage = {c for g in per[index] for c in vocab.ancestors(g.concept)}
                denied = [
                    f
                    for f in stated
                    if not f.positive
                    and (
                        any(vocab.kin(f.concept, g.concept) for g in per[index])
                        or (f.kind == GROUP and lineage & vocab.concepts[f.concept].members)
                    )
                ]
                met, why = (
                    bool(denied),
                    "a sentence denies it" if denied else "no sentence denies it",
                )
            elif check.wants == "asserted":
                claimed = [
                    f
                    for f in stated
                    if f.positive and any(vocab.kin(f.concept, g.concept) for g in per[index])
                ]
                met = bool(claimed)
                why = "a sentence asserts it" if claimed else "no sentence asserts it"
            elif check.wants == "side":
                met, why = wrong(index, (LATERALITY,))
            elif check.wants == "location":
                met, why = wrong(index, (LOCATION,))
            else:
                met, why = wrong(index, (SEVERITY,))
            verdicts.append(Verdict(criterion.id, met, why, NAME))
        return verdicts

    def _report_check(
        self,
        wants: str,
        report: str,
        sentences: Sequence[Any],
        source: Source,
        dynamic: DynamicRubric,
        per: list[list[Read]],
    ) -> tuple[bool, str]:
        if wants == "beyond":
            for sentence in sentences:
                verdict = self.verifier.sentence(sentence, source)
                if verdict.kind == ADDITION:
                    return False, f"states what the findings do not: {verdict.text}"
            return True, "states only the findings"
        if wants == "hedging":
            vocab = self.verifier.vocab
            for i, finding in enumerate(dynamic.findings):
                if finding.assertion == "uncertain":
                    continue
                for sentence in sentences:
                    for f in sentence.findings:
                        if f.assertion == "uncertain" and any(
                            vocab.kin(f.concept, g.concept) for g in per[i]
                        ):
                            return False, f"hedges a certain finding: {finding.text}"
            return True, "hedges no certain finding"
        if any(f.assertion != "absent" for f in dynamic.findings):
            return True, "there is a finding to recommend on"
        if _RECOMMENDS.search(report):
            return False, "recommends while nothing was found"
        return True, "recommends nothing"


def _placed_alike(f: Read, g: Read) -> bool:
    """Not stated on another side or at another place."""
    sides, theirs = f.get("laterality"), g.get("laterality")
    if sides and theirs and not sides & theirs:
        return False
    return not any(f.get(a) and g.get(a) and not f.get(a) & g.get(a) for a in _PLACES)
