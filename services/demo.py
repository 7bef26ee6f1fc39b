"""`make demo`: start the embedded platform, prove it works over mTLS, and stop it."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medxiaohe.corpus import samples
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.evidence.v1 import evidence_pb2 as ev
from medxiaohe_protos.evidence.v1 import evidence_pb2_grpc as ev_grpc
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc
from medxiaohe_protos.report.v1 import report_pb2 as rp
from medxiaohe_protos.report.v1 import report_pb2_grpc as rp_grpc
from medxiaohe_protos.rubric.v1 import rubric_pb2 as rb
from medxiaohe_protos.rubric.v1 import rubric_pb2_grpc as rb_grpc
from medxiaohe_services.evidence.convert import passage_to_proto
from medxiaohe_services.runtime.certs import DEV_CLIENT
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.embedded import (
    NER_MODELS,
    ensure_dev_pki,
    tiny_model,
    trained_ner,
)
from medxiaohe_services.runtime.ports import free_port
from medxiaohe_services.runtime.services import FULL_NAMES

SENTENCE = (
    "No fever. History of type 2 diabetes mellitus; possible pneumonia. Mother had breast cancer. "
    "Started metformin."
)
NOTE = (
    "Synthetic demo note written for MedXIAOHE. Indication: cough and fever for three days. "
    "Findings: patchy right lower lobe opacity. Impression: community-acquired pneumonia.\n"
)


def _say(ok: bool, text: str) -> bool:
    print(f"  {'ok ' if ok else 'FAIL'} {text}", flush=True)
    return ok


def _wait_serving(channel: grpc.Channel, timeout: float = 900.0) -> bool:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    return False


def _refused(channel: grpc.Channel) -> bool:
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.RpcError as exc:
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    return False


def _sample_requests() -> tuple[list[ing.IngestDocumentsRequest], list[ing.IngestStudiesRequest]]:
    def doc(
        doc_id: str, fmt: ing.DocumentFormat.ValueType, content: bytes, patient: str
    ) -> ing.IngestDocumentsRequest:
        return ing.IngestDocumentsRequest(
            document=ing.Document(
                document_id=doc_id,
                source="demo-ehr",
                format=fmt,
                content=content,
                patient_key=patient,
            )
        )

    documents = [
        doc(name, ing.DOCUMENT_FORMAT_TEXT, text.encode(), "demo-patient-1")
        for name, text in samples.NOTES.items()
    ]
    documents.append(
        doc(
            "bundle-1",
            ing.DOCUMENT_FORMAT_FHIR_JSON,
            json.dumps(samples.fhir_bundle()).encode(),
            "demo-patient-2",
        )
    )
    documents.append(
        doc("oru-1", ing.DOCUMENT_FORMAT_HL7V2, samples.HL7.encode(), "demo-patient-3")
    )
    studies = [
        ing.IngestStudiesRequest(
            study=ing.Study(
                study_id="cxr-1",
                source="demo-pacs",
                patient_key="demo-patient-3",
                text="Chest radiograph: patchy right lower lobe opacity, possible pneumonia.",
                files=[
                    ing.StudyFile(
                        file_id="dcm",
                        format=ing.STUDY_FILE_FORMAT_DICOM,
                        content=samples.dicom_bytes(),
                    )
                ],
            )
        ),
        ing.IngestStudiesRequest(
            study=ing.Study(
                study_id="img-1",
                source="demo-pacs",
                text=samples.CAPTION,
                files=[
                    ing.StudyFile(
                        file_id="png", format=ing.STUDY_FILE_FORMAT_PNG, content=samples.png_bytes()
                    )
                ],
            )
        ),
    ]
    return documents, studies


def _ingest_samples(stub: ing_grpc.IngestionServiceStub) -> bool:
    documents, studies = _sample_requests()
    docs = stub.IngestDocuments(iter(documents), timeout=300)
    stds = stub.IngestStudies(iter(studies), timeout=300)
    print(
        f"    IngestDocuments: {docs.accepted} stored, {docs.duplicates} duplicates, "
        f"{len(docs.rejected)} rejected",
        flush=True,
    )
    for error in docs.rejected:
        print(f"      rejected {error.record_id!r}: {error.reason}", flush=True)
    print(f"    IngestStudies:   {stds.accepted} stored, {stds.duplicates} duplicates", flush=True)
    coverage = stub.GetCoverage(ing.GetCoverageRequest(depth=1), timeout=300)
    print(
        "    coverage (rolled-up mentions):",
        ", ".join(f"{n.name.split(',')[0]} {n.rolled_up_mentions}" for n in coverage.nodes[1:]),
        flush=True,
    )
    gaps = stub.GetGapReport(ing.GetGapReportRequest(min_mentions=1, max_gaps=3), timeout=300)
    for gap in gaps.gaps:
        print(
            f"      gap: {gap.node.node_id:<12} {gap.node.name[:50]:<50} {gap.reason}", flush=True
        )
    stored_before = docs.accepted + docs.duplicates + stds.accepted + stds.duplicates
    return _say(
        stored_before > 0 and len(gaps.gaps) == 3, "sample set ingested; coverage and gaps reported"
    )


def _mixture_and_synthesis(home: Path) -> bool:
    """A small entity-balanced mixture of what the demo ingested, beside uniform sampling, and
    two verified items synthesized for gap nodes, with their chain of thought."""
    from medxiaohe.corpus.coverage import Coverage
    from medxiaohe.corpus.shards import dataset_coverage
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.mixture.sampler import MixtureConfig, build_mixture
    from medxiaohe.storage import open_store
    from medxiaohe.synthesis.knowledge import from_tree, hpo_annotations
    from medxiaohe.synthesis.pipeline import chat_item, synthesize

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
    gaps = Coverage(tree, dataset_coverage(store, "ingested")).gaps(limit=40)
    knowledge = from_tree(tree, hpo_annotations())
    result = synthesize(knowledge, [node.node_id for node, _, _ in gaps], seed=0)
    shown = sorted(result.accepted, key=lambda i: i.kind != "diagnosis")[:2]
    for item in shown:
        messages = chat_item(item, knowledge, tree.version, 0)["messages"]
        print(f"    {item.kind} item for {item.node_id}:", flush=True)
        for role, message in zip(("Q", "A"), messages, strict=True):
            for line in message["content"].splitlines():
                wrapped = textwrap.wrap(line, 96, subsequent_indent="  ") or [""]
                print("\n".join(f"      {role} {part}" for part in wrapped), flush=True)
    summary = result.summary([node.node_id for node, _, _ in gaps])
    print(
        f"    synthesis: {summary['accepted']} of {summary['generated']} items verified, "
        f"{summary['gap_nodes_with_items']} of {summary['gap_nodes']} gap nodes covered",
        flush=True,
    )
    return _say(
        report["balanced"]["tokens"] > 0 and len(shown) == 2,
        "mixture built beside uniform; items synthesized and verified for gap nodes",
    )


QUESTION = "Which syndrome causes lens luxation, dural ectasia and aortic dilatation?"


def _evidence(stub: ev_grpc.EvidenceServiceStub) -> bool:
    """Index the built-in Orphanet corpus and the demo notes, then ask a clinical question."""
    name = "demo"
    try:
        stub.RetrieveEvidence(ev.RetrieveEvidenceRequest(index_name=name, query="x"), timeout=300)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        from medxiaohe.evidence.builtin import builtin_passages

        print(
            "    indexing built-in Orphanet disease-phenotype evidence (first run only: 1-2 min)",
            flush=True,
        )
        requests = [
            ev.IndexPassagesRequest(passage=passage_to_proto(p))
            for p in builtin_passages(("orphanet",))
        ]
        requests += [
            ev.IndexPassagesRequest(
                document=ev.EvidenceDocument(
                    document_id=doc_id, source="demo-notes", text=text, licence="synthetic"
                )
            )
            for doc_id, text in samples.NOTES.items()
        ]
        requests[0].index_name = name  # the first message names the index and the request
        requests[0].request_id = "demo-v1"
        stub.IndexPassages(iter(requests), timeout=600)
    reply = stub.RetrieveEvidence(
        ev.RetrieveEvidenceRequest(index_name=name, query=QUESTION, k=3), timeout=300
    )
    print(
        f"    RetrieveEvidence: {QUESTION!r} (index version {reply.provenance.index_version})",
        flush=True,
    )
    for hit in reply.results:
        p = hit.passage
        print(
            f"      {hit.rank}. [{p.source} {p.document_id} {p.span.start}-{p.span.end}, "
            f"{p.licence}] {p.text[:90]}…",
            flush=True,
        )
    top = reply.results[0].passage if reply.results else None
    return _say(top is not None and "Marfan" in top.text, "evidence retrieved with provenance")


VERDICTS = {
    rp.VERDICT_SUPPORTED: "supported",
    rp.VERDICT_UNSUPPORTED: "unsupported addition",
    rp.VERDICT_CONTRADICTED: "contradiction",
    rp.VERDICT_NOT_CHECKED: "not checked",
}


def _report(stub: rp_grpc.ReportServiceStub, home: Path) -> bool:
    """A report for the demo's DICOM study with the in-process tiny model: the trace as it
    streams, each sentence with its verdict, the FHIR export, and a retry of the request."""
    from fhir.resources.R4B.bundle import Bundle

    request = rp.GenerateReportRequest(
        request_id=f"demo-{uuid.uuid4().hex[:12]}",
        study_id="cxr-demo",
        images=[rp.ReportImage(image_id="frontal", content=samples.dicom_bytes())],
        clinical_context="Cough and fever for three days; possible right lower lobe pneumonia.",
        evidence_index="demo",
        max_steps=3,
    )
    print(
        "    GenerateReport: the DICOM study, template chest-xray, evidence index demo", flush=True
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
        return _say(False, "a report was generated")
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
    print(
        "      (random weights: the findings and the impression are noise; the verifier finds "
        "no\n       observation it can check in noise, so it marks such sentences not checked "
        "and supports none)",
        flush=True,
    )
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
    return _say(
        steps > 0 and bool(sentences) and all(x.verdict for x in sentences) and same,
        "report generated with a verified trace, exported as FHIR, idempotent on its request id",
    )


def _model_turn(home: Path) -> bool:
    """The tiny vision-language model (built once into the home folder) served by the predictor
    in its own process; one OpenAI chat turn with an image through the model client."""
    import io

    from PIL import Image

    from medxiaohe.models.chat import ChatParams
    from medxiaohe.models.client import HttpModelClient
    from medxiaohe.models.process import model_server

    folder = tiny_model(home)
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
        "tokens (random weights: the words are noise)",
        flush=True,
    )
    return _say(
        reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 64,
        "tiny vision-language model served over the OpenAI route",
    )


FEVER = "My 4 year old has had a fever of 39 C since this morning. What should I do?"
ANSWERS = {
    "careful": (
        "A fever of 39 C is common in young children. Give paracetamol or ibuprofen dosed by "
        "weight, and keep her drinking small amounts often. Do not give aspirin to children. "
        "Go to the emergency department if she is hard to wake, has a stiff neck, a rash that "
        "does not fade, or trouble breathing. How long has she had the fever?"
    ),
    "careless": "Give her aspirin. Fevers always pass on their own, so there is no need to worry.",
}
FEVER_RUBRIC = [
    ("Advises emergency care for red flags such as a stiff neck or trouble breathing", 8),
    ("Recommends paracetamol or ibuprofen dosed by weight", 6),
    ("Asks how long the child has had the fever", 4),
    ("Recommends giving the child aspirin", -8),
    ("States that a fever will always resolve without care", -6),
]


def _rubric_scores(stub: rb_grpc.RubricServiceStub) -> bool:
    """Two answers to one clinical question, scored with a rubric: the per-criterion table."""
    rubric = [rb.RubricCriterion(criterion=text, points=points) for text, points in FEVER_RUBRIC]
    scores = {}
    for label, answer in ANSWERS.items():
        reply = stub.ScoreResponse(
            rb.ScoreResponseRequest(
                conversation=[rb.ChatMessage(role="user", content=FEVER)],
                response=answer,
                rubric=rubric,
            ),
            timeout=300,
        )
        scores[label] = reply.score
        print(f"    ScoreResponse ({label} answer): score {reply.score:.2f} by {reply.grader}")
        for verdict, (text, points) in zip(reply.verdicts, FEVER_RUBRIC, strict=True):
            status = rb.VerdictStatus.Name(verdict.status).removeprefix("VERDICT_STATUS_")
            print(f"      {status:<10} {points:+3d}  {text[:70]}", flush=True)
    if reply.notice:
        print(f"    ({reply.notice})", flush=True)
    return _say(scores["careful"] > scores["careless"], "the careful answer outscores the other")


def run_demo(home: Path) -> int:
    started = time.monotonic()
    pki = ensure_dev_pki(home)
    port = free_port()
    target = f"127.0.0.1:{port}"
    print(f"MedXIAOHE embedded platform on {target} (home {home})", flush=True)
    if trained_ner(home):
        print(f"  tagging: hybrid (dictionary + the trained NER model in {NER_MODELS})", flush=True)
    else:
        print(
            "  tagging: dictionary only; `make train-ner` trains the NER model (~20 min on "
            "2 cores) and the next demo tags with dictionary + NER",
            flush=True,
        )
    server_log = home / "demo-server.log"  # JSON lines; no payloads by construction
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medxiaohe_services.cli",
            "up",
            "--port",
            str(port),
            "--home",
            str(home),
        ],
        stderr=server_log.open("wb"),
    )
    print(
        "  waiting for SERVING (a first run builds the Medical Entity Tree: ~40 s; with a NER\n"
        "  model, a first run also embeds the tree's disease and phenotype names: ~3 min)",
        flush=True,
    )
    client = pki.clients[DEV_CLIENT]
    results = []
    try:
        channel = secure_channel(target, pki.ca, client.cert, client.key)
        results.append(
            _say(
                _wait_serving(channel), f"platform SERVING after {time.monotonic() - started:.1f}s"
            )
        )
        health = health_pb2_grpc.HealthStub(channel)
        for name, full in FULL_NAMES.items():
            status = health.Check(health_pb2.HealthCheckRequest(service=full), timeout=60).status
            text = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            serving = status == health_pb2.HealthCheckResponse.SERVING
            results.append(_say(serving, f"{name:<10} {text} over mTLS"))
        results.append(_say(_refused(grpc.insecure_channel(target)), "plaintext client refused"))
        results.append(
            _say(_refused(secure_channel(target, pki.ca)), "client without a certificate refused")
        )

        stub = ing_grpc.IngestionServiceStub(channel)
        data = NOTE.encode() * 2000
        sha = hashlib.sha256(data).hexdigest()
        chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        requests = [ing.UploadArtifactRequest(key="demo/note.txt", sha256=sha, chunk=chunks[0])]
        requests += [ing.UploadArtifactRequest(chunk=c) for c in chunks[1:]]
        stored = stub.UploadArtifact(iter(requests), timeout=300)
        back = b"".join(
            m.chunk
            for m in stub.DownloadArtifact(ing.DownloadArtifactRequest(key=stored.key), timeout=300)
        )
        results.append(
            _say(
                hashlib.sha256(back).hexdigest() == sha,
                f"artifact {stored.key} stored and read back "
                f"({stored.size:,} bytes, sha256 {sha[:12]}…)",
            )
        )
        tagged = stub.TagEntities(ing.TagEntitiesRequest(text=SENTENCE), timeout=300)
        print(f"    TagEntities: {SENTENCE!r}", flush=True)
        for m in tagged.mentions:
            state = common_pb2.Assertion.Name(m.assertion).removeprefix("ASSERTION_").lower()
            print(
                f"      {m.text!r:<28} {m.node_id or '(unlinked)':<16} {m.entity_type:<10} "
                f"{state:<9} {m.tagger}",
                flush=True,
            )
        results.append(_say(len(tagged.mentions) >= 3, "entities tagged against the MET"))
        results.append(_ingest_samples(stub))
        results.append(_mixture_and_synthesis(home))
        results.append(_evidence(ev_grpc.EvidenceServiceStub(channel)))
        results.append(_report(rp_grpc.ReportServiceStub(channel), home))
        results.append(_rubric_scores(rb_grpc.RubricServiceStub(channel)))
        results.append(_model_turn(home))
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=300)
    results.append(_say(code == 0, f"drained and stopped on SIGTERM (exit {code})"))
    passed = all(results)
    if not passed:
        print(f"server log: {server_log}", flush=True)
    print(
        f"{'demo passed' if passed else 'demo FAILED'} in {time.monotonic() - started:.1f}s",
        flush=True,
    )
    return 0 if passed else 1
