"""Readers: each turns one source format into Records, or raises InvalidInput saying why."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.record import Record

FHIR_TYPES = ("DiagnosticReport", "Observation", "Condition", "DocumentReference")


MAX_IMAGE_PIXELS = 40_000_000


def read_text_file(path: Path, source: str = "text") -> Record:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8 text") from None
    return Record(id=path.stem, source=source, text=text)


def read_jsonl(path: Path, text_field: str = "text", id_field: str = "id") -> Iterator[Record]:
    with path.open(encoding="utf-8") as fh:
        yield from read_jsonl_lines(fh, path.stem, text_field, id_field)


def read_jsonl_lines(
    lines: Iterable[str],
    name: str,
    text_field: str = "text",
    id_field: str = "id",
    source: str = "jsonl",
) -> Iterator[Record]:
    """One record per line; a line without the text field is dropped with the reason."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record_id = f"{name}:{number}"
        try:
            row = json.loads(line)
            text = row[text_field]
        except (json.JSONDecodeError, KeyError, TypeError):
            yield Record(
                id=record_id,
                source=source,
                text="",
                dropped=f"line {number}: not JSON with a {text_field!r} field",
            )
            continue
        if not isinstance(text, str):
            yield Record(
                id=record_id,
                source=source,
                text="",
                dropped=f"line {number}: {text_field!r} is not a string",
            )
            continue
        metadata = {
            k: str(v)
            for k, v in row.items()
            if k not in (text_field, id_field) and isinstance(v, str | int | float)
        }
        yield Record(
            id=str(row.get(id_field) or record_id),
            source=row.get("source") or source,
            text=text,
            metadata=metadata,
        )


# -- FHIR R4 -------------------------------------------------------------------------------


