"""A built-in evidence corpus from what pip packages ship, so a fresh machine has evidence:
HPO term definitions, OMIM and Orphanet disease-phenotype annotations rendered as text, and
ICD-10-CM categories with their codes."""

from __future__ import annotations

from collections.abc import Iterator

from medxiaohe.entities.hpo import ontology
from medxiaohe.evidence.passages import Passage

PARTS = ("orphanet", "omim", "hpo", "icd10cm")


def _passage(pid: str, title: str, text: str, source: str, licence: str, entity: str) -> Passage:
    return Passage(
        pid,
        pid,
        text,
        0,
        len(text),
        source=source,
        title=title,
        licence=licence,
        entity_ids=[entity],
    )


def builtin_passages(parts: tuple[str, ...] = PARTS, max_phenotypes: int = 12) -> Iterator[Passage]:
    Ontology = ontology()
    if "orphanet" in parts or "omim" in parts:
        for kind, diseases, prefix in (
            ("orphanet", Ontology.orpha_diseases, "ORPHA"),
            ("omim", Ontology.omim_diseases, "OMIM"),
        ):
            if kind not in parts:
                continue
            for disease in sorted(diseases, key=lambda d: d.id):
                # the most telling phenotypes: those annotated to the fewest diseases
                terms = sorted(
                    (Ontology.get_hpo_object(h) for h in disease.hpo),
                    key=lambda t: (len(t.orpha_diseases) + len(t.omim_diseases), t.name),
                )
                names = sorted(t.name for t in terms[:max_phenotypes])
                if not names:
                    continue
                text = f"{disease.name} is associated with: {', '.join(names)}."
                pid = f"{prefix}:{disease.id}"
                yield _passage(
                    pid, disease.name, text, kind, "HPO annotations (custom licence)", pid
                )
    if "hpo" in parts:
        for term in sorted(Ontology, key=lambda t: t.id):
            definition = term.definition.strip('"').split('" [')[0] if term.definition else ""
            if definition and not term.is_obsolete:
                yield _passage(
                    term.id, term.name, definition, "hpo", "HPO (custom licence)", term.id
                )
    if "icd10cm" in parts:
        import simple_icd_10_cm as cm

        for code in cm.get_all_codes(with_dots=True):
            if cm.is_category(code) and not cm.is_chapter_or_block(code):
                children = [f"{c} {cm.get_description(c)}" for c in cm.get_children(code)][:20]
                text = f"{code} {cm.get_description(code)}." + (
                    f" Codes: {'; '.join(children)}." if children else ""
                )
                yield _passage(
                    f"ICD10CM:{code}",
                    cm.get_description(code),
                    text,
                    "icd10cm",
                    "ICD-10-CM (public domain)",
                    f"ICD10CM:{code}",
                )
