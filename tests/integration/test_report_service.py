"""The report service over mTLS against a real predictor serving the tiny model: the trace
streams in order, tool calls pair with their results, every sentence has a verdict, the report
reads back with its trace and exports as valid FHIR R4, a retried request id returns the stored
report, and bad input gets a clear error."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image

from medxiaohe.corpus import samples
from medxiaohe.evidence.index import EvidenceIndex
from medxiaohe.evidence.passages import Passage
from medxiaohe.storage import open_store
from medxiaohe_protos.common.v1 import common_pb2 as common
from medxiaohe_protos.report.v1 import report_pb2 as pb
from medxiaohe_protos.report.v1 import report_pb2_grpc as pb_grpc
from medxiaohe_services.model.process import Tls, model_server
from medxiaohe_services.runtime.certs import DevPki, write_dev_pki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.services import BUILDERS
from tests import hostile
from tests.conftest import ALLOWED, LIMITED, publish_small_tree, server_settings
from tests.servers import PlatformThread, free_ports, running, serving

# generous: the fixture starts a predictor; a loaded machine is slow, not hung
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

EVIDENCE = [
    "Pneumonia often appears as a lobar consolidation. A parapneumonic effusion may follow.",
    "A pneumothorax is air in the pleural space; a large one shifts the mediastinum.",
    "Cardiomegaly is a cardiothoracic ratio above one half on a frontal film.",
]
CONTEXT = "Cough and fever for three days. Right lower lobe opacity on a prior film?"


def png(size: tuple[int, int] = (96, 80)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (60, 60, 60)).save(out, "PNG")
    return out.getvalue()


AUDITOR = "audit-office"
PROXY, PROXY_TOKEN = "ward-proxy", "ward-proxy-token-9f2c1e7a5b3d"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """The usual callers and an auditor who may read any caller's reports."""
    return write_dev_pki(tmp_path_factory.mktemp("pki"), clients=[ALLOWED, LIMITED, AUDITOR])


@pytest.fixture(scope="module")
def service(
    pki: DevPki, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PlatformThread]:
    folder = tmp_path_factory.mktemp("report")
    store_uri = str(folder / "store")
    publish_small_tree(store_uri)
    store = open_store(store_uri)
    passages = [
        Passage(f"cxr-{i}", f"doc-{i}", t, 0, len(t), source="textbook")
        for i, t in enumerate(EVIDENCE)
    ]
    EvidenceIndex.build(passages).save(store, "cxr")
    EvidenceIndex.build(passages[:1]).save(store, "private")  # no caller but ALLOWED names it
    tls = Tls(pki.ca, pki.server.cert, pki.server.key)
    (review_port,) = free_ports(1)
    with model_server(tiny_model, "tiny-vlm", log=folder / "model.log", tls=tls) as model:
        settings = server_settings(
            pki,
            store_uri,
            review_port=review_port,
            review_tokens={PROXY: PROXY_TOKEN},
            report_model_url=f"{model.url}/openai/v1",
            report_model_name="tiny-vlm",
            report_model_api_key=model.token,
            report_evidence_index="cxr",
            report={
                "indexes": {ALLOWED: ["*"]},
                "allow": {
                    ALLOWED: ["*"],
                    LIMITED: ["GenerateReport", "GetReport", "ExportReport"],
                    AUDITOR: ["GetReport", "ReadAnyReport", "ReviewReports"],
                    PROXY: ["ReviewReports"],  # a hospital's authenticating proxy
                },
            },
        )
        with running(settings, [BUILDERS["report"](Resources(settings, store))]) as thread:
            assert serving(thread, timeout=600)
            thread.store = store  # type: ignore[attr-defined]  # the service's own store
            yield thread


def stub_for(
    thread: PlatformThread, pki: DevPki, caller: str = ALLOWED
) -> pb_grpc.ReportServiceStub:
    paths = pki.clients[caller]
    return pb_grpc.ReportServiceStub(secure_channel(thread.target, pki.ca, paths.cert, paths.key))


