"""Each PHI and bounded-input control of the corpus library, on hand-made hostile input."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import time
from pathlib import Path

import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.secrets import check_secret, home_secret, pseudonym
from medxiaohe.corpus import deid, samples
from medxiaohe.corpus.dicom import MAX_INFLATED, read_dicom
from medxiaohe.corpus.ingest import read_blob
from medxiaohe.corpus.readers import clean_image, read_hl7
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.shards import write_shard
from medxiaohe.corpus.steps import LengthCap
from medxiaohe.storage import open_store
from tests import hostile

SECRET = "s" * 40


def test_pseudonyms_are_keyed_and_full_length() -> None:
    mrn = "48213377"
    key = pseudonym(SECRET, mrn)
    assert len(key) == 64
    assert key != hashlib.sha256(mrn.encode()).hexdigest()  # not a plain hash
    assert key != pseudonym("t" * 40, mrn)  # another secret, another pseudonym
    assert key == pseudonym(SECRET, mrn)  # stable


def test_a_short_secret_is_refused_and_the_home_generates_one(tmp_path: Path) -> None:
    for weak in ("", "development-only", "a" * 64, "password" * 8, "0123456789" * 4):
        with pytest.raises(InvalidInput, match="at least 32 bytes and 128 bits"):
            check_secret(weak)
    first = home_secret(tmp_path)
    assert len(first) >= 32
    assert home_secret(tmp_path) == first
    secret_file = next((tmp_path / "secrets").iterdir())
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


# Each de-identification rule with the input that made it (or its neighbours) backtrack.
WORST_CASES = ["Ab ", "1.", "A-", "Ab-Cd ", "a.", "9 ", "12 ", "a@a.", "Ab, ", "Patient Ab "]


@pytest.mark.parametrize("rule", range(len(deid._RULES)))
def test_every_rule_runs_in_linear_time_on_a_megabyte(rule: int) -> None:
    """1 MB of each worst case: a quadratic rule takes hours here (24 KB of "Ab Ab" took 3 s
    before the fix); a linear one under 2 s even on a busy machine. The bound only catches the
    former, so a slow CI machine cannot fail it."""
    _, pattern, _ = deid._RULES[rule]
    slowest = 0.0
    for unit in WORST_CASES:
        text = unit * ((1 << 20) // len(unit))
        start = time.perf_counter()
        sum(1 for _ in pattern.finditer(text))
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 20.0, f"rule {rule} took {slowest:.1f} s on 1 MB"


def test_the_length_cap_runs_before_de_identification() -> None:
    (record,) = LengthCap(max_chars=10).run([Record(id="r", source="t", text="x" * 11)])
    assert record.dropped == "longer than 10 characters"
    assert record.text == ""


def test_metadata_is_allow_listed_and_de_identified() -> None:
    cleaned = deid.clean_metadata(
        {
            "patient_name": "Ada Lovelace",
            "phone": "617-555-0142",
            "specialty": "Cardiology, seen by Dr. Ada Lovelace on 2024-03-02",
            "StudyDescription": "CT for Lovelace",
        },
        SECRET,
        known=["Ada Lovelace"],
    )
    assert set(cleaned) == {"specialty", "StudyDescription"}
    assert "Lovelace" not in json.dumps(cleaned)
    assert "2024-03-02" not in cleaned["specialty"]


def test_sources_and_licences_are_allow_listed_or_pseudonymized() -> None:
    from medxiaohe.corpus.steps import Deidentify

    caller = Record(id="r", source="Lovelace-48213377", text="Seen.", licence="Ada's own")
    public = Record(id="p", source="pubmed", text="Seen.", licence="CC-BY-4.0")
    stored = list(Deidentify(SECRET).run([caller, public]))
    assert stored[0].source == deid.stored_label("Lovelace-48213377", SECRET, "source")
    assert stored[0].source.startswith("source-")
    assert "Lovelace" not in stored[0].source + stored[0].licence
    assert (stored[1].source, stored[1].licence) == ("pubmed", "CC-BY-4.0")


def test_images_are_re_encoded_without_metadata() -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "Ada Lovelace MRN 123")
    png = io.BytesIO()
    Image.open(io.BytesIO(samples.png_bytes())).save(png, format="PNG", pnginfo=info)
    exif = Image.Exif()
    exif[0x013B] = "Ada Lovelace"
    jpeg = io.BytesIO()
    Image.new("RGB", (32, 32)).save(jpeg, format="JPEG", exif=exif.tobytes())
    for data in (png.getvalue(), jpeg.getvalue()):
        assert b"Lovelace" in data
        clean, _ = clean_image(data)
        assert b"Lovelace" not in clean
        assert Image.open(io.BytesIO(clean)).size == Image.open(io.BytesIO(data)).size
    with pytest.raises(InvalidInput, match="pixels"):
        clean_image(hostile.png(8000, 8000))  # 64 M pixels, a few KB


def test_dicom_that_may_show_burned_in_text_is_quarantined() -> None:
    assert read_dicom(hostile.dicom(Modality="SC"), "a").quarantine.startswith("modality SC")
    assert read_dicom(hostile.dicom(BurnedInAnnotation="YES"), "a").quarantine
    assert not read_dicom(hostile.dicom(Modality="SC", BurnedInAnnotation="NO"), "a").quarantine
    assert not read_dicom(hostile.dicom(), "a").quarantine  # CR without the tag


def test_dicom_header_identifiers_feed_the_deny_list() -> None:
    record = read_dicom(
        hostile.dicom(PatientName="Vantreel^Quillon", AccessionNumber="ACC991"), "a"
    )
    assert {"Vantreel Quillon", "Vantreel", "Quillon", "ACC991"} <= set(record.known_phi)
    text, _ = deid.deidentify("Quillon tolerated the exam", SECRET, known=record.known_phi)
    assert "Quillon" not in text


def test_dicom_pixel_descriptions_are_checked_before_decoding() -> None:
    with pytest.raises(InvalidInput, match="pixels"):
        read_dicom(hostile.dicom(Rows=60000, Columns=60000), "a")
    with pytest.raises(InvalidInput, match="frames"):
        read_dicom(hostile.dicom(NumberOfFrames=100000), "a")
    with pytest.raises(InvalidInput, match="bits"):
        read_dicom(hostile.dicom(BitsAllocated=64), "a")


def test_a_multi_frame_volume_decodes_one_frame() -> None:
    import numpy as np

    frames = np.arange(5 * 32 * 32, dtype="uint16").reshape(5, 32, 32)
    data = hostile.dicom(Rows=32, Columns=32, NumberOfFrames=5, PixelData=frames.tobytes())
    assert read_dicom(data, "a").attachments["image.png"].startswith(b"\x89PNG")


def test_a_deflate_bomb_is_invalid_input() -> None:
    """A few hundred KB that would inflate to 600 MiB: refused after MAX_INFLATED bytes,
    counted a chunk at a time."""
    assert read_dicom(hostile.deflated_dicom(), "a").attachments  # a real deflated file is read
    bomb = hostile.deflate_bomb((MAX_INFLATED >> 20) + 88)
    assert len(bomb) < 1 << 20
    with pytest.raises(InvalidInput, match="inflates beyond"):
        read_dicom(bomb, "a")


def test_reports_decode_dicom_through_the_same_bounded_path() -> None:
    """The report path used to call pydicom itself: a 4 MB bomb exhausted the pod's memory.
    Now it inflates no more than its pixel budget allows, and the budget spans a request."""
    from medxiaohe.corpus.dicom import PixelBudget
    from medxiaohe.report.images import MAX_REQUEST_PIXELS, decode_image

    budget = PixelBudget(MAX_REQUEST_PIXELS)
    with pytest.raises(InvalidInput, match="inflates beyond"):
        decode_image(hostile.deflate_bomb(256), "bomb", budget)
    assert budget.used == 0
    (frame,) = decode_image(hostile.deflated_dicom(), "ok", budget)
    assert budget.used == frame.image.width * frame.image.height
    small = PixelBudget(40_000)
    decode_image(hostile.png(150, 150), "first", small)
    with pytest.raises(InvalidInput, match="more than 40,000 pixels together"):
        decode_image(hostile.png(150, 150), "second", small)


def test_out_of_memory_while_decoding_is_invalid_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the decoder runs out of, the caller gets InvalidInput, never MemoryError."""
    import pydicom

    from medxiaohe.corpus.dicom import PixelBudget
    from medxiaohe.report.images import decode_image

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    study = hostile.dicom()
    monkeypatch.setattr(pydicom, "dcmread", exhausted)
    with pytest.raises(InvalidInput, match="too large"):
        read_dicom(study, "a")
    with pytest.raises(InvalidInput, match="too large"):
        decode_image(study, "a", PixelBudget(10**8))


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"resourceType": "Bundle", "entry": ["x", 1]}).encode(),
        json.dumps({"resourceType": "Bundle", "entry": {"resource": {}}}).encode(),
        json.dumps({"resourceType": ["Patient"]}).encode(),
        json.dumps(
            {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": 7}}]}
        ).encode(),
        json.dumps({"resourceType": "Observation", "code": {"text": {"nested": [1] * 5}}}).encode(),
    ],
)
def test_hostile_fhir_is_a_dropped_record_not_an_exception(content: bytes) -> None:
    (record,) = read_blob("bundle.json", content)
    assert record.dropped


