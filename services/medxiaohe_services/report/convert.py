"""Protobuf <-> domain objects for the report service."""

from __future__ import annotations

import json
import re
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from medxiaohe.common.errors import InvalidInput, PermissionDenied
from medxiaohe.corpus.dicom import PixelBudget
from medxiaohe.radiology import verification as v
from medxiaohe.report.images import MAX_REQUEST_PIXELS, StudyImage, decode_image
from medxiaohe.report.model import Citation, Region, Report
from medxiaohe.report.state import DEFAULT_STEPS
from medxiaohe.report.trace import Step
from medxiaohe.storage import ArtifactStore
from medxiaohe.storage.base import check_key
from medxiaohe.storage.uploads import caller_uploads
from medxiaohe_protos.common.v1 import common_pb2 as common
from medxiaohe_protos.report.v1 import report_pb2 as pb

MAX_IMAGE_BYTES = 64 << 20
POLICY = {
    pb.VERIFIER_POLICY_UNSPECIFIED: "flag",
    pb.VERIFIER_POLICY_FLAG: "flag",
    pb.VERIFIER_POLICY_REMOVE: "remove",
}
VERDICT = {  # the report model's verdict: supported, not_checked, or the flagged kind
    v.SUPPORTED: (pb.VERDICT_SUPPORTED, pb.CONTRADICTION_UNSPECIFIED),
    v.ADDITION: (pb.VERDICT_UNSUPPORTED, pb.CONTRADICTION_UNSPECIFIED),
    v.NEGATION: (pb.VERDICT_CONTRADICTED, pb.CONTRADICTION_NEGATION),
    v.LATERALITY: (pb.VERDICT_CONTRADICTED, pb.CONTRADICTION_LATERALITY),
    v.LOCATION: (pb.VERDICT_CONTRADICTED, pb.CONTRADICTION_LOCATION),
    v.SEVERITY: (pb.VERDICT_CONTRADICTED, pb.CONTRADICTION_SEVERITY),
    v.NOT_CHECKED: (pb.VERDICT_NOT_CHECKED, pb.CONTRADICTION_UNSPECIFIED),
}
ASSERTION = {
    "present": common.ASSERTION_PRESENT,
    "absent": common.ASSERTION_NEGATED,
    "uncertain": common.ASSERTION_UNCERTAIN,
}
KIND = {
    "observation": common.STEP_KIND_OBSERVATION,
    "tool_call": common.STEP_KIND_TOOL_CALL,
    "tool_result": common.STEP_KIND_TOOL_RESULT,
    "decision": common.STEP_KIND_DECISION,
    "verification": common.STEP_KIND_VERIFICATION,
}
STATUS = {"ok": common.STEP_STATUS_OK, "error": common.STEP_STATUS_ERROR}


_REFERENCE = re.compile(r"[A-Za-z]{1,40}/[A-Za-z0-9\-.]{1,64}")


def subject(request: pb.GenerateReportRequest) -> str:
    """The caller's patient reference, a FHIR relative reference (``Patient/<id>``), or ""."""
    reference = request.patient_reference
    if reference and not _REFERENCE.fullmatch(reference):
        raise InvalidInput("patient_reference is a FHIR reference such as Patient/123")
    return reference


def max_steps(request: pb.GenerateReportRequest) -> int:
    return request.max_steps or DEFAULT_STEPS


def policy(request: pb.GenerateReportRequest) -> str:
    if request.policy not in POLICY:
        raise InvalidInput("policy is VERIFIER_POLICY_FLAG or VERIFIER_POLICY_REMOVE")
    return POLICY[request.policy]


