"""`medxiaohe verify`: the report verifier for any caller. Each input row is a reference report
(the source of truth, free text) and a candidate report (free text); each output row gives
every candidate sentence a verdict and lists the reference findings the candidate leaves out.
The report pipeline's verifier step runs the same code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medxiaohe_services.cli.met import StoreOption


def verify_row(row: Any, verifier: Any) -> dict[str, Any]:
    """One ``{"id", "reference", "candidate"}`` row verified."""
    from medxiaohe.common.errors import InvalidInput

    if not isinstance(row, dict):
        raise ValueError("a row is a JSON object with id, reference and candidate")
    texts = {}
    for field in ("reference", "candidate"):
        value = row.get(field)
        if not isinstance(value, str):
            raise ValueError(f"{field} must be a string")
        texts[field] = value
    try:
        result = verifier.verify(texts["reference"], texts["candidate"])
    except InvalidInput as exc:  # too long
        raise ValueError(str(exc)) from None
    return {"id": row.get("id"), **result.to_json()}


def verify(
    pairs: Annotated[Path, typer.Option(help="JSONL rows: id, reference, candidate.")],
    out: Annotated[Path, typer.Option(help="Where the verified rows go (JSONL).")],
    tree: Annotated[
        bool, typer.Option(help="Add the published Medical Entity Tree's concepts, if any.")
    ] = True,
    store: StoreOption = None,
) -> None:
    """Verify each candidate against its reference: per sentence (offsets into the candidate) a
    verdict (supported, unsupported, contradicted, not_checked), the kind (addition, negation,
    laterality, location, severity) and the reasons; omissions with offsets into the reference.
    A row that cannot be read gets its ``error`` instead. Prints the counts as JSON; the output
    is written whole or not at all."""
    from medxiaohe.radiology.verification import NOT_CHECKED, Verifier

    if not pairs.is_file():
        raise typer.BadParameter(f"{pairs} does not exist")
    tagger, met = published_tagger(store) if tree else (None, None)
    verifier = Verifier(tagger=tagger)
    rows: list[dict[str, Any]] = []
    counts = {"sentences": 0, "decided": 0, "flagged": 0, "omissions": 0, "errors": 0}
    for number, line in enumerate(pairs.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            done = verify_row(json.loads(line), verifier)
        except ValueError as exc:  # JSONDecodeError is one
            counts["errors"] += 1
            rows.append({"id": None, "error": f"line {number}: {str(exc)[:200]}"})
            continue
        rows.append(done)
        sentences = done["sentences"]
        counts["sentences"] += len(sentences)
        counts["decided"] += sum(s["verdict"] != NOT_CHECKED for s in sentences)
        counts["flagged"] += sum(s["verdict"] in ("unsupported", "contradicted") for s in sentences)
        counts["omissions"] += len(done["omissions"])
    partial = out.with_name(out.name + ".partial")
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    partial.replace(out)
    decided = counts["decided"] / counts["sentences"] if counts["sentences"] else 0.0
    summary = {
        "rows": len(rows),
        **counts,
        "decided_share": round(decided, 4),
        "vocabulary": verifier.vocab.version,
        "met": met,
        "out": str(out),
    }
    typer.echo(json.dumps(summary))


def published_tagger(store: str | None) -> tuple[Any, str | None]:
    """The published tree's tagger and version, or (None, None) when none is published."""
    from medxiaohe.common.errors import NotFound
    from medxiaohe.common.settings import Settings
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.storage import open_store

    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    try:
        tree = EntityTree.load(open_store(settings.store_uri), version=settings.met_version or None)
    except NotFound:
        typer.echo("no Medical Entity Tree published: the radiology vocabulary alone", err=True)
        return None, None
    return DictionaryTagger(tree), tree.version
