"""DICOM: headers de-identified with the basic confidentiality profile (dicognito, unseeded),
one frame rendered to PNG beside the record, and Structured Report text where there is some.

Hostile files are refused before any pixel is decoded: only the transfer syntaxes listed here,
at most ``MAX_FRAME_PIXELS`` per frame and ``MAX_FRAMES`` frames, 8- or 16-bit samples; only one
frame is decoded and scaled in float32. Images that may show burned-in identifiers are put in
quarantine (kept apart from the corpus with the reason), never mixed into it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.record import Record

# Header fields worth keeping as metadata once de-identified (values go through deidentify()).
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
# Header values that identify someone: removed wherever they appear in the study's text.
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "AccessionNumber",
    "StudyID",
)
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
}
# Modalities whose pixels often carry burned-in text (ultrasound, secondary capture, other,
# external camera): without a BurnedInAnnotation of NO they go to quarantine.
BURNED_IN_MODALITIES = ("US", "SC", "OT", "XC")
MAX_INFLATED = 512 << 20  # a deflated dataset may inflate to this much, no more
MAX_FRAME_PIXELS = 40_000_000
MAX_FRAMES = 5_000
MAX_SR_DEPTH = 16


@dataclass
class PixelBudget:
    """How many pixels one request (or one file) may still decode, every image together."""

    limit: int
    used: int = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def take(self, pixels: int) -> None:
        if self.used + pixels > self.limit:
            raise InvalidInput(
                f"the images would decode to more than {self.limit:,} pixels together"
            )
        self.used += pixels


def _sr_text(item: Any, depth: int = 0) -> list[str]:
    if depth > MAX_SR_DEPTH:
        raise InvalidInput(f"structured report is nested deeper than {MAX_SR_DEPTH} levels")
    texts = []
    for node in getattr(item, "ContentSequence", []) or []:
        if getattr(node, "ValueType", "") == "TEXT" and getattr(node, "TextValue", ""):
            texts.append(str(node.TextValue))
        texts.extend(_sr_text(node, depth + 1))
    return texts


def _identifiers(dataset: Any) -> list[str]:
    """The identifying header values, names split at DICOM's ^ separators too."""
    from pydicom.multival import MultiValue

    found: list[str] = []
    for keyword in IDENTIFYING:
        value = dataset.get(keyword)
        values = list(value) if isinstance(value, MultiValue) else [value]
        for item in values:
            text = str(item or "").strip()
            if len(text) > 1:
                found.append(text.replace("^", " ").strip())
                found.extend(p for p in text.split("^") if len(p) > 1)
    return found


def check_pixels(dataset: Any) -> int:
    """The number of frames, once the pixel description is within bounds."""
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if syntax not in TRANSFER_SYNTAXES:
        raise InvalidInput(
            f"transfer syntax {syntax or '(none)'} is not accepted; "
            f"use one of: {', '.join(TRANSFER_SYNTAXES.values())}"
        )
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    bits = int(dataset.get("BitsAllocated", 0) or 0)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if not (0 < rows * columns <= MAX_FRAME_PIXELS):
        raise InvalidInput(f"an image frame must have 1 to {MAX_FRAME_PIXELS:,} pixels")
    if not 0 < frames <= MAX_FRAMES:
        raise InvalidInput(f"a DICOM image may have at most {MAX_FRAMES} frames")
    if bits not in (8, 16) or samples not in (1, 3):
        raise InvalidInput("pixel data must have 8 or 16 bits and 1 or 3 samples per pixel")
    return frames


