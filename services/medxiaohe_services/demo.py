"""`make demo`: start the embedded platform, prove it works over mTLS, and stop it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medxiaohe.common.ports import free_port
from medxiaohe.corpus import samples
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.evidence.v1 import evidence_pb2 as ev
from medxiaohe_protos.evidence.v1 import evidence_pb2_grpc as ev_grpc
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc
from medxiaohe_protos.report.v1 import report_pb2_grpc as rp_grpc
from medxiaohe_protos.rubric.v1 import rubric_pb2_grpc as rb_grpc
from medxiaohe_services import demo_loop as loop
from medxiaohe_services.demo_loop import say
from medxiaohe_services.evidence.convert import passage_to_proto
from medxiaohe_services.runtime.certs import DEV_CLIENT
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.embedded import (
    NER_MODELS,
    ensure_dev_pki,
    trained_ner,
)
from medxiaohe_services.runtime.services import FULL_NAMES

SENTENCE = (
    "No fever. History of type 2 diabetes mellitus; possible pneumonia. Mother had breast cancer. "
    "Started metformin."
)
NOTE = (
    "Synthetic demo note written for MedXIAOHE. Indication: cough and fever for three days. "
    "Findings: patchy right lower lobe opacity. Impression: community-acquired pneumonia.\n"
)


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
    return say(
        stored_before > 0 and len(gaps.gaps) == 3, "sample set ingested; coverage and gaps reported"
    )


QUESTION = "Which syndrome causes lens luxation, dural ectasia and aortic dilatation?"


def _ingested(home: Path) -> list[ev.IndexPassagesRequest]:
    """The ingested corpus's records (de-identified, as the shards hold them), as documents."""
    from medxiaohe.corpus.shards import list_shards, read_records
    from medxiaohe.storage import open_store

    store = open_store(str(home / "store"))
    rows = [r for m in list_shards(store, "ingested") for r in read_records(store, m)]
    return [
        ev.IndexPassagesRequest(
            document=ev.EvidenceDocument(
                document_id=row["id"], source=row["source"], text=row["text"], licence="hospital"
            )
        )
        for row in rows
        if row["text"].strip()
    ]


def _evidence(stub: ev_grpc.EvidenceServiceStub, home: Path) -> bool:
    """Index the built-in Orphanet corpus and the ingested corpus, then ask a clinical
    question."""
    name = "demo"
    try:
        stub.RetrieveEvidence(ev.RetrieveEvidenceRequest(index_name=name, query="x"), timeout=300)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        from medxiaohe.evidence.builtin import builtin_passages

        print(
            "    indexing built-in Orphanet disease-phenotype evidence and the ingested corpus "
            "(first run only: 1-2 min)",
            flush=True,
        )
        requests = [
            ev.IndexPassagesRequest(passage=passage_to_proto(p))
            for p in builtin_passages(("orphanet",))
        ]
        requests += _ingested(home)
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
    return say(top is not None and "Marfan" in top.text, "evidence retrieved with provenance")


def _review_url(server_log: Path) -> str:
    """The review app's base URL, from the line `medxiaohe up` logs when it serves it."""
    for line in server_log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            url = json.loads(line).get("review_url")
            if url:
                return str(url)
    return "(the review app is not served)"


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
            say(_wait_serving(channel), f"platform SERVING after {time.monotonic() - started:.1f}s")
        )
        health = health_pb2_grpc.HealthStub(channel)
        for name, full in FULL_NAMES.items():
            status = health.Check(health_pb2.HealthCheckRequest(service=full), timeout=60).status
            text = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            serving = status == health_pb2.HealthCheckResponse.SERVING
            results.append(say(serving, f"{name:<10} {text} over mTLS"))
        results.append(say(_refused(grpc.insecure_channel(target)), "plaintext client refused"))
        results.append(
            say(_refused(secure_channel(target, pki.ca)), "client without a certificate refused")
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
            say(
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
        results.append(say(len(tagged.mentions) >= 3, "entities tagged against the MET"))
        results.append(_ingest_samples(stub))
        film = samples.dicom_bytes()  # named by its content: a run again uploads nothing new
        key = f"studies/cxr-1-{hashlib.sha256(film).hexdigest()[:12]}.dcm"
        study = stub.UploadArtifact(
            iter([ing.UploadArtifactRequest(key=key, chunk=film)]), timeout=300
        )
        results.append(say(bool(study.key), f"study cxr-1 uploaded as {study.key}"))
        results.append(loop.mixture_and_synthesis(home))
        results.append(_evidence(ev_grpc.EvidenceServiceStub(channel), home))
        review_url = _review_url(server_log)
        reports, rubric = rp_grpc.ReportServiceStub(channel), rb_grpc.RubricServiceStub(channel)
        results.append(loop.report(reports, rubric, home, study.key, review_url))
        results.append(loop.model_turn(home))
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=300)
    results.append(say(code == 0, f"drained and stopped on SIGTERM (exit {code})"))
    passed = all(results)
    if not passed:
        print(f"server log: {server_log}", flush=True)
    print(
        f"{'demo passed' if passed else 'demo FAILED'} in {time.monotonic() - started:.1f}s",
        flush=True,
    )
    return 0 if passed else 1
