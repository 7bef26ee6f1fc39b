"""A clinician's review of a generated report: sentences edited, flagged ones accepted or removed,
and a signature that records who signed, when, and every change. The report as the machine wrote
it stays as it was; ``report.store`` keeps each signed review as a new version beside it, and the
export reads the latest from then on: ``final``, the signer as results interpreter and as the
Provenance's attester."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.report.model import Report, Section, Sentence

# The permission (in the report service's allow list) to review and sign any report; "*" does
# not include it: a caller is named a reviewer.
REVIEW = "ReviewReports"
ACTIONS = ("edit", "accept", "remove")
MAX_SENTENCE_CHARS = 2000
MAX_CHANGES = 500


@dataclass(frozen=True)
class Change:
    """One decision on one sentence (its section and position there)."""

    section: str
    index: int
    action: str  # edit, accept (a flagged sentence stays), remove
    before: str = ""
    after: str = ""


@dataclass(frozen=True)
class Signature:
    signer: str  # the authenticated caller: certificate name or token name
    signed_at: str  # ISO 8601, UTC
    changes: tuple[Change, ...]
    version: str = ""  # the review's version in the store

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        changes = tuple(Change(**c) for c in data["changes"])
        return cls(data["signer"], data["signed_at"], changes, data.get("version", ""))


def apply_changes(report: Report, changes: Sequence[Change]) -> tuple[Report, tuple[Change, ...]]:
    """The report with ``changes`` applied, and the changes as recorded (the text before each)."""
    if len(changes) > MAX_CHANGES:
        raise InvalidInput(f"at most {MAX_CHANGES} changes in one review")
    sections = {s.name: list(s.sentences) for s in report.sections}
    recorded = []
    for change in changes:
        if change.action not in ACTIONS:
            raise InvalidInput(f"a change's action is one of {', '.join(ACTIONS)}")
        sentences = sections.get(change.section)
        if sentences is None or not 0 <= change.index < len(sentences):
            raise InvalidInput("a change names a sentence the report does not have")
        sentence = sentences[change.index]
        if change.action == "edit":
            text = " ".join(change.after.split())
            if not text or len(text) > MAX_SENTENCE_CHARS:
                raise InvalidInput(f"an edited sentence has 1 to {MAX_SENTENCE_CHARS} characters")
            new = dataclasses.replace(sentence, text=text, removed=False, review="edited")
        elif change.action == "accept":
            new = dataclasses.replace(sentence, removed=False, review="accepted")
        else:
            new = dataclasses.replace(sentence, removed=True, review="removed")
        sentences[change.index] = new
        recorded.append(dataclasses.replace(change, before=sentence.text, after=new.text))
    reviewed = dataclasses.replace(
        report,
        sections=tuple(Section(s.name, tuple(sections[s.name])) for s in report.sections),
    )
    return reviewed, tuple(recorded)


def sign(
    report: Report, changes: Sequence[Change], signer: str, now: str
) -> tuple[Report, Signature]:
    if not signer:
        raise InvalidInput("a report is signed by an authenticated clinician")
    reviewed, recorded = apply_changes(report, changes)
    return reviewed, Signature(signer, now, recorded)


def review_status(sentences: Sequence[Sentence]) -> str:
    """What a reviewer faces: "flagged" when the verifier flagged a sentence no one decided."""
    flagged = any(
        s.verdict not in ("", "supported", "not_checked") and not s.review for s in sentences
    )
    return "flagged" if flagged else "unreviewed"
