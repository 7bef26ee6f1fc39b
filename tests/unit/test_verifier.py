"""The report verifier on hand-written cases for each error type, and the grounding evaluation's
corruptions."""

from __future__ import annotations

from pathlib import Path

from medxiaohe.eval.grounding import flip, swap_sides
from medxiaohe.eval.report import rouge_l
from medxiaohe.report.claims import claims, split_sentences
from medxiaohe.report.model import Report
from medxiaohe.report.verifier import ADDITION, LATERALITY, NEGATION, NOT_CHECKED, SUPPORTED, verify

SOURCE = (
    "Small left pleural effusion. No pneumothorax. Heart size is normal. "
    "Calcified granuloma in the right upper lobe."
)


def verdicts(report: str) -> tuple[list[str], tuple[str, ...]]:
    source = [c for s in split_sentences(SOURCE) for c in claims(s)]
    result = verify(split_sentences(report), source)
    return [s.verdict for s in result.sentences], result.omissions


def test_a_faithful_report_is_supported_throughout() -> None:
    found, omitted = verdicts(
        "There is a small left pleural effusion. There is no pneumothorax. The heart size is "
        "normal. A calcified granuloma is seen in the right upper lobe. Mild degenerative changes"
        " are not mentioned here. Bony structures intact"
    )
    assert found[:4] == [SUPPORTED] * 4
    assert found[-1] == NOT_CHECKED
    assert omitted == ()


def test_each_error_type_is_flagged_as_what_it_is() -> None:
    assert (
        verdicts("Small left pleural effusion. Focal consolidation in the lingula.")[0][1]
        == ADDITION
    )
    assert verdicts("Small left pleural effusion. Small pneumothorax.")[0][1] == NEGATION
    assert verdicts("No pleural effusion.")[0][0] == NEGATION
    assert verdicts("Small right pleural effusion.")[0][0] == LATERALITY
    assert verdicts("Heart size is enlarged.")[0][0] == NEGATION
    _, omitted = verdicts("No pneumothorax. Heart size is normal.")
    assert set(omitted) == {"pleural effusion", "granuloma"}


def test_the_corruptions_change_what_they_claim() -> None:
    negated = "There is no pleural effusion."
    assert claims(flip(negated) or "")[0].assertion == "present"
    assert claims(flip("There is a small pleural effusion.") or "")[0].assertion == "negated"
    assert flip("Bony structures are intact.") is None  # no observation to flip
    assert swap_sides("Left effusion, right granuloma.") == "Right effusion, left granuloma."
    assert rouge_l("no acute disease", "no acute disease") == 1.0
    assert 0 < rouge_l("there is no pneumothorax", "there is pneumothorax") < 1


def test_report_metrics_score_words_and_clinical_content(tmp_path: Path) -> None:
    import json

    import pytest

    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.eval.report import evaluate, read_reports

    refs = {"1": "No pneumothorax. Small left pleural effusion.", "2": "Heart size is normal."}
    same = evaluate(refs, refs)
    assert same["overall"] == {"bleu4": 1.0, "rouge_l": 1.0, "entity_f1": 1.0}
    flipped = evaluate(
        {"1": "Small pneumothorax. Small left pleural effusion.", "2": refs["2"]}, refs
    )
    assert flipped["overall"]["entity_f1"] < 1.0  # one assertion wrong
    assert flipped["per_report"][1]["entity_f1"] == 1.0
    path = tmp_path / "pred.jsonl"
    path.write_text("\n".join(json.dumps({"id": k, "report": v}) for k, v in refs.items()))
    assert read_reports(path) == refs
    with pytest.raises(InvalidInput, match="no prediction"):
        evaluate({"1": refs["1"]}, refs)


def sample_report() -> Report:
    from medxiaohe.report.model import Finding, Provenance, Region, Section, Sentence

    findings = (
        Finding(
            "f1",
            "lower lobe opacity",
            "present",
            "lung",
            "left",
            Region("1.2.3.4", (10, 20, 60, 80)),
        ),
        Finding("f2", "pneumothorax", "absent"),
    )
    report = Report(
        id="r-1",
        study_id="s-1",
        findings=findings,
        sections=(
            Section("Findings", (Sentence("Left lower lobe opacity.", ("f1",), (), "supported"),)),
            Section("Impression", (Sentence("Possible pneumonia.", ("f1",)),)),
        ),
        provenance=Provenance(
            "req-1",
            "https://model:8080/openai/v1",
            "tiny-1",
            "met-7",
            "cxr-2",
            "0.1.0",
            {"rare": "v3"},
        ),
        created="2026-12-02T07:00:00Z",
    )
    return report


