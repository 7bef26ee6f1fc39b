"""Reports in the object store: ``reports/<id>/`` holds the report, its trace and its FHIR export,
published atomically (a manifest written last). A report's id derives from the caller and its
request id (keyed by the platform's secret), so a retried request finds the stored report
instead of generating another."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.report.fhir import to_fhir
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
from medxiaohe.storage import ArtifactStore, publish, read_file, resolve

PREFIX = "reports"


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
    )


def save_report(store: ArtifactStore, report: Report, trace: Sequence[dict[str, Any]]) -> str:
    """Publish the report, its trace and its FHIR export; returns the report's store prefix.
    The same report again is a no-op; another report under the same id is a Conflict."""
    files = {
        "report.json": _json(report_to_dict(report)),
        "trace.json": _json(list(trace)),
        "fhir.json": _json(to_fhir(report)),
    }
    publish(store, PREFIX, files, version=report.id, move_latest=False)
    return f"{PREFIX}/{report.id}"


def load_report(store: ArtifactStore, report_id: str) -> tuple[Report, list[dict[str, Any]]]:
    """A stored report and its trace; NotFound when there is none."""
    manifest = resolve(store, PREFIX, report_id)
    report = report_from_dict(json.loads(read_file(store, manifest, "report.json")))
    trace: list[dict[str, Any]] = json.loads(read_file(store, manifest, "trace.json"))
    return report, trace


def load_fhir(store: ArtifactStore, report_id: str) -> dict[str, Any]:
    exported: dict[str, Any] = json.loads(
        read_file(store, resolve(store, PREFIX, report_id), "fhir.json")
    )
    return exported


def find_report(store: ArtifactStore, report_id: str) -> Report | None:
    try:
        return load_report(store, report_id)[0]
    except NotFound:
        return None


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
