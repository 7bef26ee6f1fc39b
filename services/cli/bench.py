"""`medxiaohe bench ...`: benchmarks that run their anchors side by side, one JSON object each."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from medxiaohe.common.logs import setup_logging
from medxiaohe_services.cli.met import StoreOption, store_from

app = typer.Typer(
    help="Benchmarks (ours beside the anchor, one JSON object).", no_args_is_help=True
)


@app.command()
def tagging(
    docs: Annotated[int, typer.Option(min=10, help="Documents to tag.")] = 2000,
    terms: Annotated[
        int, typer.Option(min=100, help="Vocabulary size given to all three.")
    ] = 20000,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats (median).")] = 3,
    store: StoreOption = None,
) -> None:
    """Our tagger vs spaCy PhraseMatcher and medspaCy TargetMatcher (same terms, same texts)."""
    from medxiaohe.bench.tagging import run
    from medxiaohe.entities.tree import EntityTree

    setup_logging("WARNING")
    typer.echo(json.dumps(run(EntityTree.load(store_from(store)), docs, terms, repeats)))


@app.command()
def ingest(
    docs: Annotated[int, typer.Option(min=10, help="Documents to ingest.")] = 4000,
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats (median).")] = 3,
    store: StoreOption = None,
) -> None:
    """Our corpus pipeline vs datatrove's reader, filter, MinHash dedup and writer."""
    from medxiaohe.bench.ingest import run
    from medxiaohe.entities.tree import EntityTree

    setup_logging("WARNING")
    typer.echo(json.dumps(run(EntityTree.load(store_from(store)), docs, repeats)))
