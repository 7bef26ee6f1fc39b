"""BEIR-format data (corpus.jsonl[.gz], queries*.jsonl, qrels/<split>.tsv) and ranking metrics."""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from medxiaohe.common.errors import InvalidInput


def _lines(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


def read_corpus(folder: Path) -> list[dict[str, str]]:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).is_file():
            return [json.loads(line) for line in _lines(folder / name) if line.strip()]
    raise InvalidInput(f"no corpus.jsonl[.gz] in {folder}")


def read_queries(folder: Path, split: str) -> dict[str, str]:
    candidates = [folder / f"queries_{split}.jsonl", folder / "queries.jsonl"]
    for path in candidates:
        if path.is_file():
            return {row["_id"]: row["text"] for row in map(json.loads, _lines(path)) if row}
    raise InvalidInput(f"no queries_{split}.jsonl or queries.jsonl in {folder}")


def read_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise InvalidInput(f"no qrels/{split}.tsv in {folder}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    gains = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sum(
        g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:k])
    )
    return gains / ideal if ideal else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def evaluate(
    runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]
) -> dict[str, float]:
    """Mean nDCG@10, Recall@10 and Recall@100 over the queries that have judgements."""
    queries = [q for q in qrels if q in runs]
    if not queries:
        return {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0}
    n = len(queries)
    return {
        "ndcg@10": round(sum(ndcg_at(runs[q], qrels[q], 10) for q in queries) / n, 4),
        "recall@10": round(sum(recall_at(runs[q], qrels[q], 10) for q in queries) / n, 4),
        "recall@100": round(sum(recall_at(runs[q], qrels[q], 100) for q in queries) / n, 4),
    }
