"""The model loop in `make demo`: a mixture of the ingested sample and items synthesized for
its gap nodes, a report generated for the demo's DICOM study and scored by the rubric service
against the dynamic rubric of its own findings, and a chat turn with the small model (or the
tiny one) served by the predictor."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.report.v1 import report_pb2 as rp
from medxiaohe_protos.report.v1 import report_pb2_grpc as rp_grpc
from medxiaohe_protos.rubric.v1 import rubric_pb2 as rb
from medxiaohe_protos.rubric.v1 import rubric_pb2_grpc as rb_grpc
from medxiaohe_services.runtime.embedded import SMALL_MODEL, local_model, tiny_model


def say(ok: bool, text: str) -> bool:
    print(f"  {'ok ' if ok else 'FAIL'} {text}", flush=True)
    return ok


def mixture_and_synthesis(home: Path) -> bool:
    """A small entity-balanced mixture of what the demo ingested, beside uniform sampling, and
    two verified items synthesized for gap nodes, with their chain of thought."""
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.mixture.sampler import MixtureConfig, build_mixture
    from medxiaohe.storage import open_store
    from medxiaohe.synthesis.gaps import synthesize_gaps
    from medxiaohe.synthesis.pipeline import chat_item

    store = open_store(str(home / "store"))
    tree = EntityTree.load(store)
    report = build_mixture(store, tree, ["ingested"], MixtureConfig(200, seed=0)).report()
    print("    mixture of the ingested sample (200-word budget, seed 0):", flush=True)
    for key in ("tokens", "records", "long_tail_share", "nodes_reached_5", "head_coverage"):
        print(
            f"      {key:<16} balanced {report['balanced'][key]!s:>7}   "
            f"uniform {report['uniform'][key]!s:>7}",
            flush=True,
        )
    print("    synthesizing for gap nodes (loading HPO's annotations: ~30 s)", flush=True)
    found = synthesize_gaps(store, tree, "ingested", 40)
    shown = sorted(found.result.accepted, key=lambda i: i.kind != "diagnosis")[:2]
    for item in shown:
        messages = chat_item(item, found.knowledge, tree.version, 0)["messages"]
        print(f"    {item.kind} item for {item.node_id}:", flush=True)
        for role, message in zip(("Q", "A"), messages, strict=True):
            for line in message["content"].splitlines():
                wrapped = textwrap.wrap(line, 96, subsequent_indent="  ") or [""]
                print("\n".join(f"      {role} {part}" for part in wrapped), flush=True)
    summary = found.summary()
    print(
        f"    synthesis: {summary['accepted']} of {summary['generated']} items verified, "
        f"{summary['gap_nodes_with_items']} of {summary['gap_nodes']} gap nodes covered",
        flush=True,
    )
    return say(
        report["balanced"]["tokens"] > 0 and len(shown) == 2,
        "mixture built beside uniform; items synthesized and verified for gap nodes",
    )


VERDICTS = {
    rp.VERDICT_SUPPORTED: "supported",
    rp.VERDICT_UNSUPPORTED: "unsupported addition",
    rp.VERDICT_CONTRADICTED: "contradiction",
    rp.VERDICT_NOT_CHECKED: "not checked",
}


def report(
    stub: rp_grpc.ReportServiceStub,
    rubric: rb_grpc.RubricServiceStub,
    home: Path,
    study_uri: str,
    review_url: str,
) -> bool:
    """A report for the demo's DICOM study, read from the store where it was uploaded, with
    the in-process model: the trace as it streams, each sentence with its verdict, the FHIR
    export, a retry of the request, its score against its dynamic rubric (the rubric service),
    its trajectory row, and the review page's URL."""
    from fhir.resources.R4B.bundle import Bundle

    request = rp.GenerateReportRequest(
        request_id=f"demo-{uuid.uuid4().hex[:12]}",
        study_id="cxr-1",
        images=[rp.ReportImage(image_id="frontal", uri=study_uri)],
        clinical_context="Cough and fever for three days; possible right lower lobe pneumonia.",
        evidence_index="demo",
        max_steps=3,
    )
    print(
        f"    GenerateReport: the stored study {study_uri}, template chest-xray, evidence index "
        "demo",
        flush=True,
    )
    report = None
    steps = 0
    for reply in stub.GenerateReport(request, timeout=600):
        if reply.WhichOneof("event") == "report":
            report = reply.report
            continue
        step, steps = reply.step, steps + 1
        kind = common_pb2.StepKind.Name(step.kind).removeprefix("STEP_KIND_").lower()
        tool = f" {step.tool}" if step.tool else ""
        print(
            f"      {step.step_id:<4} {step.agent:<10} {kind + tool:<28} {step.duration_ms:>6} ms  "
            f"{step.content[:60]}",
            flush=True,
        )
    if report is None:
        return say(False, "a report was generated")
    p = report.provenance
    print(
        f"    report {report.report_id}: template {report.template_id} {p.template_version}, "
        f"model {p.model_version}, MET {p.entity_tree_version}, "
        f"indexes {dict(p.index_versions) or 'none'}",
        flush=True,
    )
    for section in report.sections:
        print(f"      {section.title}:", flush=True)
        for sentence in section.sentences:
            print(f"        [{VERDICTS[sentence.verdict]}] {sentence.text[:70]}", flush=True)
    v = report.verification
    print(
        f"      verifier: {v.supported} supported, {v.unsupported} unsupported, "
        f"{v.contradicted} contradicted, {v.not_checked} not checked, {len(v.omitted)} omissions",
        flush=True,
    )
    if local_model(home) == SMALL_MODEL:
        caption = (
            "(the small model trained here writes report-like sentences; the verifier flags\n"
            "       those no perceived finding or evidence supports)"
        )
    else:
        caption = (
            "(random weights: the findings and the impression are noise; the verifier supports\n"
            "       none of it: words the source does not state are unsupported, what has no words "
            "is not checked;\n       `make train-small` trains a real model)"
        )
    print(f"      {caption}", flush=True)
    exported = stub.ExportReport(rp.ExportReportRequest(report_id=report.report_id), timeout=300)
    bundle = Bundle.model_validate_json(exported.fhir_json)
    path = home / "demo-report.fhir.json"
    path.write_text(exported.fhir_json)
    kinds = [e.resource.get_resource_type() for e in bundle.entry or [] if e.resource]
    counted = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    print(f"    ExportReport: {path} ({counted}), valid FHIR R4", flush=True)
    again = [
        r for r in stub.GenerateReport(request, timeout=600) if r.WhichOneof("event") == "report"
    ]
    same = bool(again) and again[0].report == report
    print(f"    retry of request {request.request_id}: the stored report returned: {same}")
    sentences = [x for s in report.sections for x in s.sentences]
    scored = _dynamic_score(rubric, report) and _trajectory(home, report.report_id)
    page = f"{review_url}/reports/{report.report_id}"
    print(f"    review: {page}", flush=True)
    reviewable = _reviewable(home, page, [x.text for x in sentences])
    observed = [x for x in sentences if _about_an_observation(x)]
    unchecked = [x for x in observed if x.verdict == rp.VERDICT_NOT_CHECKED]
    small = local_model(home) == SMALL_MODEL
    if small:  # the trained model's sentences state observations the verifier must decide
        print(
            f"    {len(observed)} sentences state an observation; {len(unchecked)} of them not "
            "checked",
            flush=True,
        )
    return say(
        steps > 0
        and bool(sentences)
        and all(x.verdict for x in sentences)
        and same
        and scored
        and reviewable
        and not (small and unchecked),
        "report generated with a verified trace, exported as FHIR, idempotent on its request id",
    )


