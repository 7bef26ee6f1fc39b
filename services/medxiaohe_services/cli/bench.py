"""`medxiaohe bench ...`: benchmarks that run their anchors side by side, one JSON object each.

The benchmarks are tools of the source checkout (``benchmarks/`` at its root), not part of the
installed library: each command puts that folder on the import path before importing it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from medxiaohe.common.logs import setup_logging
from medxiaohe_services.cli.met import StoreOption, store_from


def checkout() -> None:
    """Make the checkout's ``benchmarks`` package importable (a clear error without one)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "benchmarks" / "__init__.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return
    typer.echo(
        "`medxiaohe bench` runs from a source checkout: benchmarks/ is not installed", err=True
    )
    raise typer.Exit(2)


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
    checkout()
    from benchmarks.tagging import run
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
    checkout()
    from benchmarks.ingest import run
    from medxiaohe.entities.tree import EntityTree

    setup_logging("WARNING")
    typer.echo(json.dumps(run(EntityTree.load(store_from(store)), docs, repeats)))


@app.command()
def decontaminate(
    dataset: Annotated[str, typer.Option(help="An ingested dataset (make train-small: small).")] = (
        "small"
    ),
    data: Annotated[Path, typer.Option(help="The shared data root (the suites).")] = Path(
        "../shared/data"
    ),
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats (median).")] = 3,
    store: StoreOption = None,
) -> None:
    """The benchmark-overlap scan (13-grams, hashed in numpy) vs joined-string n-gram lookup,
    over an ingested dataset against every suite."""
    checkout()
    from benchmarks.decontamination import run
    from medxiaohe.eval.harness.evaluate import load_items
    from medxiaohe.eval.harness.suites import SUITES

    items, skipped = load_items(list(SUITES), data, {}, 0)
    if skipped:
        raise typer.BadParameter(f"suites missing under {data}: {', '.join(skipped)}")
    every = [i for suite in items.values() for i in suite]
    typer.echo(json.dumps(run(store_from(store), every, dataset, repeats)))


@app.command()
def retrieval(
    beir_dir: Annotated[Path, typer.Option(help="BEIR folder (corpus, queries, qrels).")],
    split: Annotated[str, typer.Option(help="qrels split to score (train for tuning).")] = "train",
    limit_queries: Annotated[int, typer.Option(min=0, help="Score only the first N queries.")] = 0,
) -> None:
    """nDCG@10 and Recall@10/100 for lexical, dense, hybrid and two BM25 baselines."""
    checkout()
    from benchmarks.retrieval import run

    if not beir_dir.is_dir():
        raise typer.BadParameter(f"{beir_dir} is not a folder")
    setup_logging("WARNING")
    typer.echo(json.dumps(run(beir_dir, split, limit_queries)))


@app.command("retrieval-scale")
def retrieval_scale(
    passages: Annotated[int, typer.Option(min=1000, help="Passages in the index.")] = 100_000,
    queries: Annotated[int, typer.Option(min=10, help="Queries to time.")] = 200,
) -> None:
    """Latency p50/p99 per mode and lexical build speed at scale, on one core."""
    checkout()
    from benchmarks.retrieval_scale import run

    setup_logging("WARNING")
    typer.echo(json.dumps(run(passages, queries)))


@app.command()
def serving(
    requests: Annotated[int, typer.Option(min=3, help="Requests per side, all pairs.")] = 80,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens generated per request.")] = 64,
    hidden_size: Annotated[int, typer.Option(min=16, help="Width of the tiny model.")] = 256,
    layers: Annotated[int, typer.Option(min=1, help="Layers of the tiny model.")] = 4,
    pairs: Annotated[
        int, typer.Option(min=1, help="Pairs of processes (predictor, raw generate).")
    ] = 4,
) -> None:
    """The predictor over HTTP vs raw model.generate, each in a process of its own, on the
    same tiny model."""
    checkout()
    from benchmarks.serving import run

    setup_logging("WARNING")
    typer.echo(json.dumps(run(requests, max_tokens, hidden_size, layers, pairs=pairs)))


@app.command()
def mixture(
    data: Annotated[Path, typer.Option(help="The shared data folder.")] = Path("../shared/data"),
    budget_share: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Token budget as a share of the corpus.")
    ] = 0.25,
    home: Annotated[
        Path, typer.Option(help="Embedded home: its secret keys a local store's pseudonyms.")
    ] = Path(".medxiaohe"),
    store: StoreOption = None,
) -> None:
    """Balanced mixture vs uniform sampling on the shared corpus (ingested once), the sampler's
    overhead on a CPT step, and the synthesis figures."""
    checkout()
    from benchmarks.mixture import run
    from medxiaohe.common.errors import NotFound
    from medxiaohe.common.secrets import home_or_configured_secret
    from medxiaohe.common.settings import Settings
    from medxiaohe.entities.tree import EntityTree

    setup_logging("WARNING")
    target = store_from(store)
    try:
        result = run(
            target,
            EntityTree.load(target),
            home_or_configured_secret(Settings.from_env(), home),
            data,
            budget_share,
        )
    except NotFound as exc:
        typer.echo(f"skipped: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result))


@app.command()
def entropy(
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per action (medians).")] = 2,
    steps: Annotated[int, typer.Option(min=20, help="GRPO steps per run.")] = 60,
) -> None:
    """The RL stage's actions below the entropy floor (bonus, temperature rise) beside none,
    on the tiny model's toy task: reward and entropy, medians over seeds."""
    checkout()
    from benchmarks.entropy import compare

    setup_logging("WARNING")
    typer.echo(json.dumps(compare(seeds, steps)))


@app.command()
def reliability(
    documents: Annotated[
        int, typer.Option(min=20, help="Documents bulk-ingested under faults.")
    ] = 10_000,
    inputs: Annotated[
        int, typer.Option(min=10, help="Generated inputs per reader and per RPC.")
    ] = 10_000,
    rate: Annotated[
        float, typer.Option(min=1, help="Requests per second of each loaded RPC.")
    ] = 200,
    seconds: Annotated[float, typer.Option(min=1, help="Seconds of load.")] = 60,
    work: Annotated[Path | None, typer.Option(help="Keep servers' data and logs here.")] = None,
) -> None:
    """Faults (workers, Valkey and weed killed mid-ingest), fuzz (every reader and RPC), load
    (TagEntities and RetrieveEvidence over mTLS) and concurrency (racing index writers, a
    passed deadline, SIGTERM under writes), each against real servers started on 127.0.0.1."""
    checkout()
    from benchmarks.reliability import run

    setup_logging("ERROR")
    typer.echo(
        json.dumps(run(work, documents=documents, inputs=inputs, rate=rate, seconds=seconds))
    )
