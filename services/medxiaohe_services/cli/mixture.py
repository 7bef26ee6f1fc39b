"""`medxiaohe mixture build`: an entity-balanced mixture of ingested datasets, published to the
store, its statistics printed beside uniform sampling at the same budget and seed."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from medxiaohe_services.cli.met import StoreOption, store_from

app = typer.Typer(help="Entity-balanced pretraining mixtures.", no_args_is_help=True)


def _quotas(values: list[str]) -> dict[str, float]:
    quotas = {}
    for value in values:
        source, _, share = value.partition("=")
        try:
            quotas[source] = float(share)
        except ValueError:
            raise typer.BadParameter(f"--quota takes SOURCE=SHARE, not {value!r}") from None
    return quotas


@app.command()
def build(
    dataset: Annotated[list[str], typer.Option(help="An ingested dataset (repeatable).")],
    budget: Annotated[int, typer.Option(min=1, help="Token budget (whitespace words).")],
    name: Annotated[str, typer.Option(help="Published as mixtures/NAME/<version>.")] = "cpt",
    temperature: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="1: natural; 0: uniform over entities.")
    ] = 0.3,
    rare_boost: Annotated[
        float, typer.Option(min=1.0, help="Weight factor of rare diseases.")
    ] = 4.0,
    weak_boost: Annotated[
        float, typer.Option(min=1.0, help="Weight factor of bottom-decile (gap) nodes.")
    ] = 2.0,
    floor: Annotated[
        float, typer.Option(min=0.0, help="Weight of records with no entity (mean entity = 1).")
    ] = 0.2,
    combine: Annotated[
        str, typer.Option(help="A record's weight from its nodes: sum, max, mean.")
    ] = "sum",
    quota: Annotated[
        list[str] | None, typer.Option(help="SOURCE=SHARE of the budget (repeatable).")
    ] = None,
    max_repeats: Annotated[int, typer.Option(min=1, help="Most copies of one record.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the draw.")] = 0,
    store: StoreOption = None,
) -> None:
    """Build, publish and print {"balanced", "uniform", "ratios", "uri"} as one JSON object."""
    from medxiaohe.common.errors import MedxError
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.mixture.artifact import publish_mixture
    from medxiaohe.mixture.sampler import MixtureConfig, build_mixture
    from medxiaohe.mixture.weights import WeightConfig

    target = store_from(store)
    try:
        config = MixtureConfig(
            budget,
            WeightConfig(temperature, rare_boost, weak_boost, floor, combine),
            _quotas(quota or []),
            max_repeats,
            seed,
        )
        tree = EntityTree.load(target)
        mixture = build_mixture(target, tree, dataset, config)
        manifest = publish_mixture(target, name, mixture, dataset, tree.version)
    except MedxError as exc:
        raise typer.BadParameter(str(exc)) from None
    report = mixture.report() | {"uri": f"{manifest.prefix}/{manifest.version}"}
    typer.echo(json.dumps(report, indent=2))