def request(**change: object) -> pb.GenerateReportRequest:
    fields: dict[str, object] = {
        "request_id": "req-1",
        "study_id": "cxr-1",
        "images": [
            pb.ReportImage(image_id="frontal", content=samples.dicom_bytes()),
            pb.ReportImage(image_id="lateral", content=png()),
        ],
        "clinical_context": CONTEXT,
        "max_steps": 3,
        "patient_reference": "Patient/p-1",
        **change,
    }
    return pb.GenerateReportRequest(**fields)  # type: ignore[arg-type]


def generate(
    stub: pb_grpc.ReportServiceStub, message: pb.GenerateReportRequest
) -> tuple[list[common.TraceStep], pb.Report]:
    replies = list(stub.GenerateReport(message, timeout=300))
    assert [r.WhichOneof("event") for r in replies[:-1]] == ["step"] * (len(replies) - 1)
    assert replies[-1].WhichOneof("event") == "report"
    return [r.step for r in replies[:-1]], replies[-1].report


def test_the_pipeline_streams_a_verifiable_trace_and_a_stored_report(
    service: PlatformThread, pki: DevPki
) -> None:
    from fhir.resources.R4B.bundle import Bundle

    stub = stub_for(service, pki)
    message = request()
    steps, report = generate(stub, message)

    # the trace streams in order, each step after the steps it follows from
    assert [s.index for s in steps] == list(range(1, len(steps) + 1))
    seen: set[str] = set()
    for step in steps:
        assert set(step.parent_ids) <= seen, step
        seen.add(step.step_id)
    agents = [s.agent for s in steps]
    assert agents[0] == "perception"
    assert agents[-1] == "verifier"
    order = ["perception", "reasoning", "style", "verifier"]
    assert [order.index(a) for a in agents] == sorted(order.index(a) for a in agents)
    # every tool result answers the call before it, by its id
    calls = {s.tool_call_id: s for s in steps if s.kind == common.STEP_KIND_TOOL_CALL}
    results = [s for s in steps if s.kind == common.STEP_KIND_TOOL_RESULT]
    assert calls
    assert len(results) == len(calls)  # the agent consults a tool at least once
    for result in results:
        call = calls[result.tool_call_id]
        assert result.parent_ids == [call.step_id]
        assert result.tool == call.tool
        assert json.loads(result.result_json)
        assert json.loads(call.arguments_json) is not None
        assert result.status in (common.STEP_STATUS_OK, common.STEP_STATUS_ERROR)

    # every sentence has a verdict; the impression is a section like the others
    sentences = [x for s in report.sections for x in s.sentences]
    assert [s.title for s in report.sections] == ["Findings", "Impression"]
    assert sentences
    assert all(s.verdict != pb.VERDICT_UNSPECIFIED for s in sentences)
    assert all(set(s.finding_ids) <= {f.finding_id for f in report.findings} for s in sentences)
    for citation in (c for s in sentences for c in s.citations):
        assert citation.index_name == "cxr"
        assert citation.index_version
        passage = EVIDENCE[int(citation.passage_id.split("-")[1])]
        assert passage[citation.span.start : citation.span.end] == citation.quote
    p = report.provenance
    assert p.model_endpoint.endswith("/openai/v1")
    assert p.model_version == "tiny-vlm"
    assert p.template_version
    assert p.entity_tree_version
    assert p.request_id == "req-1"
    # DICOM regions name the SOP instance UID, never the caller's label
    for finding in report.findings:
        assert all(r.image_id != "frontal" for r in finding.regions)

    # stored: read back with its trace, exported as FHIR R4
    stored = stub.GetReport(pb.GetReportRequest(report_id=report.report_id), timeout=120)
    assert stored.report == report
    assert [s.step_id for s in stored.trace] == [s.step_id for s in steps]
    exported = stub.ExportReport(pb.ExportReportRequest(report_id=report.report_id), timeout=120)
    bundle = Bundle.model_validate_json(exported.fhir_json)
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds[0] == "DiagnosticReport"
    assert kinds[-1] == "Provenance"
    assert kinds.count("Observation") == len(report.findings)
    # a machine's report waits for a clinician; its subject is the caller's patient
    diagnostic = json.loads(exported.fhir_json)["entry"][0]["resource"]
    assert diagnostic["status"] == "preliminary"
    assert diagnostic["subject"] == {"reference": "Patient/p-1"}
    assert all(e.fullUrl.startswith("urn:uuid:") for e in bundle.entry)

    # a retry returns the stored report; the same id with other content is refused
    again_steps, again = generate(stub, message)
    assert again == report
    assert len(again_steps) == len(steps)
    other = pb.GenerateReportRequest()
    other.CopyFrom(message)
    other.clinical_context = "Another study."
    with pytest.raises(grpc.RpcError) as err:
        generate(stub, other)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "another request" in (err.value.details() or "")


