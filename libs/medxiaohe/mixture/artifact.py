"""A mixture as a versioned artifact (``mixtures/<name>/<version>``: the sampled record
references per shard with their repeat counts, the statistics beside uniform sampling, the
config and what it was built from), and the reader that streams its records for training."""

from __future__ import annotations

import dataclasses
import io
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow.parquet as pq

from medxiaohe import __version__
from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.shards import shards_prefix
from medxiaohe.mixture.sampler import Mixture
from medxiaohe.storage import ArtifactStore, Manifest, publish, read_file, resolve

PREFIX = "mixtures"


def mixture_prefix(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or len(name) > 100:
        raise InvalidInput("a mixture name has 1..100 letters, digits, '-', '_' or '.'")
    return f"{PREFIX}/{name}"


def publish_mixture(
    store: ArtifactStore, name: str, mixture: Mixture, datasets: Sequence[str], tree_version: str
) -> Manifest:
    """Published once per content: the same inputs and config give the same version."""
    provenance = {
        "config": dataclasses.asdict(mixture.config),
        "datasets": list(datasets),
        "entity_tree_version": tree_version,
        "code_version": __version__,
    }
    files = {
        **mixture.parts,
        "stats.json": json.dumps(mixture.report(), sort_keys=True, indent=1).encode(),
        "provenance.json": json.dumps(provenance, sort_keys=True, indent=1).encode(),
    }
    return publish(store, mixture_prefix(name), files)


def load_stats(store: ArtifactStore, manifest: Manifest) -> dict[str, Any]:
    stats: dict[str, Any] = json.loads(read_file(store, manifest, "stats.json"))
    return stats


COLUMNS = ["id", "source", "text", "image_uris"]  # what a record in the stream carries


def iter_mixture(
    store: ArtifactStore,
    manifest: Manifest,
    *,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    start: int = 0,
) -> Iterator[dict[str, Any]]:
    """The mixture's records for one rank, each as often as it was drawn: shards in a seeded
    order, each shard's draws shuffled within it (one shard's texts in memory at a time). Item
    ``i`` of the whole stream goes to rank ``i % world``; ``start`` skips this rank's first
    items, so a job resumes at a record offset."""
    if not 0 <= rank < world:
        raise InvalidInput("rank must be in [0, world)")
    parts = sorted(f for f in manifest.files if f.startswith("samples/"))
    order = random.Random(seed)  # noqa: S311 (shuffling, not secrets)
    order.shuffle(parts)
    position, served = 0, 0
    for part in parts:
        refs = pq.read_table(io.BytesIO(read_file(store, manifest, part))).to_pylist()
        if not refs:
            continue
        draws = [r["row"] for r in refs for _ in range(r["repeats"])]
        order.shuffle(draws)
        mine = [row for i, row in enumerate(draws, position) if i % world == rank]
        position += len(draws)
        if served + len(mine) <= start:
            served += len(mine)
            continue
        shard = resolve(store, shards_prefix(refs[0]["dataset"]), refs[0]["shard"])
        records = read_file(store, shard, "records.parquet")
        table = pq.read_table(io.BytesIO(records), columns=COLUMNS)
        for row in mine:
            if served >= start:
                yield {k: v[0] for k, v in table.slice(row, 1).to_pydict().items()}
            served += 1
