"""A report as FHIR R4: a Bundle (type collection) holding one DiagnosticReport, one Observation
per finding (its assertion, site and side, and its image region), and a Provenance naming the
model, the index and entity-tree versions and the pipeline's agents. Validated with
``fhir.resources`` (R4B) before it is returned."""

from __future__ import annotations

import json
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.report.model import Finding, Report

IMAGING_REPORT = {
    "system": "http://loinc.org",
    "code": "18748-4",
    "display": "Diagnostic imaging study",
}
PIPELINE = ("perception", "reasoning", "style", "verifier")
_INTERPRETATION = {
    "present": ("POS", "Positive"),
    "absent": ("NEG", "Negative"),
    "uncertain": ("IND", "Indeterminate"),
}


def _observation(report: Report, finding: Finding) -> dict[str, Any]:
    code, display = _INTERPRETATION[finding.assertion]
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{report.id}-{finding.id}",
        "status": "final",
        "code": {"text": finding.text},
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": code,
                        "display": display,
                    }
                ]
            }
        ],
        "derivedFrom": [{"reference": f"ImagingStudy/{report.study_id}"}],
    }
    site = " ".join(x for x in (finding.laterality, finding.site) if x)
    if site:
        observation["bodySite"] = {"text": site}
    if finding.region is not None:
        region = finding.region
        observation["note"] = [
            {
                "text": (
                    f"region: image {region.image_id} frame {region.frame} "
                    f"box {list(region.box)} {region.label}".strip()
                )
            }
        ]
    return observation


def to_fhir(report: Report) -> dict[str, Any]:
    """The report as a validated FHIR R4 Bundle (JSON-ready dict)."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    if not report.created:
        raise InvalidInput("a report needs its creation time for FHIR")
    observations = [_observation(report, f) for f in report.findings]
    impression = report.section("Impression")
    diagnostic: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report.id,
        "status": "final",
        "code": {"coding": [IMAGING_REPORT], "text": "Imaging report"},
        "issued": report.created,
        "imagingStudy": [{"reference": f"ImagingStudy/{report.study_id}"}],
        "result": [{"reference": f"Observation/{o['id']}"} for o in observations],
        "presentedForm": [{"contentType": "text/plain", "data": _base64(report.text)}],
    }
    if impression is not None:
        diagnostic["conclusion"] = impression.text
    p = report.provenance
    provenance = {
        "resourceType": "Provenance",
        "id": f"{report.id}-provenance",
        "target": [{"reference": f"DiagnosticReport/{report.id}"}]
        + [{"reference": f"Observation/{o['id']}"} for o in observations],
        "recorded": report.created,
        "agent": [
            {
                "type": {"text": "model"},
                "who": {"display": f"{p.model_endpoint} {p.model_version}"},
            },
            *(
                {"type": {"text": step}, "who": {"display": f"medxiaohe {p.code_version}"}}
                for step in PIPELINE
            ),
        ],
        "entity": [
            {"role": "source", "what": {"display": f"entity tree {p.entity_tree_version}"}},
            {"role": "source", "what": {"display": f"template {p.template_version}"}},
            *(
                {"role": "source", "what": {"display": f"evidence index {name} {version}"}}
                for name, version in sorted(p.index_versions.items())
            ),
        ],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:medxiaohe:{r['resourceType']}/{r['id']}", "resource": r}
            for r in (diagnostic, *observations, provenance)
        ],
    }
    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:  # a bug in this module, said plainly
        raise InvalidInput(
            f"the FHIR export does not validate: {exc.error_count()} errors"
        ) from None
    exported: dict[str, Any] = json.loads(json.dumps(bundle))  # plain JSON types throughout
    return exported


def _base64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