def test_a_report_is_traced_step_by_step_in_the_callers_trace(
    service: PlatformThread, pki: DevPki, spans: Any
) -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    replies = list(
        stub_for(service, pki).GenerateReport(
            request(request_id="traced-1"), timeout=300, metadata=[("traceparent", caller)]
        )
    )
    steps = [r.step for r in replies[:-1]]
    finished = spans.get_finished_spans()
    (rpc,) = [s for s in finished if s.name == "medxiaohe.report.v1.ReportService/GenerateReport"]
    assert f"{rpc.context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert rpc.attributes["rpc.grpc.status_code"] == 0  # OK
    assert rpc.kind.name == "SERVER"
    children = [s for s in finished if s.parent and s.parent.span_id == rpc.context.span_id]
    assert [s.attributes["medxiaohe.step.id"] for s in children] == [s.step_id for s in steps]
    assert {s.name for s in children} >= {"report.perception.observation", "report.style.decision"}
    for span, step in zip(children, steps, strict=True):
        assert span.attributes["medxiaohe.step.agent"] == step.agent
        assert span.end_time - span.start_time == step.duration_ms * 1_000_000
        # names, ids and counts only: nothing the step says (no PHI) is in a span
        assert not step.content or step.content not in str(dict(span.attributes))


def test_a_caller_reads_its_own_reports_and_the_store_holds_no_caller_id(
    service: PlatformThread, pki: DevPki
) -> None:
    """Another hospital system cannot read a report by its id; an auditor granted
    ReadAnyReport can. The store keeps the request, study and image ids as pseudonyms only."""
    import pydicom

    accession, study = "ACC-55123409", samples.dicom_bytes()
    uid = str(pydicom.dcmread(io.BytesIO(study)).SOPInstanceUID)
    image = pb.ReportImage(image_id="frontal", content=study)
    message = request(request_id=accession, study_id=accession, images=[image])
    _, report = generate(stub_for(service, pki), message)
    by_id = pb.GetReportRequest(report_id=report.report_id)
    for rpc in ("GetReport", "ExportReport"):
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub_for(service, pki, LIMITED), rpc)(by_id, timeout=120)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "ReadAnyReport" in (err.value.details() or "")
    audited = stub_for(service, pki, AUDITOR).GetReport(by_id, timeout=120)
    assert audited.report == report  # the ids restored for callers who may read it
    assert report.study_id == accession
    store = open_store(service.platform.settings.store_uri)
    stored = b"".join(store.get_bytes(o.key) for o in store.list(f"reports/{report.report_id}/"))
    assert b"55123409" not in stored
    assert uid.encode() not in stored
    assert any(f.regions for f in audited.report.findings) <= any(
        r.image_id == uid for f in audited.report.findings for r in f.regions
    )


