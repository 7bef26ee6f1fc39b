"""Report generation as a list of small steps over one state, like the corpus pipeline:
perception -> reasoning with tools -> style -> verifier. Each step emits trace steps as it goes
and counts what it kept and dropped; the model is reached only through the model client. The steps
depend on the state (`report.state`), never on this module."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from medxiaohe import __version__
from medxiaohe.report.checking import check
from medxiaohe.report.model import Provenance, Report
from medxiaohe.report.perception import perceive
from medxiaohe.report.reasoning import reason
from medxiaohe.report.state import Deps, ReportRequest, ReportState, handles
from medxiaohe.report.style import render
from medxiaohe.report.trace import Step, Trace


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
