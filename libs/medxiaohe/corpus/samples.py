"""A small sample set written by this project (no real patients): notes, a JSONL corpus, a FHIR
bundle, an HL7 ORU^R01 message, a generated DICOM image and an image with its caption. The demo
and the tests ingest it; every name, number and date in it is invented."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

NOTES = {
    "note-001.txt": (
        "Patient: Hollis Vantreel\nMRN: 48213377\nSeen on 03/14/2024 by Dr. Amara Quist.\n"
        "72-year-old man with a history of type 2 diabetes mellitus and COPD presents with "
        "fever and productive cough. Denies chest pain. Possible community-acquired pneumonia "
        "of the right lower lobe. Call (617) 555-0142 with results."
    ),
    "note-002.txt": (
        "Follow-up visit on 2024-04-02. Mrs. Oriel Banfather, 93 years old, reports no seizures "
        "since the last visit. Family history of breast cancer in her mother. Hypertension "
        "is controlled. Lives at 12 Larkspur Lane, Salem, OR 97301."
    ),
    "note-003.txt": (  # a near duplicate of note-001, as copy-forward notes are
        "Patient: Hollis Vantreel\nMRN: 48213377\nSeen on 03/15/2024 by Dr. Amara Quist.\n"
        "72-year-old man with a history of type 2 diabetes mellitus and COPD presents with "
        "fever and productive cough. Denies chest pain. Possible community-acquired pneumonia "
        "of the right lower lobe. Call (617) 555-0142 with results."
    ),
    "note-004.txt": "ok",  # too short to keep: dropped with its reason
}
CORPUS = [
    {
        "id": "pub-1",
        "text": "Marfan syndrome is an autosomal dominant disorder of connective "
        "tissue with aortic root dilatation and ectopia lentis.",
        "source": "literature",
    },
    {
        "id": "pub-2",
        "text": "Duchenne muscular dystrophy (DMD) presents in early childhood; DMD "
        "patients develop cardiomyopathy.",
        "source": "literature",
    },
    {"id": "pub-3", "title": "a line without text"},
]
HL7 = (
    "MSH|^~\\&|RIS|GENHOSP|MEDX|MEDX|202403141200||ORU^R01|MSG00017|P|2.5\r"
    "PID|1||77120045^^^GENHOSP^MR||Pellworth^Idris^J||19480506|M\r"
    "OBR|1||ACC5521|71046^Chest X-ray 2 views\r"
    "OBX|1|TX|71046^Findings||Patchy opacity in the right lower lobe concerning for pneumonia. "
    "No pleural effusion. Idris Pellworth was informed on 03/14/2024.||||||F\r"
)


CAPTION = "Round well-circumscribed opacity, suspicious for a pulmonary nodule."


def fhir_bundle() -> dict[str, object]:
    report = base64.b64encode(
        b"CT head without contrast: no acute intracranial hemorrhage. Chronic small vessel "
        b"ischemic changes. Patient Sorrel Amberline tolerated the exam."
    ).decode()
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "name": [{"family": "Amberline", "given": ["Sorrel"]}],
                }
            },
            {
                "resource": {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "Patient/p1"},
                    "code": {"text": "Atrial fibrillation"},
                    "note": [{"text": "Chronic atrial fibrillation on anticoagulation."}],
                }
            },
            {
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "id": "r1",
                    "status": "final",
                    "subject": {"reference": "Patient/p1"},
                    "code": {"text": "CT head"},
                    "conclusion": "No acute intracranial abnormality.",
                    "presentedForm": [{"contentType": "text/plain", "data": report}],
                }
            },
        ],
    }


def dicom_bytes() -> bytes:
    """A small chest film with PHI in its header; the same bytes every call (its instance UID
    is derived, not random), so uploading it again is idempotent (a second `make demo`)."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["medxiaohe sample chest film"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("sample.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Pellworth^Idris"
    ds.PatientID = "77120045"
    ds.PatientBirthDate = "19480506"
    ds.StudyDate = "20240314"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.StudyDescription = "Chest X-ray"
    ds.InstitutionName = "General Hospital"
    yy, xx = np.mgrid[0:64, 0:64]
    pixels = (np.hypot(yy - 32, xx - 40) < 12).astype("uint16") * 800 + 200
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def png_bytes() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("L", (64, 64), 30)
    ImageDraw.Draw(image).ellipse((20, 20, 44, 44), fill=200)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_samples(folder: Path) -> list[Path]:
    """Write the sample set into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: text.encode() for name, text in NOTES.items()}
    files["corpus.jsonl"] = "\n".join(json.dumps(row) for row in CORPUS).encode()
    files["bundle.json"] = json.dumps(fhir_bundle()).encode()
    files["oru.hl7"] = HL7.encode()
    files["chest.dcm"] = dicom_bytes()
    files["lesion.png"] = png_bytes()
    files["lesion.caption"] = (
        b"Round well-circumscribed opacity, suspicious for a pulmonary nodule."
    )
    written = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written
