"""`medxiaohe ingest` and `medxiaohe coverage`: the bulk path and what it covered."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from medxiaohe.common.logs import setup_logging
from medxiaohe.common.settings import Settings
from medxiaohe.storage import open_store

DatasetOption = Annotated[str, typer.Option(help="Dataset the shards belong to.")]


def _in_process(
    settings: Settings,
    secret: str,
    dataset: str,
    specs: list[dict[str, Any]],
    benchmarks: Path | None = None,
) -> list[dict[str, Any]]:
    """One worker's share of the shards, in this process (dedup spans all of them)."""
    from medxiaohe.corpus.ingest import ShardIngestor, ShardSpec
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import EntityTree

    store = open_store(settings.store_uri, settings)
    tagger = DictionaryTagger(EntityTree.load(store, version=settings.met_version or None))
    index = None
    if benchmarks:
        from medxiaohe.eval.harness.contamination import benchmark_index
        from medxiaohe.eval.harness.evaluate import load_items
        from medxiaohe.eval.harness.suites import SUITES

        loaded, _ = load_items(list(SUITES), benchmarks, {}, 0)
        index = benchmark_index([i for items in loaded.values() for i in items])
    ingestor = ShardIngestor(store, dataset, tagger, secret, benchmarks=index)
    return [ingestor.process(ShardSpec(s["shard_id"], tuple(s["keys"]))).as_dict() for s in specs]


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest.")],
    dataset: DatasetOption = "bulk",
    workers: Annotated[int, typer.Option(min=1, help="Parallel workers (processes).")] = 1,
    files_per_shard: Annotated[int, typer.Option(min=1, help="Input files per shard.")] = 64,
    home: Annotated[
        Path, typer.Option(help="Embedded home: its secret keys a local store's pseudonyms.")
    ] = Path(".medxiaohe"),
    drop_benchmark_overlap: Annotated[
        Path | None,
        typer.Option(help="Benchmark data root: drop records that copy one of its items."),
    ] = None,
) -> None:
    """Run the ingestion pipeline over files: shards become Celery tasks when a broker is
    configured, or run in this machine's processes; a re-run skips finished shards."""
    from medxiaohe.corpus.ingest import plan_shards, upload_inputs

    settings = Settings.from_env()
    setup_logging("WARNING")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise typer.BadParameter(f"no such file or folder: {', '.join(missing)}")
    from medxiaohe.common.secrets import home_or_configured_secret

    if drop_benchmark_overlap and settings.broker_url:
        raise typer.BadParameter("--drop-benchmark-overlap runs in this machine's processes only")
    secret = home_or_configured_secret(settings, home)
    store = open_store(settings.store_uri, settings)
    keys = upload_inputs(store, dataset, paths, secret)
    specs = [s.as_dict() for s in plan_shards(keys, files_per_shard)]
    results: list[dict[str, Any]] = []
    with Progress(transient=False) as progress:
        task = progress.add_task(f"ingesting {dataset}", total=len(specs))
        if settings.broker_url:
            from medxiaohe_services.worker.app import make_app
            from medxiaohe_services.worker.dispatch import run_shards

            results = run_shards(
                make_app(settings), dataset, specs, lambda _: progress.advance(task)
            )
        else:
            shares = [specs[i::workers] for i in range(workers)]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(
                    _in_process,
                    [settings] * workers,
                    [secret] * workers,
                    [dataset] * workers,
                    shares,
                    [drop_benchmark_overlap] * workers,
                ):
                    results.extend(done)
                    progress.advance(task, len(done))
    summary = {
        "dataset": dataset,
        "shards": len(results),
        "skipped": sum(r["skipped"] for r in results),
        "kept": sum(r["kept"] for r in results),
        "dropped": sum(r["dropped"] for r in results),
        "quarantined": sum(r.get("quarantined", 0) for r in results),
    }
    typer.echo(json.dumps(summary))


def coverage(
    dataset: DatasetOption = "bulk",
    min_mentions: Annotated[int, typer.Option(min=1, help="Gap threshold.")] = 1,
    gaps: Annotated[int, typer.Option(min=0, help="How many gaps to list.")] = 10,
    plot: Annotated[Path | None, typer.Option(help="Write the coverage plot (PNG) here.")] = None,
) -> None:
    """Coverage of the entity tree by a dataset, its gap report (rare diseases first), a plot."""
    from medxiaohe.corpus.coverage import Coverage
    from medxiaohe.corpus.shards import dataset_coverage
    from medxiaohe.entities.tree import EntityTree

    settings = Settings.from_env()
    store = open_store(settings.store_uri, settings)
    tree = EntityTree.load(store, version=settings.met_version or None)
    result = Coverage(tree, dataset_coverage(store, dataset))
    if plot:
        plot.write_bytes(result.plot_png())
    covered = [result.node(i) for i in range(len(tree)) if result.mentions[i]]
    top = sorted(covered, key=lambda n: -n.mentions)[:10]
    report = {
        "dataset": dataset,
        "entity_tree_version": tree.version,
        "nodes_mentioned": len(covered),
        "mentions": sum(result.mentions),
        "top_nodes": [{"node_id": n.node_id, "name": n.name, "mentions": n.mentions} for n in top],
        "coverage": result.summary(),
        "gaps": [
            {"node_id": n.node_id, "name": n.name, "rare": n.rare, "reason": why, "path": path}
            for n, path, why in result.gaps(min_mentions, gaps)
        ],
    }
    typer.echo(json.dumps(report, indent=2))
