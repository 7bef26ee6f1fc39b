"""The verifier agent: every sentence of the rendered report checked against the perception
findings and the evidence it cites; the policy decides what reaches the final text (flagged
sentences stay, or are removed), the verdicts always do; positive findings the final text
leaves out are omissions."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from medxiaohe.report.claims import Claim, claims
from medxiaohe.report.model import Finding, Omission, Section
from medxiaohe.report.verifier import NOT_CHECKED, SUPPORTED, SentenceVerdict, verify_sentence

if TYPE_CHECKING:
    from medxiaohe.report.pipeline import ReportState

POLICIES = ("flag", "remove")
_ASSERTED = {"present": "present", "absent": "negated", "uncertain": "uncertain"}


def finding_claims(finding: Finding, tagger: Any = None) -> list[Claim]:
    """A finding's claims, asserted and sided as the finding says (a present finding keeps what
    its own words assert: "heart size normal" states the absence of cardiomegaly)."""
    found = claims(finding.text, tagger)
    if finding.assertion != "present":
        found = [replace(c, assertion=_ASSERTED[finding.assertion]) for c in found]
    return [replace(c, side=finding.laterality or c.side) for c in found]


def check(state: ReportState) -> ReportState:
    tagger = state.deps.tagger
    by_finding = {f.id: finding_claims(f, tagger) for f in state.findings}
    source = [c for found in by_finding.values() for c in found]
    checked: list[SentenceVerdict] = []
    mentioned: set[str] = set()
    kept_ids: set[str] = set()
    with state.trace.step("verifier", "verification", parents=(state.style_step,)) as step:
        for position, section in enumerate(state.sections):
            sentences = []
            for sentence in section.sentences:
                quoted = [
                    c for i in sentence.citations for c in claims(state.citations[i].quote, tagger)
                ]
                verdict, found = verify_sentence(
                    len(checked), sentence.text, source + quoted, tagger
                )
                drop = state.request.policy == "remove" and verdict.verdict not in (
                    SUPPORTED,
                    NOT_CHECKED,
                )
                if not drop:
                    mentioned.update(c.concept for c in found)
                    kept_ids.update(sentence.finding_ids)
                checked.append(verdict)
                sentences.append(
                    replace(
                        sentence, verdict=verdict.verdict, reasons=verdict.reasons, removed=drop
                    )
                )
            state.sections[position] = Section(section.name, tuple(sentences))
        for finding in state.findings:
            concepts = {c.concept for c in by_finding[finding.id]}
            if (
                finding.assertion == "present"
                and finding.id not in kept_ids
                and not concepts & mentioned
            ):
                state.omissions.append(
                    Omission(finding.id, finding.text, state.perception_step, finding.region)
                )
        counts = {v: sum(c.verdict == v for c in checked) for v in {c.verdict for c in checked}}
        removed = sum(s.removed for section in state.sections for s in section.sentences)
        step.result = {
            "verdicts": [
                {"sentence": c.sentence, "verdict": c.verdict, "reasons": list(c.reasons)}
                for c in checked
            ],
            "omissions": [o.finding_id for o in state.omissions],
            "policy": state.request.policy,
        }
        step.content = (
            ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
            + f"; {len(state.omissions)} omissions; {removed} removed"
        )
        step.regions = tuple(o.region for o in state.omissions if o.region is not None)
    state.count("check", kept=len(checked) - removed, dropped=removed)
    return state
