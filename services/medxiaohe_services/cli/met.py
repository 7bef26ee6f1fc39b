"""`medxiaohe met ...`: build the Medical Entity Tree and describe it."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from medxiaohe.common.logs import setup_logging
from medxiaohe.common.settings import Settings
from medxiaohe.storage import ArtifactStore, open_store

app = typer.Typer(help="The Medical Entity Tree.", no_args_is_help=True)
StoreOption = Annotated[
    str | None, typer.Option("--store", help="Store URI; MEDXIAOHE_STORE_URI by default.")
]


def store_from(uri: str | None) -> ArtifactStore:
    settings = Settings.from_env()
    return open_store(uri or settings.store_uri, settings)


@app.command()
def build(store: StoreOption = None) -> None:
    """Build the tree from ICD-10-CM, HPO, OMIM and Orphanet and publish it to the store."""
    from medxiaohe.entities.build import build_tree

    setup_logging("WARNING")
    started = time.perf_counter()
    tree = build_tree()
    manifest = tree.save(store_from(store))
    stats = tree.stats() | {"build_s": round(time.perf_counter() - started, 1)}
    typer.echo(json.dumps(stats | {"uri": f"{manifest.prefix}/{manifest.version}"}, indent=2))


@app.command()
def stats(
    store: StoreOption = None,
    version: Annotated[
        str | None, typer.Option(help="Tree version; the latest when omitted.")
    ] = None,
) -> None:
    """Print the published tree's statistics as one JSON object."""
    from medxiaohe.entities.tree import EntityTree

    started = time.perf_counter()
    tree = EntityTree.load(store_from(store), version=version)
    load_s = round(time.perf_counter() - started, 2)
    typer.echo(json.dumps(tree.stats() | {"load_s": load_s}))
