"""`medxiaohe eval ...`: benchmark harnesses that print one JSON object."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from medxiaohe_services.cli.met import StoreOption, store_from

app = typer.Typer(help="Evaluate against benchmark data.", no_args_is_help=True)


@app.command()
def tagging(
    conll: Annotated[Path, typer.Option(help="CoNLL/IOB TSV file (token<TAB>tag).")],
    types: Annotated[str, typer.Option(help="Comma-separated entity types to score.")] = "",
    tagger: Annotated[
        str, typer.Option(help="dictionary (the NER tagger comes later).")
    ] = "dictionary",
    store: StoreOption = None,
) -> None:
    """Entity-level exact-match precision, recall and F1 of a tagger on a CoNLL file."""
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.eval.tagging import CORPUS_TYPE, evaluate, read_conll

    if tagger != "dictionary":
        raise typer.BadParameter(f"unknown tagger {tagger!r}; available: dictionary")
    if not conll.is_file():
        raise typer.BadParameter(f"{conll} does not exist")
    dictionary = DictionaryTagger(EntityTree.load(store_from(store)))

    def predict(text: str) -> Iterator[tuple[int, int, str]]:
        for mention in dictionary.tag(text, assertions=False):
            kind = CORPUS_TYPE.get(mention.entity_type)
            if kind:
                yield mention.start, mention.end, kind

    wanted = [t for t in types.split(",") if t] or None
    typer.echo(json.dumps(evaluate(read_conll(conll), predict, wanted)))


@app.command()
def deid(
    notes: Annotated[int, typer.Option(min=200, help="Synthetic notes to generate.")] = 240,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
) -> None:
    """Recall and precision per PHI type on the synthetic PHI set, without and with the record's
    own patient name as a deny list (as the pipeline runs it)."""
    from medxiaohe.corpus.deid import find_phi
    from medxiaohe.eval.deid import generate_notes, score

    generated = generate_notes(notes, seed)
    report = {
        "notes": len(generated),
        "rules_only": score(generated, lambda n: find_phi(n.text)),
        "with_patient_name": score(generated, lambda n: find_phi(n.text, [n.patient_name])),
    }
    typer.echo(json.dumps(report))
