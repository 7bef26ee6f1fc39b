"""A report as FHIR R4: a Bundle (type collection) holding one DiagnosticReport, one Observation
per finding (its assertion, site and side, and its image region), and a Provenance naming the
model, the index and entity-tree versions and the pipeline's agents.

What a hospital can take in: everything is ``preliminary`` (a machine never writes ``final``; a
clinician's signature does); each sentence's verifier verdict and reasons travel in the
DiagnosticReport's ``sentence-verdict`` extension (documented in ``docs/fhir.md``); a sentence
the verifier flagged never reaches ``conclusion``; ``subject`` is the caller's patient reference
when the request gave one; entries have ``urn:uuid`` full URLs (UUIDs derived from the report,
so an export is the same every time) and refer to each other by them; Provenance agents carry
the standard participant-type codes. The Bundle is validated against the R4 models of
``fhir.resources`` (its R4B package, which holds R4's resources) before it is returned."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.report.model import Finding, Report

if TYPE_CHECKING:
    from medxiaohe.report.review import Signature

IMAGING_REPORT = {
    "system": "http://loinc.org",
    "code": "18748-4",
    "display": "Diagnostic imaging study",
}
STATUS = "preliminary"  # until a clinician signs
VERDICT_EXTENSION = "https://medxiaohe.dev/fhir/StructureDefinition/sentence-verdict"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
# Each agent of the pipeline and its participant type (the model authors; the verifier verifies)
AGENTS = (
    ("perception", "performer", "Performer"),
    ("reasoning", "author", "Author"),
    ("style", "composer", "Composer"),
    ("verifier", "verifier", "Verifier"),
)
# ASTM E1762 signature types: the author's (the one who takes responsibility) signature
SIGNATURE_TYPE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1",
                  "display": "Author's Signature"}  # fmt: skip
_FLAGGED = ("addition", "negation", "laterality", "location", "severity")
_INTERPRETATION = {
    "present": ("POS", "Positive"),
    "absent": ("NEG", "Negative"),
    "uncertain": ("IND", "Indeterminate"),
}


def _urn(report: Report, name: str) -> str:
    """A stable ``urn:uuid`` for one resource of one report."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'medxiaohe:{report.id}:{name}')}"


def _observation(report: Report, finding: Finding, status: str) -> dict[str, Any]:
    code, display = _INTERPRETATION[finding.assertion]
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{report.id}-{finding.id}",
        "status": status,
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
    if report.subject:
        observation["subject"] = {"reference": report.subject}
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


def _verdicts(report: Report) -> list[dict[str, Any]]:
    """Every sentence with its verdict and reasons: one complex extension per sentence."""
    out = []
    for section in report.sections:
        for sentence in section.sentences:
            parts = [
                {"url": "section", "valueString": section.name},
                {"url": "text", "valueString": sentence.text},
                {"url": "verdict", "valueCode": sentence.verdict or "not_checked"},
                {"url": "removed", "valueBoolean": sentence.removed},
                *({"url": "reason", "valueString": r} for r in sentence.reasons),
            ]
            out.append({"url": VERDICT_EXTENSION, "extension": parts})
    return out


def _conclusion(report: Report) -> str | None:
    """The impression's sentences the verifier did not flag (and the policy did not remove)."""
    impression = report.section("Impression")
    if impression is None:
        return None
    kept = [
        s.text
        for s in impression.sentences
        if not s.removed and (s.verdict not in _FLAGGED or s.review)  # a clinician decided
    ]
    return " ".join(kept)


def _provenance(report: Report, targets: list[str], signature: Signature | None) -> dict[str, Any]:
    p = report.provenance

    def agent(code: str, display: str, who: str) -> dict[str, Any]:
        coding = {"system": PARTICIPANT_TYPE, "code": code, "display": display}
        return {"type": {"coding": [coding]}, "who": {"display": who}}

    signed: dict[str, Any] = {}
    if signature is not None:
        signed = {
            "agent": [agent("attester", "Attester", signature.signer)],
            "signature": [
                {
                    "type": [SIGNATURE_TYPE],
                    "when": signature.signed_at,
                    "who": {"display": signature.signer},
                }
            ],
        }
    provenance = {
        "resourceType": "Provenance",
        "id": f"{report.id}-provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": report.created,
        "agent": [
            agent("author", "Author", f"model {p.model_endpoint} {p.model_version}"),
            *(
                agent(code, display, f"medxiaohe {p.code_version} {step}")
                for step, code, display in AGENTS
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
    if signed:
        provenance["agent"] = [*provenance["agent"], *signed["agent"]]
        provenance["signature"] = signed["signature"]
    return provenance


def to_fhir(report: Report, signature: Signature | None = None) -> dict[str, Any]:
    """The report as a validated FHIR R4 Bundle (JSON-ready dict); with a clinician's
    ``signature``, ``final``, the signer its results interpreter and the Provenance's attester."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    if not report.created:
        raise InvalidInput("a report needs its creation time for FHIR")
    status = "final" if signature else STATUS
    observations = [_observation(report, f, status) for f in report.findings]
    urns = {o["id"]: _urn(report, o["id"]) for o in observations}
    diagnostic: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": report.id,
        "extension": _verdicts(report),
        "status": status,
        "code": {"coding": [IMAGING_REPORT], "text": "Imaging report"},
        "issued": report.created,
        "imagingStudy": [{"reference": f"ImagingStudy/{report.study_id}"}],
        "result": [{"reference": urns[o["id"]]} for o in observations],
        "presentedForm": [{"contentType": "text/plain", "data": _base64(report.text)}],
    }
    if not diagnostic["extension"]:
        del diagnostic["extension"]
    if report.subject:
        diagnostic["subject"] = {"reference": report.subject}
    if signature is not None:
        diagnostic["resultsInterpreter"] = [{"display": signature.signer}]
    conclusion = _conclusion(report)
    if conclusion:
        diagnostic["conclusion"] = conclusion
    urns[report.id] = _urn(report, report.id)
    targets = [urns[report.id], *(urns[o["id"]] for o in observations)]
    provenance = _provenance(report, targets, signature)
    urns[provenance["id"]] = _urn(report, provenance["id"])
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": urns[r["id"]], "resource": r}
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