def images(
    request: pb.GenerateReportRequest,
    store: ArtifactStore,
    caller: str,
    max_pixels: int = MAX_REQUEST_PIXELS,
) -> tuple[StudyImage, ...]:
    """The request's images decoded: bytes sent inline, or a key the caller uploaded; all of
    them together decode to at most ``max_pixels``."""
    budget = PixelBudget(max_pixels)
    out: list[StudyImage] = []
    for i, image in enumerate(request.images):
        name = image.image_id or f"image-{i + 1}"
        if image.WhichOneof("source") == "uri":
            key = check_key(image.uri)
            if not key.startswith(caller_uploads(caller)):
                raise PermissionDenied(f"images[{i}].uri must be one of the caller's own uploads")
            if store.stat(key).size > MAX_IMAGE_BYTES:
                raise InvalidInput(f"images[{i}] is larger than {MAX_IMAGE_BYTES >> 20} MiB")
            content = b"".join(store.iter_chunks(key))
        elif image.WhichOneof("source") == "content":
            content = image.content
        else:
            raise InvalidInput(f"images[{i}] has neither content nor uri")
        out.extend(decode_image(content, name, budget))
    return tuple(out)


def timestamp(iso: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(iso))
    return stamp


def region(r: Region) -> common.ImageRegion:
    x0, y0, x1, y1 = r.box
    return common.ImageRegion(
        image_id=r.image_id,
        frame=r.frame,
        label=r.label,
        pixel_box=common.PixelBox(x0=x0, y0=y0, x1=x1, y1=y1),
    )


def citation(c: Citation) -> common.Citation:
    return common.Citation(
        passage_id=c.passage_id,
        span=common.Span(start=c.start, end=c.end),
        quote=c.quote,
        index_name=c.index_name,
        index_version=c.index_version,
    )


def step(s: Step) -> common.TraceStep:
    return common.TraceStep(
        index=int(s.id[1:]),
        step_id=s.id,
        parent_ids=list(s.parents),
        agent=s.agent,
        kind=KIND[s.kind],
        tool=s.tool,
        tool_call_id=s.tool_call_id,
        arguments_json="" if s.arguments is None else json.dumps(s.arguments),
        result_json="" if s.result is None else json.dumps(s.result),
        status=STATUS[s.status],
        start_time=timestamp(s.started),
        duration_ms=s.duration_ms,
        content=s.content,
        citations=[citation(c) for c in s.citations],
        regions=[region(r) for r in s.regions],
        conclusion=s.conclusion,
    )


def report(r: Report) -> pb.Report:
    sections = []
    for section in r.sections:
        sentences = []
        for sentence in section.sentences:
            verdict, contradiction = VERDICT[sentence.verdict]
            sentences.append(
                pb.ReportSentence(
                    text=sentence.text,
                    finding_ids=list(sentence.finding_ids),
                    citations=[citation(r.citations[i]) for i in sentence.citations],
                    verdict=verdict,
                    contradiction=contradiction,
                    reasons=list(sentence.reasons),
                    removed=sentence.removed,
                )
            )
        sections.append(pb.ReportSection(title=section.name, sentences=sentences))
    all_sentences = r.sentences()
    verdicts = [VERDICT[s.verdict][0] for s in all_sentences]
    p = r.provenance
    return pb.Report(
        report_id=r.id,
        study_id=r.study_id,
        template_id=r.template_id,
        sections=sections,
        findings=[
            pb.Finding(
                finding_id=f.id,
                text=f.text,
                assertion=ASSERTION[f.assertion],
                site=f.site,
                laterality=f.laterality,
                confidence=f.confidence,
                regions=[region(f.region)] if f.region else [],
            )
            for f in r.findings
        ],
        text=r.text,
        created=timestamp(r.created),
        verification=pb.VerificationSummary(
            supported=verdicts.count(pb.VERDICT_SUPPORTED),
            unsupported=verdicts.count(pb.VERDICT_UNSUPPORTED),
            contradicted=verdicts.count(pb.VERDICT_CONTRADICTED),
            not_checked=verdicts.count(pb.VERDICT_NOT_CHECKED),
            removed=sum(s.removed for s in all_sentences),
            omitted=[
                pb.Omission(
                    text=o.text,
                    step_id=o.step_id,
                    finding_id=o.finding_id,
                    regions=[region(o.region)] if o.region else [],
                )
                for o in r.omissions
            ],
        ),
        provenance=common.Provenance(
            code_version=p.code_version,
            model_version=p.model_version,
            model_endpoint=p.model_endpoint,
            entity_tree_version=p.entity_tree_version,
            template_version=p.template_version,
            request_id=p.request_id,
            index_versions=dict(p.index_versions),
            index_version=",".join(p.index_versions.values()),
        ),
    )
