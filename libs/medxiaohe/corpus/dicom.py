"""DICOM: headers de-identified with the basic confidentiality profile (dicognito), pixel data
rendered to PNG beside the record, and Structured Report text where there is some."""

from __future__ import annotations

import io
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.readers import pseudonym
from medxiaohe.corpus.record import Record

# Header fields worth keeping as metadata once de-identified.
KEEP = (
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "Manufacturer",
    "Rows",
    "Columns",
    "PhotometricInterpretation",
)


def _sr_text(item: Any) -> list[str]:
    texts = []
    for node in getattr(item, "ContentSequence", []) or []:
        if getattr(node, "ValueType", "") == "TEXT" and getattr(node, "TextValue", ""):
            texts.append(str(node.TextValue))
        texts.extend(_sr_text(node))
    return texts


def _png(dataset: Any) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = dataset.pixel_array.astype("float64")
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[pixels.shape[0] // 2]  # a multi-frame series: its middle frame
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low or 1.0) * 255.0
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255.0 - scaled
    image = Image.fromarray(np.clip(scaled, 0, 255).astype("uint8"))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def read_dicom(content: bytes, record_id: str, source: str = "dicom") -> Record:
    import pydicom
    from dicognito.anonymizer import Anonymizer
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(io.BytesIO(content))
    except (InvalidDicomError, EOFError, ValueError, OSError):
        raise InvalidInput(f"{record_id}: not a DICOM file") from None
    patient = str(getattr(dataset, "PatientID", "") or "")
    Anonymizer(seed="medxiaohe").anonymize(dataset)
    dataset.remove_private_tags()
    attachments = {}
    if "PixelData" in dataset:
        try:
            attachments["image.png"] = _png(dataset)
        except (ValueError, AttributeError, RuntimeError, NotImplementedError):
            raise InvalidInput(f"{record_id}: pixel data cannot be decoded") from None
    text = "\n".join(_sr_text(dataset))
    metadata = {
        k: str(getattr(dataset, k)) for k in KEEP if getattr(dataset, k, None) not in (None, "")
    }
    return Record(
        id=record_id,
        source=source,
        text=text,
        kind="study",
        patient_key=pseudonym(patient) if patient else "",
        metadata=metadata,
        attachments=attachments,
    )
