"""The verifier agent: every sentence of the rendered report checked, with the verifier that
``medxiaohe verify`` runs (``medxiaohe.radiology.verification``), against the perception
findings written out as sentences and the evidence the sentence cites; the policy decides what
reaches the final text (flagged sentences stay, or are removed), the verdicts always do;
positive findings the final text leaves out are omissions."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from medxiaohe.radiology.verification import (
    NOT_CHECKED,
    SUPPORTED,
    SentenceVerdict,
    Verifier,
    findings_text,
)
from medxiaohe.report.model import Omission, Section

if TYPE_CHECKING:
    from medxiaohe.report.state import ReportState


def _verdict(checked: SentenceVerdict) -> str:
    """The report model's verdict: supported, not_checked, or the flagged kind."""
    return checked.kind or checked.verdict


def check(state: ReportState) -> ReportState:
    verifier = Verifier(tagger=state.deps.tagger)
    written, spans = findings_text(state.findings)
    findings_source = verifier.source(written)
    checked: list[SentenceVerdict] = []
    kept: list[SentenceVerdict] = []
    kept_ids: set[str] = set()
    with state.trace.step("verifier", "verification", parents=(state.style_step,)) as step:
        for position, section in enumerate(state.sections):
            sentences = []
            for sentence in section.sentences:
                quotes = " ".join(state.citations[i].quote for i in sentence.citations)
                source = verifier.source(f"{written}\n{quotes}") if quotes else findings_source
                verdict = verifier.check_text(sentence.text, source)
                drop = state.request.policy == "remove" and verdict.verdict not in (
                    SUPPORTED,
                    NOT_CHECKED,
                )
                if not drop:
                    kept.append(verdict)
                    kept_ids.update(sentence.finding_ids)
                checked.append(verdict)
                sentences.append(
                    replace(
                        sentence,
                        verdict=_verdict(verdict),
                        reasons=verdict.reasons if verdict.flagged else (),
                        removed=drop,
                    )
                )
            state.sections[position] = Section(section.name, tuple(sentences))
        omitted = verifier.omissions(findings_source, kept, written)
        for finding, (start, end) in zip(state.findings, spans, strict=True):
            if finding.id in kept_ids or finding.assertion != "present":
                continue
            if any(start <= o.start < end for o in omitted):
                state.omissions.append(
                    Omission(finding.id, finding.text, state.perception_step, finding.region)
                )
        counts: dict[str, int] = {}
        for verdict in checked:
            counts[_verdict(verdict)] = counts.get(_verdict(verdict), 0) + 1
        removed = sum(s.removed for section in state.sections for s in section.sentences)
        step.result = {
            "verdicts": [
                {
                    "sentence": c.text,
                    "verdict": c.verdict,
                    "kind": c.kind,
                    "reasons": list(c.reasons),
                }
                for c in checked
            ],
            "omissions": [o.finding_id for o in state.omissions],
            "policy": state.request.policy,
            "vocabulary": verifier.vocab.version,
        }
        step.content = (
            ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
            + f"; {len(state.omissions)} omissions; {removed} removed"
        )
        step.regions = tuple(o.region for o in state.omissions if o.region is not None)
    state.count("check", kept=len(checked) - removed, dropped=removed)
    return state