def test_a_report_exports_as_validated_fhir_r4() -> None:
    import base64
    import dataclasses

    import pytest
    from fhir.resources.R4B.bundle import Bundle

    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.report.fhir import PARTICIPANT_TYPE, VERDICT_EXTENSION, to_fhir
    from medxiaohe.report.model import Region, Section, Sentence

    report = sample_report()
    bundle = to_fhir(report)
    parsed = Bundle.model_validate(bundle)  # valid R4
    kinds = [e.resource.get_resource_type() for e in parsed.entry]
    assert kinds == ["DiagnosticReport", "Observation", "Observation", "Provenance"]
    diagnostic, left, absent, provenance = (e["resource"] for e in bundle["entry"])
    # a machine never signs: everything waits for a clinician
    assert {r["status"] for r in (diagnostic, left, absent)} == {"preliminary"}
    assert "subject" not in diagnostic  # the request gave no patient reference
    assert diagnostic["conclusion"] == "Possible pneumonia."
    # entries are urn:uuid, stable across exports, and refer to each other by them
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert all(u.startswith("urn:uuid:") for u in urls)
    assert len(set(urls)) == 4
    assert [e["fullUrl"] for e in to_fhir(report)["entry"]] == urls
    assert [r["reference"] for r in diagnostic["result"]] == urls[1:3]
    assert [t["reference"] for t in provenance["target"]] == urls[:3]
    assert (
        "Left lower lobe opacity."
        in base64.b64decode(diagnostic["presentedForm"][0]["data"]).decode()
    )
    assert left["bodySite"]["text"] == "left lung"
    assert "1.2.3.4" in left["note"][0]["text"]
    assert absent["interpretation"][0]["coding"][0]["code"] == "NEG"
    codes = [c for a in provenance["agent"] for c in a["type"]["coding"]]
    assert {c["system"] for c in codes} == {PARTICIPANT_TYPE}
    assert {c["code"] for c in codes} == {"author", "performer", "composer", "verifier"}
    assert any("rare v3" in e["what"]["display"] for e in provenance["entity"])
    # each sentence's verdict travels in the documented extension
    verdicts = [
        {p["url"]: p.get("valueCode", p.get("valueString")) for p in x["extension"]}
        for x in diagnostic["extension"]
        if x["url"] == VERDICT_EXTENSION
    ]
    assert [(v["text"], v["verdict"]) for v in verdicts] == [
        ("Left lower lobe opacity.", "supported"),
        ("Possible pneumonia.", "not_checked"),
    ]

    # a flagged impression sentence never reaches the conclusion; the subject is the caller's
    flagged = Sentence("Right pneumothorax.", (), (), "addition", ("not in the source",))
    impression = Section("Impression", (flagged, Sentence("Possible pneumonia.", ("f1",))))
    report = dataclasses.replace(
        report, sections=(report.sections[0], impression), subject="Patient/p-7"
    )
    diagnostic = to_fhir(report)["entry"][0]["resource"]
    assert diagnostic["conclusion"] == "Possible pneumonia."
    assert diagnostic["subject"] == {"reference": "Patient/p-7"}
    reasons = [
        p["valueString"]
        for x in diagnostic["extension"]
        for p in x["extension"]
        if p["url"] == "reason"
    ]
    assert reasons == ["not in the source"]
    with pytest.raises(InvalidInput):
        Region("x", (50, 0, 10, 10))


def test_reports_are_stored_once_per_request(tmp_path: Path) -> None:
    import dataclasses

    import pytest

    from medxiaohe.common.errors import Conflict, NotFound
    from medxiaohe.report.store import (
        ReportKeys,
        find_report,
        load_report,
        report_id,
        report_owner,
        save_report,
    )
    from medxiaohe.storage import open_store

    store = open_store(str(tmp_path))
    key = b"k" * 32
    keys = ReportKeys(key)
    report = dataclasses.replace(sample_report(), id=report_id(key, "ris", "req-1"))
    assert report_id(key, "ris", "req-1") == report.id != report_id(key, "pacs", "req-1")
    assert report.id != report_id(b"other-key" * 4, "ris", "req-1")  # keyed, not a plain hash
    trace = [{"id": "s1", "agent": "perception", "kind": "findings", "content": "see 1.2.3.4"}]
    ids = ["req-1", "s-1", "1.2.3.4"]
    prefix = save_report(store, report, trace, keys, "ris", ids)
    assert prefix == f"reports/{report.id}"
    assert save_report(store, report, trace, keys, "ris", ids) == prefix  # nothing new
    assert load_report(store, report.id, keys) == (report, trace)  # the owner's ids back
    assert report_owner(store, report.id) == keys.owner("ris") != keys.owner("pacs")
    other = dataclasses.replace(report, template_id="generic")
    with pytest.raises(Conflict):
        save_report(store, other, trace, keys, "ris", ids)
    assert find_report(store, "r-unknown") is None
    with pytest.raises(NotFound):
        load_report(store, "r-unknown")


def test_stored_reports_hold_the_callers_ids_only_as_keyed_pseudonyms(tmp_path: Path) -> None:
    """Request ids are often accession numbers and image ids are SOP instance UIDs: neither is
    in any stored byte (report, trace, FHIR export, manifest); the encrypted map gives them back
    only with the secret."""
    import dataclasses

    import pytest

    from medxiaohe.common.errors import Unavailable
    from medxiaohe.report.store import ReportKeys, load_report, save_report
    from medxiaohe.storage import open_store

    store = open_store(str(tmp_path))
    keys = ReportKeys(b"k" * 32)
    accession, uid = "ACC-77120045", "1.2.840.113619.2.55.3.77120045"
    base = sample_report()
    finding = dataclasses.replace(
        base.findings[0], region=dataclasses.replace(base.findings[0].region, image_id=uid)
    )
    report = dataclasses.replace(
        base,
        study_id=accession,
        findings=(finding, *base.findings[1:]),
        provenance=dataclasses.replace(base.provenance, request_id=accession),
    )
    trace = [{"id": "s1", "arguments": {"image_id": uid}, "content": f"zoom on {uid}#1"}]
    save_report(store, report, trace, keys, "ris", [accession, uid])
    stored = b"".join(store.get_bytes(o.key) for o in store.list("reports/"))
    assert b"77120045" not in stored
    assert b"ACC-" not in stored
    assert stored.count(keys.pseudonym(uid).encode()) >= 3
    as_stored, stored_trace = load_report(store, report.id)  # what an export reads
    assert as_stored.study_id == keys.pseudonym(accession)
    assert stored_trace[0]["content"] == f"zoom on {keys.pseudonym(uid)}#1"
    assert load_report(store, report.id, keys) == (report, trace)
    with pytest.raises(Unavailable, match="cannot be decrypted"):
        load_report(store, report.id, ReportKeys(b"another secret" * 3))
