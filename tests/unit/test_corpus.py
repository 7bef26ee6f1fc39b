"""Readers on valid and malformed input, de-identification, filters and dedup."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus import readers, samples
from medxiaohe.corpus.deid import Phi, deidentify, find_phi
from medxiaohe.corpus.dicom import read_dicom
from medxiaohe.corpus.ingest import read_blob
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.steps import Dedup, MemoryIndex, QualityFilter
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.eval.deid import generate_notes, score


def test_text_and_jsonl() -> None:
    assert read_blob("a.txt", b"fever and cough")[0].text == "fever and cough"
    assert "UTF-8" in read_blob("a.txt", b"\xff\xfe")[0].dropped
    rows = read_blob("c.jsonl", b'{"id": "x", "text": "t1"}\n\n{"text": 3}\nnot json\n')
    assert [(r.id, r.dropped[:6]) for r in rows] == [
        ("x", ""),
        ("c:3", "line 3"),
        ("c:4", "line 4"),
    ]


def test_fhir_bundle_and_errors() -> None:
    records = readers.read_fhir(json.dumps(samples.fhir_bundle()).encode())
    assert [r.id for r in records] == ["Condition/c1", "DiagnosticReport/r1"]
    assert "intracranial hemorrhage" in records[1].text  # the base64 text attachment
    assert records[0].patient_key == records[1].patient_key != ""
    assert "Sorrel Amberline" in records[1].known_phi
    with pytest.raises(InvalidInput, match="not JSON"):
        readers.read_fhir(b"{")
    with pytest.raises(InvalidInput, match="unknown FHIR resource type"):
        readers.read_fhir(
            json.dumps(
                {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Nope"}}]}
            ).encode()
        )
    with pytest.raises(InvalidInput, match="invalid FHIR Condition"):
        readers.read_fhir(json.dumps({"resourceType": "Condition", "code": 5}).encode())


def test_hl7_with_any_line_endings_and_errors() -> None:
    for ending in ("\r", "\n", "\r\n"):
        record = readers.read_hl7(samples.HL7.replace("\r", ending))
        assert record.id == "hl7:MSG00017"
        assert "right lower lobe" in record.text
        assert "Idris Pellworth" in record.known_phi
    with pytest.raises(InvalidInput, match="ORU"):
        readers.read_hl7(samples.HL7.replace("ORU^R01", "ADT^A01"))
    with pytest.raises(InvalidInput, match="MSH"):
        readers.read_hl7("PID|1")


def test_dicom_is_deidentified_and_rendered() -> None:
    record = read_dicom(samples.dicom_bytes(), "study-1")
    assert record.attachments["image.png"].startswith(b"\x89PNG")
    assert record.metadata["Modality"] == "CR"
    assert record.kind == "study"
    assert record.patient_key  # pseudonym of the original PatientID
    with pytest.raises(InvalidInput, match="not a DICOM"):
        read_dicom(b"not dicom at all" * 10, "bad")


def test_dicom_headers_lose_identifiers() -> None:
    from dicognito.anonymizer import Anonymizer

    dataset = pydicom.dcmread(io.BytesIO(samples.dicom_bytes()))
    Anonymizer(seed="medxiaohe").anonymize(dataset)
    assert "Pellworth" not in str(dataset.PatientName)
    assert dataset.PatientID != "77120045"
    assert dataset.InstitutionName != "General Hospital"


def test_image_caption() -> None:
    record = readers.read_image_caption(samples.png_bytes(), "a nodule", "img")
    assert record.attachments["image.png"]
    assert record.text == "a nodule"
    with pytest.raises(InvalidInput, match="PNG or JPEG"):
        readers.read_image_caption(b"GIF89a....", "x", "img")


def test_deidentification_shifts_dates_consistently_per_patient() -> None:
    text = "Seen 03/14/2024 and again 2024-03-20 by Dr. Amara Quist, MRN 48213377."
    out_a, spans = deidentify(text, "secret", "patient-a")
    out_a2, _ = deidentify(text, "secret", "patient-a")
    out_b, _ = deidentify(text, "secret", "patient-b")
    assert out_a == out_a2
    assert out_a != out_b
    assert "Quist" not in out_a
    assert "48213377" not in out_a
    assert "03/14/2024" not in out_a
    assert {s.type for s in spans} == {Phi.DATE, Phi.NAME, Phi.ID}
    # the interval between the two dates survives the shift
    import datetime as dt

    first, second = out_a.split("Seen ")[1].split(" and again ")
    second = second.split(" ")[0]
    gap = dt.date.fromisoformat(second) - dt.datetime.strptime(first, "%m/%d/%Y").date()
    assert gap.days == 6


def test_phi_recall_on_the_synthetic_set() -> None:
    notes = generate_notes()
    assert len(notes) >= 200
    result = score(notes, lambda n: find_phi(n.text, [n.patient_name]))
    assert result["all"]["recall"] >= 0.95
    assert result["all"]["precision"] >= 0.9
    for kind in ("DATE", "ID", "PHONE", "EMAIL", "AGE", "ADDRESS"):
        assert result[kind]["recall"] >= 0.9, (kind, result[kind])


def test_quality_filter_reasons() -> None:
    check = QualityFilter()
    assert check.reason(Record("a", "s", "ok")) == "fewer than 3 words"
    assert "letters" in check.reason(Record("b", "s", "12 34 56 78 90 11 22"))
    assert "repeated" in check.reason(Record("c", "s", "same line here\n" * 6))
    assert check.reason(Record("d", "s", "", kind="study")) == ""
    assert check.reason(Record("e", "s", "Fever and cough for three days.")) == ""


def test_dedup_exact_and_near_duplicates() -> None:
    base = (
        "Frontal and lateral views of the chest show patchy opacity in the right lower lobe "
        "concerning for pneumonia with a small right pleural effusion. The cardiomediastinal "
        "silhouette is within normal limits. No pneumothorax is seen. The osseous structures "
        "are intact. Degenerative changes of the thoracic spine are noted. Recommend follow up "
        "radiographs in six weeks to document resolution of the consolidation."
    )
    records = [
        Record("1", "s", base),
        Record("2", "s", base.upper()),  # same after normalization
        Record("3", "s", base.replace("six weeks", "4 weeks")),  # near duplicate
        Record("4", "s", "Normal chest radiograph without focal consolidation or effusion today."),
    ]
    out = {r.id: r.dropped for r in Dedup().run(records)}
    assert out["1"] == ""
    assert out["4"] == ""
    assert out["2"] == "exact duplicate"
    assert out["3"].startswith("near duplicate of")
    stored = MemoryIndex(stored=[Record("x", "s", base).content_hash])
    assert next(iter(Dedup(index=stored).run([Record("5", "s", base)]))).dropped == (
        "exact duplicate"
    )
    # a redelivered shard keeps what its first attempt kept; the same records in another
    # shard (sent again) are duplicates
    dedup = Dedup(shard="a")
    first = [r.dropped for r in dedup.run([Record(r.id, r.source, r.text) for r in records])]
    again = [r.dropped for r in dedup.run([Record(r.id, r.source, r.text) for r in records])]
    assert again == first
    dedup.shard = "b"
    assert all(r.dropped for r in dedup.run([Record(r.id, r.source, r.text) for r in records]))


def test_near_copies_in_the_faults_corpus_are_near_at_every_order(tmp_path: Path) -> None:
    """Every two documents of a cluster of the reliability benchmark's corpus, as the readers
    give them, estimate at or over the threshold, so dedup keeps one whatever the order. (At
    128 permutations one pair of near copies, true 3-gram Jaccard 0.89, estimated 0.797: a
    single process kept it twice when both came before their original.)"""
    from itertools import combinations

    from benchmarks.faults import cluster_of, write_corpus
    from medxiaohe.corpus.steps import NUM_PERM, THRESHOLD, minhash_of

    corpus = write_corpus(tmp_path, 240)
    texts: dict[int | None, set[str]] = {}
    for path in tmp_path.iterdir():
        for record in read_blob(path.name, path.read_bytes()):
            texts.setdefault(cluster_of(record.text), set()).add(record.text)
    assert None not in texts
    assert len(texts) == corpus.clusters
    pairs = [
        pair
        for cluster in texts.values()
        for pair in combinations([minhash_of(t, NUM_PERM, 3) for t in cluster], 2)
    ]
    assert len(pairs) > 20
    assert min(a.jaccard(b) for a, b in pairs) >= THRESHOLD


def test_the_ingest_benchmarks_pipelines_write_their_shards(tmp_path: Path) -> None:
    """Both of `medxiaohe bench ingest`'s runs of ours reach the shard writer, which refuses
    what did not pass de-identification (the equivalent-steps run, without it, once failed)."""
    from benchmarks.ingest import _ours, equivalent_steps
    from medxiaohe.corpus.steps import Deidentify

    jsonl = tmp_path / "in.jsonl"
    text = "Patient with fever and cough for {} days; chest radiograph shows an opacity."
    rows = [{"id": str(i), "text": text.format(i)} for i in range(5)]
    jsonl.write_text("\n".join(json.dumps(row) for row in rows))
    for steps in (equivalent_steps(), [Deidentify("s"), *equivalent_steps()[1:]]):
        assert _ours(jsonl, steps)[1] >= 1


def test_no_phi_found_in_public_deidentified_reports() -> None:
    """IU X-ray reports carry no identifiers: anything found there is a false positive."""
    import csv

    from tests.conftest import shared_data

    with shared_data("iu_xray/reports_train_val.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    found = [
        span
        for row in rows
        for span in find_phi(" ".join(row[k] for k in ("indication", "findings", "impression")))
    ]
    assert len(rows) > 2000
    assert len(found) <= len(rows) // 200, found[:10]


def test_coverage_is_kept_up_to_date_without_reading_every_shard_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shard's counts are read once; a shard written here counts at once, one written
    elsewhere after the next listing; the totals equal a full recount."""
    from medxiaohe.corpus import shards
    from medxiaohe.corpus.shards import CoverageCache, dataset_coverage, write_shard
    from medxiaohe.entities.build import build_tree
    from medxiaohe.storage import open_store
    from tests.conftest import small_records, write_corpus

    store = open_store(str(tmp_path / "store"))
    tree = build_tree(small_records())
    write_corpus(store, tree, shards=3, per_shard=20)
    reads: list[str] = []
    real = shards.read_file

    def counted(store_: object, manifest: object, name: str) -> bytes:
        reads.append(manifest.version)  # type: ignore[attr-defined]
        return real(store_, manifest, name)  # type: ignore[arg-type]

    monkeypatch.setattr(shards, "read_file", counted)
    cache = CoverageCache(store, "corpus", refresh_s=3600)
    first = cache.counts().to_json()
    assert sorted(reads) == ["s000", "s001", "s002"]
    reads.clear()
    assert cache.counts().to_json() == first
    assert reads == []  # nothing read again
    record = Record("new", "notes", "Marfan syndrome with lens luxation.")
    record.mentions = DictionaryTagger(tree).tag(record.text)
    record.seal()
    write_shard(store, "corpus", "s003", [record])
    assert cache.counts().to_json() == first  # not listed yet
    cache.add("s003")  # this process wrote it
    assert reads == ["s003"]
    assert cache.counts().to_json() == dataset_coverage(store, "corpus").to_json() != first