def test_hl7_values_are_fully_unescaped() -> None:
    message = (
        "MSH|^~\\&|A|B|C|D|20240302||ORU^R01|1|P|2.5\rPID|1||1^^^H||Doe^Jane\r"
        "OBX|1|TX|x||Na \\T\\ K\\.br\\ratio \\F\\ 2||||||F\r"
    )
    assert read_hl7(message).text == "Na & K\nratio | 2"


def test_the_shard_writer_refuses_records_that_skipped_de_identification(tmp_path: Path) -> None:
    """The guard checks what it writes against the seal, not a flag a step sets."""
    store = open_store(str(tmp_path))
    with pytest.raises(ValueError, match="did not pass de-identification"):
        write_shard(store, "d", "s", [Record(id="raw", source="t", text="x")])
    changed = Record(id="r", source="t", text="Seen today.")
    changed.seal()
    changed.text += " Call Ada Lovelace."  # a step after de-identification wrote into it
    with pytest.raises(ValueError, match="changed after de-identification"):
        write_shard(store, "d", "s", [changed])
    reason = Record(id="r", source="t", text="", dropped="malformed")
    reason.seal()
    reason.dropped = "malformed: MRN 48213377"
    with pytest.raises(ValueError, match="drop reason changed"):
        write_shard(store, "d", "s", [reason])


