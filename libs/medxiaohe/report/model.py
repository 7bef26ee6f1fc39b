"""A generated report as data: the findings the perception step saw (with their image regions),
the sections the style step wrote (each sentence with the findings and citations it came from and
the verifier's verdict), the evidence cited, the omissions, and the provenance that lets an
auditor walk from a sentence back to the model, the index and the entity tree."""

from __future__ import annotations

from dataclasses import dataclass, field

from medxiaohe.common.errors import InvalidInput
from medxiaohe.rubric.dynamic import Finding as RubricFinding

ASSERTIONS = ("present", "absent", "uncertain")


@dataclass(frozen=True)
class Region:
    """Where on an image: the image id (the DICOM SOP instance UID for DICOM), its frame, and a
    box in the original image's pixel frame (x0, y0, x1, y1)."""

    image_id: str
    box: tuple[int, int, int, int]
    frame: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise InvalidInput("a region's box is x0 < x1 and y0 < y1, not negative")


@dataclass(frozen=True)
class Finding:
    id: str
    text: str
    assertion: str = "present"
    site: str = ""
    laterality: str = ""
    region: Region | None = None
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if self.assertion not in ASSERTIONS:
            raise InvalidInput(f"a finding's assertion is one of {', '.join(ASSERTIONS)}")

    def for_rubric(self) -> RubricFinding:
        return RubricFinding(self.text, self.assertion, self.laterality, self.site)


@dataclass(frozen=True)
class Citation:
    index_name: str
    index_version: str
    passage_id: str
    start: int
    end: int
    quote: str


@dataclass(frozen=True)
class Sentence:
    text: str
    finding_ids: tuple[str, ...] = ()
    citations: tuple[int, ...] = ()  # positions in Report.citations
    verdict: str = ""  # the verifier's: supported, not_checked, or the flagged kind (addition,
    # negation, laterality, location, severity)
    reasons: tuple[str, ...] = ()
    removed: bool = False  # kept out of the final text (the verifier's policy, or a reviewer)
    review: str = ""  # a clinician's decision: edited, accepted, removed


@dataclass(frozen=True)
class Section:
    name: str  # e.g. "Findings", "Impression"
    sentences: tuple[Sentence, ...]

    @property
    def text(self) -> str:
        """The section's final text: its sentences the policy kept."""
        return " ".join(s.text for s in self.sentences if not s.removed)


@dataclass(frozen=True)
class Omission:
    """A positive finding no sentence of the report mentions."""

    finding_id: str
    text: str
    step_id: str  # the perception step that reported it
    region: Region | None = None


@dataclass(frozen=True)
class Provenance:
    request_id: str
    model_endpoint: str
    model_version: str
    entity_tree_version: str
    template_version: str
    code_version: str
    index_versions: dict[str, str] = field(default_factory=dict)  # index name -> version
    request_digest: str = ""  # keyed digest of the request: a retry must match it


@dataclass(frozen=True)
class Report:
    id: str
    study_id: str
    findings: tuple[Finding, ...]
    sections: tuple[Section, ...]
    provenance: Provenance
    citations: tuple[Citation, ...] = ()
    omissions: tuple[Omission, ...] = ()
    created: str = ""  # ISO 8601, UTC
    template_id: str = ""
    subject: str = ""  # the caller's patient reference ("Patient/123"), when it gave one

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name.lower() == name.lower()), None)

    @property
    def text(self) -> str:
        """The final text: each section the policy left something in."""
        return "\n".join(f"{s.name}: {s.text}" for s in self.sections if s.text)

    def sentences(self) -> list[Sentence]:
        return [x for s in self.sections for x in s.sentences]
