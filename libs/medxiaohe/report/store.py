"""Reports in the object store: ``reports/<id>/`` holds the report, its trace and its FHIR export,
published atomically (a manifest written last). A report's id derives from the caller and its
request id (keyed by the platform's secret), so a retried request finds the stored report
instead of generating another.

What the store holds names no caller identifier: the request id (an accession number, often),
the study id and the image ids (DICOM SOP instance UIDs) are replaced, wherever they appear in
the report, its trace and its FHIR export, by keyed pseudonyms (``p-`` and 64 hex digits). The
map back is kept beside them encrypted (AES-GCM, a key derived from the secret), so the
report's owner reads its own ids again; whoever reads the store without the secret (an export
for training, a backup) sees pseudonyms only. The owner is recorded as a keyed pseudonym of the
caller's identity."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound, Unavailable
from medxiaohe.report.fhir import to_fhir
from medxiaohe.report.images import StudyImage, png
from medxiaohe.report.model import (
    Citation,
    Finding,
    Omission,
    Provenance,
    Region,
    Report,
    Section,
    Sentence,
)
from medxiaohe.report.review import Signature
from medxiaohe.storage import ArtifactStore, Manifest, publish, read_file, resolve

PREFIX = "reports"
IMAGE_SIDE = 1024  # the longest side of a study image kept beside its report
REVIEWS = "reviews"  # reviews/<report id>/<version>: each signed review of a report
ID_MAP = "ids.enc"
_PSEUDONYM = re.compile(r"p-[0-9a-f]{64}")


def report_id(key: bytes, caller: str, request_id: str) -> str:
    """The id a caller's request is stored under (the same request, the same id): an HMAC keyed
    by the platform's secret, since a request id may be an accession number."""
    if not request_id:
        raise InvalidInput("request_id is required: a retry must find the stored report")
    digest = hmac.new(key, f"{caller}\n{request_id}".encode(), hashlib.sha256).hexdigest()
    return "r-" + digest[:32]


def report_to_dict(report: Report) -> dict[str, Any]:
    return dataclasses.asdict(report)


def report_from_dict(data: dict[str, Any]) -> Report:
    def region(r: dict[str, Any] | None) -> Region | None:
        return Region(**{**r, "box": tuple(r["box"])}) if r else None

    def section(s: dict[str, Any]) -> Section:
        sentences = tuple(
            Sentence(
                **{
                    **x,
                    "finding_ids": tuple(x["finding_ids"]),
                    "citations": tuple(x["citations"]),
                    "reasons": tuple(x["reasons"]),
                }
            )
            for x in s["sentences"]
        )
        return Section(s["name"], sentences)

    return Report(
        id=data["id"],
        study_id=data["study_id"],
        findings=tuple(Finding(**{**f, "region": region(f["region"])}) for f in data["findings"]),
        sections=tuple(section(s) for s in data["sections"]),
        provenance=Provenance(**data["provenance"]),
        citations=tuple(Citation(**c) for c in data["citations"]),
        omissions=tuple(
            Omission(**{**o, "region": region(o["region"])}) for o in data["omissions"]
        ),
        created=data["created"],
        template_id=data["template_id"],
        subject=data.get("subject", ""),
    )


@dataclass(frozen=True)
class ReportKeys:
    """What the platform's secret keys in a stored report: its id pseudonyms, the encrypted map
    back to the caller's ids, and its owner."""

    secret: bytes

    def _derive(self, purpose: str) -> bytes:
        return hmac.new(self.secret, purpose.encode(), hashlib.sha256).digest()

    def pseudonym(self, value: str) -> str:
        return "p-" + hmac.new(self._derive("report-id"), value.encode(), "sha256").hexdigest()

    def owner(self, caller: str) -> str:
        return hmac.new(self._derive("report-owner"), caller.encode(), "sha256").hexdigest()

    def seal(self, mapping: dict[str, str]) -> bytes:
        """The map encrypted; the nonce derives from it (the same map, the same bytes)."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        plain = _json(mapping)
        nonce = hmac.new(self._derive("report-nonce"), plain, hashlib.sha256).digest()[:12]
        return nonce + AESGCM(self._derive("report-map")).encrypt(nonce, plain, None)

    def open(self, sealed: bytes) -> dict[str, str]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            plain = AESGCM(self._derive("report-map")).decrypt(sealed[:12], sealed[12:], None)
        except (InvalidTag, ValueError):
            raise Unavailable(
                "a stored report's ids cannot be decrypted with this secret"
            ) from None
        mapping: dict[str, str] = json.loads(plain)
        return mapping


def map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` (JSON-ready) with ``change`` applied to every string in it, keys aside."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {k: map_strings(v, change) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_strings(v, change) for v in value]
    return value


def _replacer(mapping: dict[str, str]) -> Callable[[str], str]:
    """A string that is a key of ``mapping`` replaced whole; keys of 4 characters or more also
    wherever they occur inside a string (not inside a longer word or UID)."""
    keys = sorted((k for k in mapping if len(k) >= 4), key=len, reverse=True)
    pattern = (
        re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, keys)) + r")(?![\w.])")
        if keys
        else None
    )

    def change(text: str) -> str:
        if text in mapping:
            return mapping[text]
        return pattern.sub(lambda m: mapping[m.group(0)], text) if pattern else text

    return change


def save_report(
    store: ArtifactStore,
    report: Report,
    trace: Sequence[dict[str, Any]],
    keys: ReportKeys,
    owner: str,
    identifiers: Sequence[str],
    images: Sequence[StudyImage] = (),
) -> str:
    """Publish the report, its trace, its FHIR export and its study's images (pixels only, at
    most ``IMAGE_SIDE`` a side, for reviewers), ``identifiers`` (request, study and image ids)
    replaced by pseudonyms; returns the report's store prefix. The same report again is a
    no-op; another report under the same id is a Conflict."""
    mapping = {i: keys.pseudonym(i) for i in identifiers if i}
    hide = _replacer(mapping)
    stored = report_from_dict(map_strings(report_to_dict(report), hide))
    files = {
        "report.json": _json(report_to_dict(stored)),
        "trace.json": _json(map_strings(list(trace), hide)),
        "fhir.json": _json(to_fhir(stored)),
        ID_MAP: keys.seal({v: k for k, v in mapping.items()}),
    }
    listed = []
    for n, image in enumerate(images):
        name = f"images/{n:02d}.png"
        thumbnail = image.image.copy()
        thumbnail.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
        files[name] = png(thumbnail)
        width, height = image.image.size
        listed.append({"image_id": hide(image.id), "frame": image.frame, "file": name,
                       "width": width, "height": height})  # fmt: skip
    if listed:
        files["images.json"] = _json(listed)
    metadata = {"owner": keys.owner(owner)}
    publish(store, PREFIX, files, version=report.id, move_latest=False, metadata=metadata)
    return f"{PREFIX}/{report.id}"


def _restorer(
    store: ArtifactStore, manifest: Manifest, keys: ReportKeys | None
) -> Callable[[Any], Any]:
    """What puts the caller's ids back in place of their pseudonyms (nothing without keys)."""
    if keys is None or ID_MAP not in manifest.files:
        return lambda value: value
    back = keys.open(read_file(store, manifest, ID_MAP))

    def restore(text: str) -> str:
        return _PSEUDONYM.sub(lambda m: back.get(m.group(0), m.group(0)), text)

    return lambda value: map_strings(value, restore)