def eight_bit_frame(dataset: Any, index: int, frames: int) -> Any:
    """Frame ``index`` scaled to 8 bits (MONOCHROME1 inverted), as a numpy array."""
    import numpy as np
    from pydicom.pixels.utils import pixel_array

    frame = pixel_array(dataset, index=index) if frames > 1 else dataset.pixel_array
    low, high = frame.min(), frame.max()
    scaled = (frame.astype(np.float32) - np.float32(low)) * np.float32(
        255.0 / (float(high - low) or 1.0)
    )
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _png(dataset: Any, frames: int) -> bytes:
    """One frame (the middle one of a series) scaled to 8 bits, as PNG."""
    from PIL import Image

    (frame,) = decode_frames(dataset, [frames // 2], PixelBudget(MAX_FRAME_PIXELS))
    image = Image.fromarray(frame)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def quarantine_reason(dataset: Any) -> str:
    """Why the study's pixels must stay out of the corpus, or "" when they may go in."""
    burned = str(dataset.get("BurnedInAnnotation", "") or "").strip().upper()
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    if burned and burned != "NO":
        return "BurnedInAnnotation is not NO"
    if not burned and modality in BURNED_IN_MODALITIES:
        return f"modality {modality} without BurnedInAnnotation may show burned-in text"
    return ""


def _check_inflated_size(content: bytes, limit: int) -> None:
    """pydicom inflates a deflated dataset in one unbounded call: count what it would inflate
    to first, a chunk at a time, holding no more than one chunk."""
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    stream = io.BytesIO(content)
    read_preamble(stream, False)
    meta = _read_file_meta_info(stream)
    if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = content[stream.tell() :], 0
    try:
        while pending and total <= limit:
            total += len(inflater.decompress(pending, 1 << 20))
            pending = inflater.unconsumed_tail
    except zlib.error:
        raise InvalidInput("deflated DICOM data is corrupt") from None
    if total > limit:
        raise InvalidInput(f"deflated DICOM inflates beyond {limit >> 20} MiB")


def open_dicom(content: bytes, max_inflated: int = MAX_INFLATED) -> Any:
    """The parsed dataset of a DICOM file, the one way ingestion and reports open one: a
    deflated dataset is measured before pydicom inflates it, and whatever the file's shape
    (truncated, corrupt, too large to parse) the caller gets InvalidInput, never MemoryError."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        _check_inflated_size(content, max_inflated)
        return pydicom.dcmread(io.BytesIO(content))
    except MemoryError:
        raise InvalidInput("the DICOM file is too large to parse") from None
    except (InvalidDicomError, EOFError, ValueError, OSError, KeyError, TypeError, IndexError):
        raise InvalidInput("not a DICOM file, or a truncated one") from None


def decode_frames(dataset: Any, indices: Sequence[int], budget: PixelBudget) -> list[Any]:
    """Frames ``indices`` of a dataset whose pixel description ``check_pixels`` accepted, each
    scaled to 8 bits; their pixels are taken from ``budget`` before any is decoded."""
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    budget.take(rows * columns * len(indices))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        return [eight_bit_frame(dataset, i, frames) for i in indices]
    except (ValueError, AttributeError, RuntimeError, NotImplementedError, MemoryError):
        raise InvalidInput("the pixel data cannot be decoded") from None


def read_dicom(content: bytes, record_id: str, source: str = "dicom") -> Record:
    """The study's record: pydicom reads elements lazily, so a malformed element fails here,
    in the anonymizer or the pixel path, not in ``open_dicom``; each is InvalidInput."""
    from pydicom.errors import BytesLengthException

    try:
        return _read_dicom(content, record_id, source)
    except (BytesLengthException, NotImplementedError, struct.error, OverflowError, EOFError):
        raise InvalidInput("a DICOM element cannot be read") from None


def _read_dicom(content: bytes, record_id: str, source: str) -> Record:
    from dicognito.anonymizer import Anonymizer

    dataset = open_dicom(content)
    patient = str(dataset.get("PatientID", "") or "")
    known = _identifiers(dataset)
    quarantine = quarantine_reason(dataset)
    Anonymizer().anonymize(dataset)  # unseeded: no public seed that maps UIDs back
    dataset.remove_private_tags()
    attachments = {}
    if "PixelData" in dataset:
        attachments["image.png"] = _png(dataset, check_pixels(dataset))
    text = "\n".join(_sr_text(dataset))
    metadata = {
        k: str(getattr(dataset, k)) for k in KEEP if getattr(dataset, k, None) not in (None, "")
    }
    return Record(
        id=record_id,
        source=source,
        text=text,
        kind="study",
        patient_key=patient,  # de-identification keys it
        metadata=metadata,
        attachments=attachments,
        known_phi=known,
        quarantine=quarantine,
    )
