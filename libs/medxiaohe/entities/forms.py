"""Surface forms: every way a node may be written, normalized once, with the rules that drop
forms too short or too ambiguous to match safely."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from medxiaohe.entities.normalize import normalize_term, plural_variants, uninvert

if TYPE_CHECKING:
    from medxiaohe.entities.tree import NodeRecord

# Qualifiers that vocabularies append and that notes leave out.
_QUALIFIERS = re.compile(
    r"(,? (unspecified( organism| site| type| cause)?|nos|not elsewhere classified|"
    r"not otherwise specified|without complications?|of unspecified site)$)"
    r"|( \((disorder|finding)\))"
)
# Forms that are common English words or too generic to name one concept.
STOP_FORMS = frozenset(
    """
    all aid ads arm back bed bowel cold cry ear eye face fat fit fits foot gas hand head
    high hip hot ill iron joint kid knee large leg lip long low male female mass mood mouth
    heart nail neck nose old part sad short skin small sore tall tear toe tone weak wet
    other others disease diseases disorder disorders syndrome syndromes abnormality
    abnormalities finding findings condition conditions normal abnormal unspecified unknown
    multiple single type phenotype susceptibility injury injuries encounter sequela history
    status problem problems complication complications infection lesion lesions
    mutation deficiency failure defect defects anomaly anomalies change changes
    """.split()  # noqa: SIM905
)
# Short abbreviations that are safe in clinical text, and what they stand for.
ABBREVIATIONS = {
    "copd": "chronic obstructive pulmonary disease",
    "chf": "congestive heart failure",
    "cad": "coronary artery disease",
    "htn": "hypertension",
    "t2dm": "type 2 diabetes mellitus",
    "t1dm": "type 1 diabetes mellitus",
    "dm2": "type 2 diabetes mellitus",
    "ckd": "chronic kidney disease",
    "aki": "acute kidney failure",
    "dvt": "deep vein thrombosis",
    "gerd": "gastro esophageal reflux disease",
    "uti": "urinary tract infection",
    "afib": "atrial fibrillation",
    "ards": "acute respiratory distress syndrome",
    "nstemi": "non st elevation myocardial infarction",
    "stemi": "st elevation myocardial infarction",
    "tia": "transient cerebral ischemic attack",
    "osa": "obstructive sleep apnea",
    "ibd": "inflammatory bowel disease",
    "sle": "systemic lupus erythematosus",
    "als": "amyotrophic lateral sclerosis",
    "adhd": "attention deficit hyperactivity disorder",
    "ptsd": "post traumatic stress disorder",
    "hiv": "human immunodeficiency virus disease",
    "pe": "pulmonary embolism",
    "mi": "myocardial infarction",
}
SHORT_OK = frozenset(ABBREVIATIONS)
MIN_CHARS = 3
MAX_NODES_PER_FORM = 25


def _variants(term: str) -> list[str]:
    variants = [term]
    inverted = uninvert(term)
    if inverted:
        variants.append(inverted)
    for text in list(variants):
        stripped = _QUALIFIERS.sub("", text.lower()).strip(" ,")
        if stripped and stripped != text.lower():
            variants.append(stripped)
    return variants


def drop_reason(form: str) -> str | None:
    """Why a normalized form is not safe to match, or None."""
    if not any(c.isalpha() for c in form):
        return "no_letters"
    if form in SHORT_OK:
        return None
    if len(form) < MIN_CHARS:
        return "shorter_than_3"
    if " " not in form and len(form) <= 3:
        return "short_single_token"  # "ALL", "ASD", "VSD": ambiguous out of context
    if form in STOP_FORMS:
        return "common_or_generic_word"
    return None


def surface_forms(
    records: Sequence[NodeRecord],
) -> tuple[dict[str, tuple[int, ...]], Counter[str]]:
    """Normalized form -> node indices (best first), and how many forms each rule dropped."""
    source_rank = {"ICD-10-CM": 0, "Orphanet": 1, "OMIM": 2, "HPO": 3, "MET": 4}
    candidates: dict[str, dict[int, tuple[int, int, int]]] = defaultdict(dict)
    for index, record in enumerate(records):
        if record.source == "MET":
            continue
        for kind, term in enumerate([record.name, *record.synonyms]):
            for derived, variant in enumerate(_variants(term)):
                form = normalize_term(variant)
                rank = (min(kind, 1) + min(derived, 1), source_rank[record.source], record.level)
                for n, key in enumerate([form, *plural_variants(form)]):
                    key_rank = (rank[0] + n, *rank[1:])
                    best = candidates[key].get(index)
                    if best is None or key_rank < best:
                        candidates[key][index] = key_rank
    by_name = {normalize_term(record.name): i for i, record in enumerate(records)}
    for abbreviation, expansion in ABBREVIATIONS.items():
        if expansion in candidates:
            candidates[abbreviation].update(candidates[expansion])
        elif expansion in by_name:
            candidates[abbreviation][by_name[expansion]] = (2, 0, 0)
    forms: dict[str, tuple[int, ...]] = {}
    dropped: Counter[str] = Counter()
    for form, nodes in candidates.items():
        reason = drop_reason(form)
        if reason is None and len(nodes) > MAX_NODES_PER_FORM:
            reason = f"names_more_than_{MAX_NODES_PER_FORM}_nodes"
        if reason:
            dropped[reason] += 1
            continue
        forms[form] = tuple(sorted(nodes, key=nodes.__getitem__))
    return forms, dropped