def load_report(
    store: ArtifactStore, report_id: str, keys: ReportKeys | None = None
) -> tuple[Report, list[dict[str, Any]]]:
    """A stored report and its trace; with ``keys``, the caller's ids restored, without them
    the pseudonyms as stored. NotFound when there is none."""
    manifest = resolve(store, PREFIX, report_id)
    restore = _restorer(store, manifest, keys)
    trace: list[dict[str, Any]] = restore(json.loads(read_file(store, manifest, "trace.json")))
    return _report(store, manifest, restore), trace


def read_report(store: ArtifactStore, report_id: str, keys: ReportKeys | None = None) -> Report:
    """``load_report`` without the trace (a worklist reads many reports, no trace)."""
    manifest = resolve(store, PREFIX, report_id)
    return _report(store, manifest, _restorer(store, manifest, keys))


def _report(store: ArtifactStore, manifest: Manifest, restore: Any) -> Report:
    return report_from_dict(restore(json.loads(read_file(store, manifest, "report.json"))))


def report_images(
    store: ArtifactStore, report_id: str, keys: ReportKeys | None = None
) -> list[dict[str, Any]]:
    """The study images kept beside a report: image id, frame, file, original width and height."""
    manifest = resolve(store, PREFIX, report_id)
    if "images.json" not in manifest.files:
        return []
    listed: list[dict[str, Any]] = _restorer(store, manifest, keys)(
        json.loads(read_file(store, manifest, "images.json"))
    )
    return listed


def report_image(store: ArtifactStore, report_id: str, n: int) -> bytes:
    """The ``n``-th kept study image of a report, PNG (NotFound when there is none)."""
    return read_file(store, resolve(store, PREFIX, report_id), f"images/{n:02d}.png")


def save_review(store: ArtifactStore, reviewed: Report, signature: Signature) -> Signature:
    """Publish a signed review (of the report as stored: pseudonyms for the caller's ids) as the
    report's latest review, beside the report; returns the signature with its version."""
    files = {
        "report.json": _json(report_to_dict(reviewed)),
        "signature.json": _json(signature.as_dict()),
        "fhir.json": _json(to_fhir(reviewed, signature)),
    }
    manifest = publish(store, f"{REVIEWS}/{reviewed.id}", files)
    return dataclasses.replace(signature, version=manifest.version)


def load_review(
    store: ArtifactStore, report_id: str, keys: ReportKeys | None = None
) -> tuple[Report, Signature] | None:
    """The report as last signed and that signature (with ``keys``, the caller's ids restored);
    None when nobody signed it."""
    try:
        manifest = resolve(store, f"{REVIEWS}/{report_id}")
    except NotFound:
        return None
    restore = _restorer(store, resolve(store, PREFIX, report_id), keys)
    report = report_from_dict(restore(json.loads(read_file(store, manifest, "report.json"))))
    signature = Signature.from_dict(json.loads(read_file(store, manifest, "signature.json")))
    return report, dataclasses.replace(signature, version=manifest.version)


def report_owner(store: ArtifactStore, report_id: str) -> str:
    """The keyed pseudonym of the caller that generated the report (NotFound without one)."""
    return str(resolve(store, PREFIX, report_id).metadata.get("owner", ""))


def report_ids(store: ArtifactStore) -> list[str]:
    """Every stored report's id."""
    found = {i.key.split("/")[1] for i in store.list(f"{PREFIX}/") if i.key.count("/") >= 2}
    return sorted(found)


def find_report(
    store: ArtifactStore, report_id: str, keys: ReportKeys | None = None
) -> tuple[Report, list[dict[str, Any]]] | None:
    """``load_report``, or None when there is no such report."""
    try:
        return load_report(store, report_id, keys)
    except NotFound:
        return None


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