def _about_an_observation(sentence: rp.ReportSentence) -> bool:
    """Linked to a perceived finding, or stating one as the radiology reader reads text
    ("the lungs are clear", "no effusion"): what the verifier should always decide."""
    from medxiaohe.radiology.reading import read

    return bool(sentence.finding_ids) or any(s.findings for s in read(sentence.text))


def _reviewable(home: Path, page: str, sentences: list[str]) -> bool:
    """The review page answers the development certificate with every sentence, and a client
    without a certificate with nothing."""
    import html
    import ssl

    import httpx

    from medxiaohe_services.runtime.certs import DEV_CLIENT
    from medxiaohe_services.runtime.embedded import ensure_dev_pki

    pki = ensure_dev_pki(home)
    context = ssl.create_default_context(cafile=str(pki.ca))
    anonymous = httpx.get(page, verify=context, timeout=60)
    client = pki.clients[DEV_CLIENT]
    context.load_cert_chain(client.cert, client.key)
    shown = httpx.get(page, verify=context, timeout=60)
    every = all(html.escape(s, quote=False) in shown.text for s in sentences)
    print(
        f"    review page: {shown.status_code} with the development certificate (every sentence "
        f"and its verdict: {every}), {anonymous.status_code} without one",
        flush=True,
    )
    return shown.status_code == 200 and every and anonymous.status_code == 401


