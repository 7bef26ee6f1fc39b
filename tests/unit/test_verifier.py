"""The report verifier on hand-written cases for each verdict kind, the grounding evaluation's
rewrites and pairs, and the FHIR export of reports."""

from __future__ import annotations

from pathlib import Path

from medxiaohe.eval.report import rouge_l
from medxiaohe.radiology.verification import (
    ADDITION,
    CONTRADICTED,
    LATERALITY,
    LOCATION,
    NEGATION,
    NOT_CHECKED,
    SEVERITY,
    SUPPORTED,
    UNSUPPORTED,
    verify,
)
from medxiaohe.report.model import Report

SOURCE = (
    "Small left pleural effusion. No pneumothorax. Heart size is normal. "
    "Calcified granuloma in the right upper lobe. A 6 mm nodule in the left lower lobe."
)


def kinds(candidate: str) -> list[str | None]:
    return [s.kind or s.verdict for s in verify(SOURCE, candidate).sentences]


def test_a_paraphrase_is_supported_throughout() -> None:
    result = verify(
        SOURCE,
        "The heart is not enlarged. There is a small left-sided pleural fluid collection. "
        "A calcified granulomatous nodule is seen in the right upper lung zone. "
        "There is no pneumothorax or pleural effusion on the right. "
        "A 5 mm left lower lobe nodular opacity. PA and lateral views of the chest.",
    )
    assert [s.verdict for s in result.sentences] == [SUPPORTED] * 5 + [NOT_CHECKED]
    assert result.omissions == ()


def test_each_error_is_flagged_as_what_it_is() -> None:
    assert kinds("Focal consolidation in the lingula.") == [ADDITION]
    assert kinds("Small pneumothorax.") == [NEGATION]
    assert kinds("No pleural effusion.") == [NEGATION]
    assert kinds("The heart is enlarged.") == [NEGATION]
    assert kinds("Small right pleural effusion.") == [LATERALITY]
    assert kinds("Calcified granuloma in the right lower lobe.") == [LOCATION]
    assert kinds("Large left pleural effusion.") == [SEVERITY]
    assert kinds("A 2 cm nodule in the left lower lobe.") == [SEVERITY]  # the size
    # a word no vocabulary names is still checked, against the source's words
    assert kinds("There is an azygous fissure.") == [ADDITION]
    # the other side predominating, of a finding on both sides
    bibasilar = "Bibasilar opacities, right greater than left."
    assert (
        verify(bibasilar, "Left-sided greater than right bibasilar densities.").sentences[0].kind
        == LATERALITY
    )
    assert verify(bibasilar, "Bibasilar opacities.").sentences[0].verdict == SUPPORTED
    resolved = "Interval resolution of the left pleural effusion."
    assert verify(resolved, "Resolution of the right effusion.").sentences[0].kind == LATERALITY
    # technique is a claim too
    assert kinds("The patient is rotated.") == [ADDITION]
    # a claim against a denial the candidate keeps is added, not the source's statement flipped
    assert kinds("No pneumothorax. Small pneumothorax at the apex.") == [SUPPORTED, ADDITION]
    assert kinds("Heart size is normal. The heart is enlarged.") == [SUPPORTED, ADDITION]
    result = verify(SOURCE, "Small pneumothorax.")
    assert result.sentences[0].verdict == CONTRADICTED
    assert "no pneumothorax" in result.sentences[0].reasons[0]
    assert verify(SOURCE, "Focal consolidation.").sentences[0].verdict == UNSUPPORTED


def test_normal_statements_are_claims_too() -> None:
    assert kinds("The lungs are clear.") == [SUPPORTED]  # a granuloma does not make them unclear
    assert kinds("No acute cardiopulmonary abnormality.") == [NEGATION]  # the effusion
    assert verify("Right lower lobe pneumonia.", "Lungs are clear.").sentences[0].kind == NEGATION
    assert verify("Lungs are clear.", "Right lower lobe pneumonia.").sentences[0].kind == ADDITION
    assert verify("No consolidation.", "Right lower lobe pneumonia.").sentences[0].kind == NEGATION


def test_the_verifier_bounds_its_work() -> None:
    """The largest pair it takes is verified (the limit only catches a hang); a larger one is
    refused before any work."""
    import time

    import pytest

    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.radiology.verification import MAX_REPORT_CHARS

    reference = ("Small left effusion, right upper lobe opacity. " * 500)[:MAX_REPORT_CHARS]
    candidate = ("Large right effusion, left lower lobe opacity. " * 500)[:MAX_REPORT_CHARS]
    started = time.perf_counter()
    result = verify(reference, candidate)
    assert time.perf_counter() - started < 120
    assert all(s.flagged for s in result.sentences[:-1])
    with pytest.raises(InvalidInput, match="longer than"):
        verify(reference, candidate + " More.")


