"""What the report steps share: the request, the dependencies they use, and the state each step
reads and extends. The steps import this module; the pipeline that runs them imports the steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.entities.tree import EntityTree
from medxiaohe.evidence.index import EvidenceIndex
from medxiaohe.evidence.passages import Passage
from medxiaohe.models.client import ModelClient
from medxiaohe.report.images import MAX_IMAGES, StudyImage, View
from medxiaohe.report.model import Citation, Finding, Omission, Section
from medxiaohe.report.style import Conclusion, Template
from medxiaohe.report.trace import Trace

MAX_STEPS = 16  # reasoning turns a request may ask for
DEFAULT_STEPS = 6
POLICIES = ("flag", "remove")  # what the verifier does with an unsupported sentence
MAX_CONTEXT = 20_000  # characters of clinical context


@dataclass(frozen=True)
class ReportRequest:
    request_id: str
    study_id: str
    images: tuple[StudyImage, ...] = ()
    subject: str = ""  # the caller's patient reference, for the FHIR export
    context: str = ""
    max_steps: int = DEFAULT_STEPS
    policy: str = "flag"  # flag or remove
    digest: str = ""  # keyed digest of the caller's request, for idempotent retries

    def __post_init__(self) -> None:
        if not self.images and not self.context.strip():
            raise InvalidInput("a report needs images or clinical context (neither was sent)")
        if len(self.images) > MAX_IMAGES:
            raise InvalidInput(f"a report takes at most {MAX_IMAGES} images (DICOM frames count)")
        if len(self.context) > MAX_CONTEXT:
            raise InvalidInput(f"clinical context is longer than {MAX_CONTEXT} characters")
        if not 1 <= self.max_steps <= MAX_STEPS:
            raise InvalidInput(f"max_steps must be between 1 and {MAX_STEPS} (0: {DEFAULT_STEPS})")
        if self.policy not in POLICIES:
            raise InvalidInput(f"policy is one of {', '.join(POLICIES)}")


@dataclass
class Deps:
    """What the agents use: the model, the entity tree and its tagger, the evidence index (None
    without one), the template, and the caller's deadline (time.monotonic())."""

    model: ModelClient
    model_endpoint: str
    model_version: str
    tree: EntityTree
    tagger: Any
    template: Template
    index: EvidenceIndex | None = None
    index_name: str = ""
    deadline: float | None = None


@dataclass
class ReportState:
    request: ReportRequest
    deps: Deps
    trace: Trace
    images: dict[str, StudyImage] = field(default_factory=dict)  # handle -> image
    views: dict[str, View] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    retrieved: dict[str, Passage] = field(default_factory=dict)
    citations: list[Citation] = field(default_factory=list)
    conclusions: list[Conclusion] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    omissions: list[Omission] = field(default_factory=list)
    perception_step: str = ""
    style_step: str = ""
    stats: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        index = self.deps.index
        return sorted({p.source for p in index.passages if p.source})[:32] if index else []

    def count(self, step: str, *, kept: int, dropped: int) -> None:
        self.stats.setdefault(step, {}).update(kept=kept, dropped=dropped)


def handles(images: tuple[StudyImage, ...]) -> dict[str, StudyImage]:
    """Each image by the name the model sees: its id, with the frame when it has several."""
    out: dict[str, StudyImage] = {}
    for image in images:
        name = image.id if image.frame == 0 else f"{image.id}#{image.frame}"
        if name in out:
            raise InvalidInput(f"image {image.id!r} appears twice")
        out[name] = image
    return out