def _dynamic_score(stub: rb_grpc.RubricServiceStub, report: rp.Report) -> bool:
    """The rubric service scores the report's final text against the dynamic rubric of the
    findings its perception step saw (the RL stage's report reward)."""
    if not report.findings:
        print("    dynamic rubric: the model perceived no finding to score against", flush=True)
        return True
    findings = [
        rb.StudyFinding(
            text=f.text,
            assertion=common_pb2.Assertion.Name(f.assertion).removeprefix("ASSERTION_").lower(),
            laterality=f.laterality,
            site=f.site,
        )
        for f in report.findings
    ]
    request = rb.ScoreResponseRequest(
        request_id=report.report_id, response=report.text or "(empty)", findings=findings
    )
    reply = stub.ScoreResponse(request, timeout=300)
    print(
        f"    ScoreResponse: the report against the dynamic rubric of its {len(findings)} "
        f"findings: {len(reply.verdicts)} criteria, score {reply.raw_score:.2f} by {reply.grader}"
        f" (rubric {reply.rubric_set_id} {reply.rubric_set_version})",
        flush=True,
    )
    for verdict in reply.verdicts[:8]:
        status = rb.VerdictStatus.Name(verdict.status).removeprefix("VERDICT_STATUS_")
        print(f"      {status:<10} {verdict.points:+3d}  {verdict.criterion[:70]}", flush=True)
    return reply.grader == "dynamic" and len(reply.verdicts) > 0


def _trajectory(home: Path, report_id: str) -> bool:
    """The stored report's reasoning exported as a trajectory row (de-identified as ingestion
    does it)."""
    from medxiaohe.agents.filtering import from_report_trace
    from medxiaohe.common.secrets import home_secret
    from medxiaohe.report.store import load_report
    from medxiaohe.storage import open_store

    stored, trace = load_report(open_store(str(home / "store")), report_id)
    row = from_report_trace(stored, trace, home_secret(home))
    print(
        f"    trajectory row: {len(row['messages'])} messages of the reasoning agent "
        "(`medxiaohe trajectories export-reports` publishes them)",
        flush=True,
    )
    return bool(row["messages"])


def model_turn(home: Path) -> bool:
    """The platform-trained small model when the home's store has one (`make train-small`),
    else the tiny one (built once into the home folder), served by the predictor in its own
    process; one OpenAI chat turn with an image through the model client."""
    import io

    from PIL import Image

    from medxiaohe.models.chat import ChatParams
    from medxiaohe.models.client import HttpModelClient
    from medxiaohe.storage import fetch, open_store
    from medxiaohe_services.model.process import model_server

    if local_model(home) == SMALL_MODEL:
        folder = fetch(open_store(str(home / "store")), SMALL_MODEL, home / "cache")
        weights = "the small model the platform trained"
    else:
        folder = tiny_model(home)
        weights = "random weights: the words are noise; `make train-small` trains a real one"
    film = io.BytesIO()
    Image.new("L", (224, 224), 40).convert("RGB").save(film, "PNG")  # a dark synthetic film
    question = [{"role": "user", "content": "What does this chest film show?"}]
    with model_server(folder, "tiny-vlm", ready_s=600) as server:
        client = HttpModelClient(
            f"{server.url}/openai/v1", "tiny-vlm", api_key=server.token, timeout_s=300
        )
        reply = client.chat(question, [film.getvalue()], ChatParams(max_tokens=12))
        client.close()
    print(
        f"    model: {server.url}/openai/v1/chat/completions answered a turn with a 224x224 image: "
        f"{reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens} completion "
        f"tokens ({weights})",
        flush=True,
    )
    return say(
        reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 64,
        "vision-language model served over the OpenAI route",
    )