def test_omissions_are_present_source_findings_the_candidate_leaves_out() -> None:
    result = verify(SOURCE, "No pneumothorax. Heart size is normal. Right upper lobe opacity.")
    omitted = [(o.text, SOURCE[o.start : o.end]) for o in result.omissions]
    assert [t for t, _ in omitted] == [
        "Small left pleural effusion",
        "Calcified granuloma in the right upper lobe",  # an opacity is no granuloma
        "6 mm nodule in the left lower lobe",
    ]
    assert all(text == span for text, span in omitted)  # offsets into the reference
    # what a sentence contradicts is reported there, not again as an omission
    result = verify(SOURCE, "Small right effusion. Calcified granuloma, right upper lobe.")
    assert result.sentences[0].kind == LATERALITY
    assert [o.text for o in result.omissions] == ["6 mm nodule in the left lower lobe"]


def test_the_rewrites_change_what_they_say() -> None:
    import random

    from medxiaohe.eval.rewrite import flip, join_lists, paraphrase, swap_location, swap_sides

    assert flip("There is no pleural effusion.") == "There is pleural effusion."
    assert flip("There is a small pleural effusion.") == "There is no small pleural effusion."
    assert flip("No change from prior.") is None  # not a finding
    assert swap_sides("Left effusion, right granuloma.") == "Right effusion, left granuloma."
    assert swap_sides("No left effusion.") is None  # a denial on the other side is no error
    assert swap_location("Opacity in the left upper lobe.") == "Opacity in the left lower lobe."
    assert join_lists(["No effusion.", "No pneumothorax.", "Normal heart."]) == [
        ("No effusion or pneumothorax.", (0, 1)),
        ("Normal heart.", (2,)),
    ]
    rng = random.Random(3)
    assert {paraphrase("There is no pleural effusion.", rng) for _ in range(20)} != {
        "There is no pleural effusion."
    }
    assert rouge_l("no acute disease", "no acute disease") == 1.0


def test_grounding_pairs_mark_their_error(tmp_path: Path) -> None:
    from medxiaohe.eval.grounding import build_pairs, score_verifier
    from medxiaohe.radiology.verification import Verifier

    reports = [
        ("1", ["Small left pleural effusion.", "No pneumothorax.", "Heart size is normal."]),
        ("2", ["Calcified granuloma in the right upper lobe.", "Lungs are otherwise clear."]),
        ("3", ["Mild degenerative changes of the thoracic spine.", "No acute disease."]),
    ]
    pairs = build_pairs(reports, seed=5)
    assert {p.kind for p in pairs} >= {"none", "negation", "laterality", "addition"}
    for pair in pairs:
        if pair.kind in ("none", "omission"):
            continue
        assert pair.target is not None
        injected = pair.candidate[pair.target[0] : pair.target[1]]
        assert injected not in pair.reference  # the error changed the sentence
    result = score_verifier(pairs, Verifier()).result()
    assert result["negation"]["n"] == 3
    assert 0.0 <= result["false_alarm_rate"] <= 1.0


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


def test_medxiaohe_verify_reads_pairs_and_writes_verdicts(tmp_path: Path) -> None:
    """`medxiaohe verify`: one output row per input row, sentence offsets into the candidate,
    omission offsets into the reference, a malformed row as an error, with the tree's concepts
    when one is published."""
    import json

    from typer.testing import CliRunner

    from medxiaohe_services.cli import app
    from tests.conftest import publish_small_tree

    store = str(tmp_path / "store")
    publish_small_tree(store)
    candidate = "No pneumothorax.  Large right pleural effusion. Mild cardiomegaly."
    rows = [
        {"id": "a", "reference": SOURCE, "candidate": candidate},
        {"id": 7, "reference": "Lungs are clear.", "candidate": "Lungs are clear."},
        {"id": "c", "reference": SOURCE},
    ]
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "verified.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    command = ["verify", "--pairs", str(pairs), "--out", str(out), "--store", store]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.rindex('{"rows"') :].splitlines()[0])
    assert summary["rows"] == 4
    assert summary["errors"] == 2
    assert summary["met"]  # the small tree
    assert summary["decided_share"] == 1.0
    verified = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v.get("id") for v in verified] == ["a", 7, None, None]
    first = verified[0]
    assert [(s["verdict"], s["kind"]) for s in first["sentences"]] == [
        ("supported", None),
        ("contradicted", "laterality"),
        ("unsupported", "addition"),  # a finding the source rules out only by a normal statement
    ]
    assert "no abnormal heart" in first["sentences"][2]["reasons"][0]
    for sentence in first["sentences"]:
        assert candidate[sentence["start"] : sentence["end"]] == sentence["text"]
        assert set(sentence) == {"start", "end", "text", "verdict", "kind", "reasons"}
    for omission in first["omissions"]:
        assert SOURCE[omission["start"] : omission["end"]] == omission["text"]
    assert [o["text"] for o in first["omissions"]][:1] == [
        "Calcified granuloma in the right upper lobe"  # the effusion is contradicted instead
    ]
    assert verified[1]["omissions"] == []
    assert "candidate must be a string" in verified[2]["error"]
    assert "line 4" in verified[3]["error"]
