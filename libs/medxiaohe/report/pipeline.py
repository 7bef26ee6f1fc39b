"""Report generation as a list of small steps over one state, like the corpus pipeline:
perception -> reasoning with tools -> style -> verifier. Each step emits trace steps as it goes
and counts what it kept and dropped; the model is reached only through the model client."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from medxiaohe import __version__
from medxiaohe.common.errors import InvalidInput
from medxiaohe.entities.tree import EntityTree
from medxiaohe.evidence.index import EvidenceIndex
from medxiaohe.evidence.passages import Passage
from medxiaohe.models.client import ModelClient
from medxiaohe.report.checking import POLICIES, check
from medxiaohe.report.images import MAX_IMAGES, StudyImage, View
from medxiaohe.report.model import Citation, Finding, Omission, Provenance, Report, Section
from medxiaohe.report.perception import perceive
from medxiaohe.report.reasoning import DEFAULT_STEPS, MAX_STEPS, reason
from medxiaohe.report.style import Conclusion, Template, render
from medxiaohe.report.trace import Step, Trace

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


def style(state: ReportState) -> ReportState:
    template = state.deps.template
    with state.trace.step("style", "decision", parents=(state.perception_step,)) as step:
        state.sections = render(template, state.findings, state.conclusions)
        sentences = sum(len(s.sentences) for s in state.sections)
        step.content = f"{sentences} sentences in template {template.id} {template.version}"
        step.result = {"template": template.id, "version": template.version}
        state.style_step = step.id
    state.count("style", kept=sentences, dropped=0)
    return state


STEPS: tuple[Callable[[ReportState], ReportState], ...] = (perceive, reason, style, check)


def handles(images: tuple[StudyImage, ...]) -> dict[str, StudyImage]:
    """Each image by the name the model sees: its id, with the frame when it has several."""
    out: dict[str, StudyImage] = {}
    for image in images:
        name = image.id if image.frame == 0 else f"{image.id}#{image.frame}"
        if name in out:
            raise InvalidInput(f"image {image.id!r} appears twice")
        out[name] = image
    return out


def generate(
    request: ReportRequest, deps: Deps, report_id: str, listener: Callable[[Step], None]
) -> tuple[Report, ReportState]:
    """Run the steps; each trace step goes to ``listener`` when it ends."""
    state = ReportState(request, deps, Trace(listener), images=handles(request.images))
    for step in STEPS:
        began = time.perf_counter()
        state = step(state)
        state.stats.setdefault(step.__name__, {})["seconds"] = round(time.perf_counter() - began, 3)
    index_versions = {deps.index_name: deps.index.version} if deps.index is not None else {}
    report = Report(
        id=report_id,
        study_id=request.study_id,
        findings=tuple(state.findings),
        sections=tuple(state.sections),
        provenance=Provenance(
            request_id=request.request_id,
            model_endpoint=deps.model_endpoint,
            model_version=deps.model_version,
            entity_tree_version=deps.tree.version,
            template_version=deps.template.version,
            code_version=__version__,
            index_versions=index_versions,
            request_digest=request.digest,
        ),
        citations=tuple(state.citations),
        omissions=tuple(state.omissions),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        template_id=deps.template.id,
        subject=request.subject,
    )
    return report, state
