"""`medxiaohe bench retrieval`: lexical, dense and hybrid against plain BM25 baselines
(rank_bm25 and bm25s with default settings) on a BEIR folder, with latency and build speed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medxiaohe.datasets.beir import read_corpus, read_qrels, read_queries
from medxiaohe.eval.retrieval import evaluate
from medxiaohe.evidence.index import EvidenceIndex, Mode
from medxiaohe.evidence.passages import Passage


def _timed_runs(
    queries: dict[str, str], search: Callable[[str, str], list[str]]
) -> tuple[dict[str, list[str]], dict[str, float]]:
    runs, latencies = {}, []
    for qid, text in queries.items():
        start = time.perf_counter()
        runs[qid] = search(qid, text)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return runs, {"p50_ms": round(statistics.median(latencies), 2), "p99_ms": round(p99, 2)}


def run(beir_dir: Path, split: str, limit_queries: int = 0) -> dict[str, Any]:
    corpus = read_corpus(beir_dir)
    qrels = read_qrels(beir_dir, split)
    queries = {q: t for q, t in read_queries(beir_dir, split).items() if q in qrels}
    if limit_queries:
        queries = dict(list(queries.items())[:limit_queries])
    passages = [
        Passage(
            passage_id=d["_id"],
            document_id=d["_id"],
            text=d.get("text", ""),
            start=0,
            end=len(d.get("text", "")),
            title=d.get("title", ""),
            source=beir_dir.name,
        )
        for d in corpus
    ]
    start = time.perf_counter()
    index = EvidenceIndex.build(passages)
    build_s = time.perf_counter() - start
    modes: dict[str, dict[str, float]] = {}
    for mode in Mode:  # latency includes embedding the query, one query at a time

        def search(qid: str, text: str, mode: Mode = mode) -> list[str]:
            return [h.passage.passage_id for h in index.search(text, 100, mode)]

        runs, latency = _timed_runs(queries, search)
        modes[mode.value] = evaluate(runs, qrels) | latency
    texts = [p.indexed_text for p in passages]
    ids = [p.passage_id for p in passages]
    modes["rank_bm25"] = _rank_bm25(texts, ids, queries, qrels)
    modes["bm25s"] = _bm25s(texts, ids, queries, qrels)
    return {
        "modes": modes,
        "build_passages_per_s": round(len(passages) / build_s, 1),
        "passages": len(passages),
        "queries": len(queries),
        "split": split,
    }


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def _rank_bm25(
    texts: Sequence[str],
    ids: Sequence[str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
) -> dict[str, float]:
    from rank_bm25 import BM25Okapi

    bm25 = BM25Okapi([_tokens(t) for t in texts])

    def search(_: str, text: str) -> list[str]:
        scores = bm25.get_scores(_tokens(text))
        top = sorted(range(len(scores)), key=lambda i: -scores[i])[:100]
        return [ids[i] for i in top]

    runs, latency = _timed_runs(queries, search)
    return evaluate(runs, qrels) | latency


def _bm25s(
    texts: Sequence[str],
    ids: Sequence[str],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
) -> dict[str, float]:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(texts), show_progress=False), show_progress=False)

    def search(_: str, text: str) -> list[str]:
        found, _scores = retriever.retrieve(
            bm25s.tokenize([text], show_progress=False), k=100, show_progress=False
        )
        return [ids[i] for i in found[0]]

    runs, latency = _timed_runs(queries, search)
    return evaluate(runs, qrels) | latency