def test_a_caller_names_only_the_indexes_it_was_given(service: PlatformThread, pki: DevPki) -> None:
    message = request(request_id="scoped", evidence_index="private", images=[], max_steps=1)
    with pytest.raises(grpc.RpcError) as err:
        list(stub_for(service, pki, LIMITED).GenerateReport(message, timeout=120))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "default index ('cxr')" in (err.value.details() or "")


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"images": [], "clinical_context": ""}, "INVALID_ARGUMENT", "images or clinical context"),
        ({"template_id": "no-such"}, "NOT_FOUND", "no report template 'no-such'"),
        ({"evidence_index": "no-such"}, "NOT_FOUND", "no evidence index 'no-such'"),
        ({"max_steps": 17}, "INVALID_ARGUMENT", "max_steps must be between 1 and 16"),
        ({"max_steps": -1}, "INVALID_ARGUMENT", "max_steps must be between 1 and 16"),
        (
            {"images": [pb.ReportImage(image_id="x", content=b"\x89PNG broken")]},
            "INVALID_ARGUMENT",
            "image 'x' cannot be decoded",
        ),
        (  # a DICOM deflate bomb: refused before pydicom inflates it
            {"images": [pb.ReportImage(image_id="bomb", content=hostile.deflate_bomb(256))]},
            "INVALID_ARGUMENT",
            "inflates beyond",
        ),
        (  # a few KB each, 36 MP each: over the request's pixel budget together
            {"images": [pb.ReportImage(content=hostile.png(6000, 6000))] * 2},
            "INVALID_ARGUMENT",
            "pixels together",
        ),
        (
            {"images": [pb.ReportImage(uri="uploads/callers/someone-else/a.png")]},
            "PERMISSION_DENIED",
            "the caller's own uploads",
        ),
        ({"request_id": ""}, "INVALID_ARGUMENT", "request_id is required"),
        ({"language": "fr"}, "INVALID_ARGUMENT", "language"),
        ({"patient_reference": "123 Main St"}, "INVALID_ARGUMENT", "patient_reference"),
    ],
)
def test_bad_requests_say_what_is_wrong(
    service: PlatformThread, pki: DevPki, change: dict[str, object], code: str, message: str
) -> None:
    fields = {"request_id": f"bad-{code}-{message[:12]}", **change}
    with pytest.raises(grpc.RpcError) as err:
        list(stub_for(service, pki).GenerateReport(request(**fields), timeout=300))
    assert err.value.code().name == code
    assert message in (err.value.details() or "")