def test_records_dropped_before_de_identification_are_stored_de_identified(
    tmp_path: Path,
) -> None:
    """A benchmark copy drops before de-identification (which could shift its numbers out of
    the match); dropped.parquet used to keep its original text with the planted identifiers."""
    import pyarrow.parquet as pq

    from medxiaohe.corpus.ingest import ShardIngestor
    from medxiaohe.corpus.overlap import BenchmarkIndex
    from medxiaohe.entities.build import build_tree
    from medxiaohe.entities.tagger import DictionaryTagger
    from tests.conftest import small_records

    question = "Which vitamin deficiency causes scurvy in sailors on long sea voyages with no fruit"
    index = BenchmarkIndex()
    index.add("medqa/0001", question, question)
    planted = (
        f"Patient: Ada Lovelace, MRN 48213377, seen 03/14/2024, phone (617) 555-0142. {question}"
    )
    store = open_store(str(tmp_path))
    tagger = DictionaryTagger(build_tree(small_records()))
    ingestor = ShardIngestor(store, "d", tagger, SECRET, benchmarks=index)
    result = ingestor.process_records(
        "s0", [Record(id="Lovelace-48213377", source="t", text=planted)]
    )
    assert [why for _, why in result.drops] == ["overlaps benchmark item medqa/0001"]
    stored = store.get_bytes("corpus/d/shards/s0/dropped.parquet")
    (row,) = pq.read_table(io.BytesIO(stored)).to_pylist()
    assert "scurvy" in row["text"]  # kept, for whoever audits the drop: de-identified
    for planted_value in ("Lovelace", "48213377", "03/14/2024", "555-0142"):
        assert planted_value not in json.dumps(row)


def test_a_deeply_nested_structured_report_is_invalid_input() -> None:
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(io.BytesIO(hostile.dicom()))
    node = ds
    for _ in range(40):
        child = Dataset()
        child.ValueType = "CONTAINER"
        node.ContentSequence = Sequence([child])
        node = child
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    (record,) = read_blob("deep.dcm", out.getvalue())
    assert "nested deeper" in record.dropped
