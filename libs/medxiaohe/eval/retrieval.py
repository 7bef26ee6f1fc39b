"""Ranking metrics over BEIR-format data (``datasets.beir`` reads it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


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
