"""`medxiaohe index build`: an evidence index from a corpus or the built-in vocabularies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from medxiaohe.common.logs import setup_logging
from medxiaohe_services.cli.met import StoreOption, store_from

app = typer.Typer(help="Evidence indexes.", no_args_is_help=True)


@app.command()
def build(
    name: Annotated[str, typer.Option(help="Index name (evidence/<name> in the store).")],
    corpus: Annotated[Path | None, typer.Option(help="JSONL file or BEIR folder.")] = None,
    builtin: Annotated[str, typer.Option(help="Built-in parts: orphanet,omim,hpo,icd10cm.")] = "",
    store: StoreOption = None,
) -> None:
    """Chunk, embed (checkpointed: a re-run resumes) and publish an index."""
    from medxiaohe.evidence.build import build_index, read_passages
    from medxiaohe.evidence.builtin import PARTS, builtin_passages

    setup_logging("WARNING")
    if bool(corpus) == bool(builtin):
        raise typer.BadParameter("give exactly one of --corpus or --builtin")
    if builtin:
        parts = tuple(p for p in builtin.split(",") if p)
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise typer.BadParameter(f"unknown built-in parts {unknown}; known: {list(PARTS)}")
        passages = list(builtin_passages(parts))
    else:
        assert corpus is not None
        passages = read_passages(corpus)
    with Progress() as bar:
        task = bar.add_task(f"indexing {len(passages):,} passages", total=None)
        manifest = build_index(
            store_from(store),
            name,
            passages,
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(json.dumps({"name": name, "version": manifest.version, "passages": len(passages)}))