def test_unknown_reports_are_not_found(service: PlatformThread, pki: DevPki) -> None:
    stub = stub_for(service, pki)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetReport(pb.GetReportRequest(report_id="r-0123456789abcdef"), timeout=120)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.ExportReport(pb.ExportReportRequest(report_id="../reports/x"), timeout=120)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_not_serving_until_the_model_answers(pki: DevPki, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    settings = server_settings(
        pki, str(tmp_path / "store"), report_model_url=f"http://127.0.0.1:{port}/openai/v1"
    )
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    with running(settings, [BUILDERS["report"](Resources(settings, store))]) as thread:
        assert not serving(thread, timeout=3)


@pytest.fixture
def web(service: PlatformThread, pki: DevPki) -> Iterator[Callable[..., Any]]:
    """HTTPS clients of the review app (the caller's certificate, a bearer token, or neither),
    closed after the test: an open idle one never answers the server's TLS close, so the
    service's drain waited its whole grace for it."""
    import ssl

    import httpx

    clients: list[httpx.Client] = []

    def client(caller: str = "", token: str = "") -> httpx.Client:
        context = ssl.create_default_context(cafile=str(pki.ca))
        if caller:
            context.load_cert_chain(pki.clients[caller].cert, pki.clients[caller].key)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = service.platform.review_url
        clients.append(httpx.Client(base_url=base, verify=context, headers=headers))
        return clients[-1]

    yield client
    for each in clients:
        each.close()


def test_a_clinician_reviews_and_signs_a_report_in_the_web_app(
    service: PlatformThread, pki: DevPki, web: Callable[..., Any]
) -> None:
    """The worklist and the report page (images, every sentence with its verdict, the trace)
    for a reviewer only; signing stores a version with the change, and the export turns final
    with the signer as results interpreter and attester."""
    import html

    stub = stub_for(service, pki)
    _, report = generate(stub, request(request_id="review-1"))
    rid = report.report_id
    for path in ("/reports", f"/reports/{rid}", f"/reports/{rid}/images/0", "/nothing"):
        nobody = web().get(path)
        assert nobody.status_code == 401  # before anything else: no page, no report id
        assert rid not in nobody.text
    assert web(token="wrong").get("/reports").status_code == 401
    assert web(ALLOWED).get("/reports").status_code == 403  # "*" is no reviewer
    reviewer = web(AUDITOR)
    listing = reviewer.get("/reports")
    assert listing.status_code == 200
    assert f"reports/{rid}" in listing.text
    assert reviewer.get("/reports?status=signed").text.count(f"reports/{rid}") == 0
    page = reviewer.get(f"/reports/{rid}")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    sentences = [x for section in report.sections for x in section.sentences]
    for sentence in sentences:
        assert html.escape(sentence.text, quote=False) in page.text
    assert page.text.count('class="sentence') == len(sentences)
    assert page.text.count('<svg class="study"') == 2  # the DICOM frame and the PNG
    assert reviewer.get(f"/reports/{rid}/images/1").content.startswith(b"\x89PNG")
    assert 'id="trace"' in page.text
    first = report.sections[0]
    change = {"section": first.title, "index": 0, "action": "edit", "after": "Lungs are clear."}
    form = reviewer.post(f"/reports/{rid}/sign", data={"changes": "[]"})
    assert form.status_code == 415  # a cross-site form cannot sign
    signed = reviewer.post(f"/reports/{rid}/sign", json={"changes": [change]})
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "final"
    assert "Lungs are clear." in reviewer.get(f"/reports/{rid}").text
    bad = reviewer.post(f"/reports/{rid}/sign", json={"changes": [{**change, "index": 999}]})
    assert bad.status_code == 400
    fhir = json.loads(stub.ExportReport(pb.ExportReportRequest(report_id=rid)).fhir_json)
    diagnostic = fhir["entry"][0]["resource"]
    assert diagnostic["status"] == "final"
    assert diagnostic["resultsInterpreter"] == [{"display": AUDITOR}]
    provenance = fhir["entry"][-1]["resource"]
    assert {"display": AUDITOR} in [a["who"] for a in provenance["agent"]]
    assert provenance["signature"][0]["who"] == {"display": AUDITOR}
    proxied = web(token=PROXY_TOKEN).get(f"/reports/{rid}")
    assert proxied.status_code == 200
    assert "Signed by <strong>audit-office</strong>" in proxied.text


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "review"


def reviewable_report(service: PlatformThread) -> str:
    """A report written as the pipeline stores it, with what a review page must show: a finding
    with its box, a supported sentence citing a passage, a flagged one with its reason."""
    from medxiaohe.evidence.registry import IndexRegistry
    from medxiaohe.report.images import StudyImage
    from medxiaohe.report.model import (
        Citation,
        Finding,
        Provenance,
        Region,
        Report,
        Section,
        Sentence,
    )  # fmt: skip
    from medxiaohe.report.store import ReportKeys, save_report
    from tests.conftest import SECRET

    store = service.store  # type: ignore[attr-defined]
    index = IndexRegistry(store).get("cxr", "")
    passage = index.passage("cxr-0")
    assert passage is not None
    quote = passage.text[: passage.text.index(".") + 1]
    finding = Finding("f1", "right lower lobe opacity", site="lower lobe", laterality="right",
                      region=Region("frontal", (30, 40, 70, 80)))  # fmt: skip
    findings = Section("Findings", (
        Sentence("Right lower lobe opacity.", ("f1",), (0,), "supported"),
        Sentence("Small left pneumothorax.", (), (), "addition",
                 ("no perceived finding or cited evidence states it",)),
    ))  # fmt: skip
    impression = Section(
        "Impression", (Sentence("Possible pneumonia.", ("f1",), (0,), "supported"),)
    )
    report = Report(
        id="r-" + "b0" * 16, study_id="cxr-9", findings=(finding,),
        sections=(findings, impression),
        provenance=Provenance("req-9", "tiny-vlm", "v0", "met-test", "t1", "0.1.0",
                              {"cxr": index.version}),
        citations=(Citation("cxr", index.version, "cxr-0", 0, len(quote), quote),),
        created="2026-12-07T08:00:00Z", template_id="chest-xray",
    )  # fmt: skip
    image = StudyImage("frontal", Image.new("RGB", (120, 100), (50, 50, 50)))
    keys = ReportKeys(SECRET.encode())
    save_report(store, report, [], keys, ALLOWED, ["req-9", "cxr-9", "frontal"], [image])
    return report.id


def test_the_review_page_in_a_real_browser(service: PlatformThread, pki: DevPki) -> None:
    """Headless Chromium with the reviewer's client certificate: the box on the image, the
    verdicts, a citation opening its passage with the quote marked, an edit, a removed flagged
    sentence, and the signature; screenshots under test-artifacts/review/."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium: `apt-get install chromium` (Debian) runs the browser test")
    from playwright.sync_api import sync_playwright

    rid = reviewable_report(service)
    base = service.platform.review_url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    paths = pki.clients[AUDITOR]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(
            ignore_https_errors=True,  # the development CA is not the browser's
            client_certificates=[
                {"origin": base, "certPath": str(paths.cert), "keyPath": str(paths.key)}
            ],
        )
        page = context.new_page()
        page.goto(f"{base}/reports")
        assert page.locator(f"a[href='reports/{rid}']").count() == 1
        page.click(f"a[href='reports/{rid}']")
        page.wait_for_load_state("networkidle")  # the study image drawn under its box
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        assert page.locator("svg.study rect.box").count() == 1
        assert page.locator("svg.study rect.box title").text_content() == "right lower lobe opacity"
        verdicts = page.locator(".sentence .verdict").all_inner_texts()
        assert verdicts == ["supported", "addition", "supported"]
        assert "no perceived finding" in page.locator(".sentence .reasons").inner_text()
        page.locator(".sentence a.citation").first.click()
        page.wait_for_selector("#quoted")
        assert (
            page.locator("#quoted").inner_text()
            == "Pneumonia often appears as a lobar consolidation."
        )
        page.screenshot(path=str(ARTIFACTS / "citation.png"), full_page=True)
        page.go_back()
        page.once("dialog", lambda dialog: dialog.accept("Right lower lobe consolidation."))
        page.locator(".sentence").nth(0).locator("button[data-action=edit]").click()
        page.locator(".sentence").nth(1).locator("button[data-action=remove]").click()
        assert "2 change(s)" in page.locator("#status").inner_text()
        page.click("#sign")
        page.wait_for_selector("#status:has-text('signed by')")  # the CSP allows no eval
        page.reload(wait_until="networkidle")
        page.screenshot(path=str(ARTIFACTS / "signed.png"), full_page=True)
        assert "Signed by audit-office" in page.locator("#signature").inner_text()
        assert "Right lower lobe consolidation." in page.locator("#sections").inner_text()
        browser.close()
    stub = stub_for(service, pki)  # the report's owner exports it
    fhir = json.loads(stub.ExportReport(pb.ExportReportRequest(report_id=rid)).fhir_json)
    diagnostic = fhir["entry"][0]["resource"]
    assert diagnostic["status"] == "final"
    assert diagnostic["resultsInterpreter"] == [{"display": AUDITOR}]
