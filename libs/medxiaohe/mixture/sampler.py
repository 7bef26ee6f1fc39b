"""Build an entity-balanced mixture from ingested datasets, streaming over their shards.

Three passes, one shard in memory at a time: (1) node document frequencies from each shard's
coverage counts; (2) each record's tokens and weight (two numbers a record are all that is kept);
(3) each record's copies, drawn deterministically from its expected count, written per shard,
and the statistics of the balanced mixture and of uniform sampling at the same budget and seed.

Tokens are whitespace-separated words (what the budget is counted in; a model's tokenizer
multiplies them by a roughly constant factor). The expected copies of a record are ``s * w``
capped at ``max_repeats``, with ``s`` solved by bisection so the expected tokens of each source
group meet its share of the budget: quota sources one by one, the rest together."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.coverage import CoverageCounts
from medxiaohe.corpus.shards import list_shards
from medxiaohe.entities.tree import EntityTree
from medxiaohe.mixture.weights import NodeWeights, WeightConfig, with_floor
from medxiaohe.storage import ArtifactStore, Manifest, read_file

COLUMNS = ["id", "source", "text", "mentions"]  # pass 2 needs the text; pass 3 does not
REACHED = 5  # "nodes reached" counts nodes drawn at least this often
SAMPLES = pa.schema(
    [
        ("dataset", pa.string()),
        ("shard", pa.string()),
        ("row", pa.int32()),
        ("id", pa.string()),
        ("tokens", pa.int32()),
        ("repeats", pa.int16()),
    ]
)


@dataclass(frozen=True)
class MixtureConfig:
    budget_tokens: int
    weights: WeightConfig = field(default_factory=WeightConfig)
    quotas: dict[str, float] = field(default_factory=dict)  # source -> share of the budget
    max_repeats: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget_tokens < 1:
            raise InvalidInput("the token budget must be positive")
        if self.max_repeats < 1:
            raise InvalidInput("max_repeats must be at least 1")
        if any(not 0 < q <= 1 for q in self.quotas.values()) or sum(self.quotas.values()) > 1:
            raise InvalidInput("quotas are shares in (0, 1] that add up to at most 1")


@dataclass
class Stats:
    """What a mixture holds: tokens by source, top-level type and tree level, the long-tail
    share, and how often each node was drawn."""

    tokens: int = 0
    records: int = 0
    long_tail_tokens: int = 0
    by_source: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    by_level: Counter[str] = field(default_factory=Counter)
    reached: Counter[str] = field(default_factory=Counter)

    def add(
        self, source: str, tokens: int, copies: int, nodes: set[str], tree: EntityTree, tail: bool
    ) -> None:
        if not copies:
            return
        amount = tokens * copies
        self.tokens += amount
        self.records += 1
        self.by_source[source] += amount
        self.long_tail_tokens += amount * tail
        types = {tree.columns["type"][tree.index[n]] for n in nodes} or {"none"}
        levels = {str(tree.columns["level"][tree.index[n]]) for n in nodes} or {"none"}
        for name in types:
            self.by_type[name] += amount
        for level in levels:
            self.by_level[level] += amount
        for node in nodes:
            self.reached[node] += copies

    def summary(self, head: set[str]) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "records": self.records,
            "long_tail_share": round(self.long_tail_tokens / self.tokens, 4)
            if self.tokens
            else 0.0,
            "nodes_reached_5": sum(c >= REACHED for c in self.reached.values()),
            "head_coverage": sum(self.reached[n] for n in head),
            "tokens_per_source": dict(sorted(self.by_source.items())),
            "tokens_per_type": dict(sorted(self.by_type.items())),
            "tokens_per_level": dict(sorted(self.by_level.items())),
        }


def _shards(store: ArtifactStore, datasets: Sequence[str]) -> list[tuple[str, Manifest]]:
    found = [(d, m) for d in datasets for m in list_shards(store, d)]
    if not found:
        raise InvalidInput(f"no ingested shards in {', '.join(datasets)}")
    return found


def _read(store: ArtifactStore, manifest: Manifest, columns: Sequence[str] = COLUMNS) -> pa.Table:
    data = read_file(store, manifest, "records.parquet")
    return pq.read_table(io.BytesIO(data), columns=list(columns))


def _nodes(mentions: list[dict[str, Any]], tree: EntityTree) -> set[str]:
    return {m["node_id"] for m in mentions if m["node_id"] and m["node_id"] in tree.index}


def expected_copies(weights: np.ndarray, tokens: np.ndarray, budget: float, cap: int) -> np.ndarray:
    """``min(cap, s * w)`` with ``s`` such that the expected tokens meet ``budget`` (or every
    record at ``cap`` when the group cannot fill it)."""

    def filled(scale: float) -> float:
        return float((np.minimum(cap, scale * weights) * tokens).sum())

    if float(tokens[weights > 0].sum()) * cap <= budget:
        return np.where(weights > 0, float(cap), 0.0)
    low, high = 0.0, 1.0
    while filled(high) < budget:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if filled(middle) < budget else (low, middle)
    return np.minimum(cap, high * weights)


def draw(expected: float, key: str, seed: int) -> int:
    """The copies of one record: its expected count rounded up with probability equal to the
    fraction, from a hash of the seed and the record (the same whatever the order)."""
    whole = int(expected)
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return whole + int(int.from_bytes(digest, "big") / 2**64 < expected - whole)


def _solve(
    sources: np.ndarray,
    names: list[str],
    weights: np.ndarray,
    tokens: np.ndarray,
    config: MixtureConfig,
) -> np.ndarray:
    expected = np.zeros(weights.shape)
    quota = {names.index(s): q for s, q in config.quotas.items() if s in names}
    missing = set(config.quotas) - set(names)
    if missing:
        raise InvalidInput(f"quota for sources with no records: {', '.join(sorted(missing))}")
    rest = ~np.isin(sources, list(quota))
    groups = [(sources == i, share) for i, share in quota.items()]
    if rest.any():
        groups.append((rest, 1.0 - sum(quota.values())))
    for mask, share in groups:
        expected[mask] = expected_copies(
            weights[mask], tokens[mask], share * config.budget_tokens, config.max_repeats
        )
    return expected


@dataclass
class Mixture:
    config: MixtureConfig
    balanced: Stats
    uniform: Stats
    head: set[str]
    parts: dict[str, bytes]  # samples/<dataset>/<shard>.parquet

    def report(self) -> dict[str, Any]:
        balanced, uniform = self.balanced.summary(self.head), self.uniform.summary(self.head)
        ratios = {
            key: round(balanced[key] / uniform[key], 3) if uniform[key] else None
            for key in ("long_tail_share", "nodes_reached_5", "head_coverage")
        }
        return {"balanced": balanced, "uniform": uniform, "ratios": ratios}


def build_mixture(
    store: ArtifactStore, tree: EntityTree, datasets: Sequence[str], config: MixtureConfig
) -> Mixture:
    shards = _shards(store, datasets)
    # pass 1: document frequencies
    counts = CoverageCounts()
    for _, manifest in shards:
        counts.merge(CoverageCounts.from_json(read_file(store, manifest, "coverage.json")))
    documents: Counter[str] = Counter()
    for table in counts.counts.values():
        for node_id, (_, docs) in table.items():
            documents[node_id] += docs
    nodes = NodeWeights(tree, documents, config.weights)
    # pass 2: tokens, weight and source of every record (three numbers a record)
    names: list[str] = []
    raw, tokens, sources = [], [], []
    for _, manifest in shards:
        rows = _read(store, manifest).to_pylist()
        for row in rows:
            if row["source"] not in names:
                names.append(row["source"])
        sources.append(np.array([names.index(r["source"]) for r in rows], dtype=np.int32))
        tokens.append(np.array([len(r["text"].split()) for r in rows], dtype=np.float64))
        raw.append(np.array([nodes.record(_nodes(r["mentions"], tree)) for r in rows]))
    source_array, token_array = np.concatenate(sources), np.concatenate(tokens)
    weights = with_floor(np.concatenate(raw), config.weights.floor)
    balanced = _solve(source_array, names, weights, token_array, config)
    uniform = _solve(source_array, names, np.ones(len(weights)), token_array, config)
    # pass 3: draw, count, write
    mixture = Mixture(config, Stats(), Stats(), nodes.head, {})
    position = 0
    for dataset, manifest in shards:
        drawn: list[dict[str, Any]] = []
        rows = _read(store, manifest, ["id", "source", "mentions"]).to_pylist()
        for index, row in enumerate(rows):
            found = _nodes(row["mentions"], tree)
            count = int(token_array[position])
            tail = nodes.long_tail(found)
            key = f"{dataset}/{manifest.version}/{row['id']}"
            copies = draw(balanced[position], key, config.seed)
            mixture.balanced.add(row["source"], count, copies, found, tree, tail)
            mixture.uniform.add(
                row["source"], count, draw(uniform[position], key, config.seed), found, tree, tail
            )
            if copies:
                drawn.append(
                    {
                        "dataset": dataset,
                        "shard": manifest.version,
                        "row": index,
                        "id": row["id"],
                        "tokens": count,
                        "repeats": copies,
                    }
                )
            position += 1
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(drawn, schema=SAMPLES), sink, compression="zstd")
        mixture.parts[f"samples/{dataset}/{manifest.version}.parquet"] = sink.getvalue()
    return mixture


def iter_samples(parts: dict[str, bytes]) -> Iterator[dict[str, Any]]:
    for name in sorted(parts):
        yield from pq.read_table(io.BytesIO(parts[name])).to_pylist()