def _fhir_resources(data: Any) -> list[Any]:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise InvalidInput("not a FHIR resource: no resourceType")
    items = [data]
    if data["resourceType"] == "Bundle":
        entries = data.get("entry", [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InvalidInput("Bundle.entry must be a list of objects")
        items = [e.get("resource") for e in entries]
    resources = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("resourceType"), str):
            raise InvalidInput("bundle entry without a resource")
        try:
            model = get_fhir_model_class(item["resourceType"])
        except (KeyError, ValueError):  # the library raises a bare error for unknown types
            raise InvalidInput("unknown FHIR resource type") from None
        try:
            resources.append(model.model_validate(item))
        except ValidationError as exc:
            raise InvalidInput(
                f"invalid FHIR {item['resourceType']}: {exc.error_count()} errors"
            ) from None
    return resources


def _attachment_text(attachment: Any) -> str:
    if attachment is None or not attachment.data:
        return ""
    if attachment.contentType and not attachment.contentType.startswith("text/"):
        return ""
    raw = (
        attachment.data if isinstance(attachment.data, bytes) else base64.b64decode(attachment.data)
    )
    return raw.decode("utf-8", errors="replace")


def _codeable(concept: Any) -> str:
    if concept is None:
        return ""
    if concept.text:
        return str(concept.text)
    return "; ".join(c.display for c in (concept.coding or []) if c.display)


def _notes(resource: Any) -> list[str]:
    return [n.text for n in (getattr(resource, "note", None) or []) if n.text]


def read_fhir(content: bytes, source: str = "fhir") -> list[Record]:
    """Text-bearing resources of a FHIR R4 resource or Bundle; others are skipped."""
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidInput("FHIR content is not JSON") from None
    except RecursionError:
        raise InvalidInput("FHIR content is nested too deeply") from None
    resources = _fhir_resources(data)
    names = [
        " ".join([*(n.given or []), n.family or ""]).strip()
        for r in resources
        if r.get_resource_type() == "Patient"
        for n in (r.name or [])
    ]
    records: list[Record] = []
    for resource in resources:
        kind = resource.get_resource_type()
        if kind not in FHIR_TYPES:
            continue
        parts: list[str] = []
        if kind == "DiagnosticReport":
            parts = [_codeable(resource.code), resource.conclusion or ""]
            parts += [_attachment_text(a) for a in resource.presentedForm or []]
        elif kind == "Observation":
            parts = [_codeable(resource.code), resource.valueString or "", *_notes(resource)]
        elif kind == "Condition":
            parts = [_codeable(resource.code), *_notes(resource)]
        elif kind == "DocumentReference":
            parts = [_attachment_text(c.attachment) for c in resource.content or []]
        text = "\n".join(p for p in parts if p)
        subject = getattr(resource, "subject", None)
        patient = subject.reference if subject is not None and subject.reference else ""
        records.append(
            Record(
                id=f"{kind}/{resource.id or len(records)}",
                source=source,
                text=text,
                patient_key=patient,  # de-identification keys it
                metadata={"fhir_type": kind},
                known_phi=[n for n in names if n],
            )
        )
    return records


# -- HL7 v2 --------------------------------------------------------------------------------


def read_hl7(message: str, source: str = "hl7") -> Record:
    """An ORU^R01 message: the OBX text values, with PID names kept aside for de-identification."""
    import hl7

    text = message.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if not text.startswith("MSH"):
        raise InvalidInput("HL7 v2 message must start with an MSH segment")
    delimiters = text[3:8]  # the field separator, then component, repetition, escape, sub
    if len(set(delimiters)) != 5 or any(c.isalnum() or c.isspace() for c in delimiters):
        raise InvalidInput("HL7 v2 MSH must declare five distinct delimiters (e.g. |^~\\&)")
    try:
        parsed = hl7.parse(text)
        kind = str(parsed.segment("MSH")[9])
        control_id = str(parsed.segment("MSH")[10])
    except (KeyError, IndexError, AssertionError, hl7.exceptions.ParseException):
        raise InvalidInput("HL7 v2 message could not be parsed") from None
    if not kind.startswith("ORU^R01"):
        raise InvalidInput(f"expected an ORU^R01 message, got {kind!r}")
    known, patient = [], ""
    try:
        pid = parsed.segment("PID")
        patient = str(pid[3])
        name = pid[5]
        known = [f"{name[0][1]} {name[0][0]}".strip(), str(name[0][0]), str(name[0][1])]
    except (KeyError, IndexError):
        pass
    try:
        observations = parsed.segments("OBX")
    except KeyError:
        raise InvalidInput("ORU^R01 message has no OBX segment") from None
    values = []
    for obx in observations:
        value = str(obx[5]) if len(obx) > 5 else ""
        if value:  # the standard's escapes (\.br\, \F\, \T\, \Xhh\ ...), not just line breaks
            values.append(parsed.unescape(value).replace("\r", "\n"))
    return Record(
        id=f"hl7:{control_id}",
        source=source,
        text="\n".join(values),
        patient_key=patient,  # de-identification keys it
        metadata={"hl7_type": kind},
        known_phi=[k for k in known if len(k) > 1],
    )


# -- images --------------------------------------------------------------------------------


def clean_image(image: bytes) -> tuple[bytes, str]:
    """A PNG or JPEG re-encoded from its pixels alone (no EXIF, text chunks, ICC or comments),
    and its file suffix; the size is checked before the pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as img:
            kind = (img.format or "").lower()
            if kind not in ("png", "jpeg"):
                raise InvalidInput(f"images must be PNG or JPEG, not {kind or 'unknown'}")
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InvalidInput(f"image is larger than {MAX_IMAGE_PIXELS:,} pixels")
            img.load()
            mode = img.mode if img.mode in ("L", "RGB", "RGBA", "I;16") else "RGB"
            pixels = img.convert(mode)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, EOFError):
        raise InvalidInput("not a decodable PNG or JPEG image") from None  # PIL: SyntaxError too
    bare = Image.frombytes(pixels.mode, pixels.size, pixels.tobytes())
    out = io.BytesIO()
    if kind == "jpeg" and bare.mode in ("L", "RGB"):
        bare.save(out, format="JPEG", quality=95)
        return out.getvalue(), "jpg"
    bare.save(out, format="PNG")
    return out.getvalue(), "png"


def read_image_caption(image: bytes, caption: str, record_id: str, source: str = "image") -> Record:
    data, suffix = clean_image(image)
    return Record(
        id=record_id,
        source=source,
        text=caption,
        kind="study",
        attachments={f"image.{suffix}": data},
    )
