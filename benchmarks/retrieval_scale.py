"""`medxiaohe bench retrieval-scale`: build speed and query latency at 100k passages on one core.

Passage texts repeat the benchmark corpus (numbered copies); passage vectors are random unit
vectors, since search latency does not depend on what they encode (embedding 100k passages
takes minutes here). Queries are real text (the first 100 characters of benchmark texts) and
are embedded one by one inside the timed path."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from benchmarks.texts import bench_texts
from medxiaohe.evidence.index import EvidenceIndex, Mode
from medxiaohe.evidence.passages import Passage
from medxiaohe.evidence.retrievers import DenseIndex, LexicalIndex, embed


def run(passages: int = 100_000, queries: int = 200) -> dict[str, Any]:
    import torch
    from threadpoolctl import threadpool_limits

    texts, origin = bench_texts(4000)
    corpus = [
        Passage(f"p{i}", f"d{i}", f"{texts[i % len(texts)]} (copy {i // len(texts)})", 0, 0)
        for i in range(passages)
    ]
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        lexical = LexicalIndex.build([p.text for p in corpus])
        lexical_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((passages, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        start = time.perf_counter()
        dense = DenseIndex(vectors)
        ann_s = time.perf_counter() - start
        index = EvidenceIndex(corpus, lexical, dense)
        # short questions, as clinicians and agents ask them: a text's first 100 characters
        asked = [t[:100] for t in texts[:queries]]
        embed(asked[:5])  # warm the encoder
        modes = {}
        for mode in Mode:
            latencies = []
            for text in asked:
                begin = time.perf_counter()
                index.search(text, 10, mode)
                latencies.append((time.perf_counter() - begin) * 1000)
            latencies.sort()
            modes[mode.value] = {
                "p50_ms": round(statistics.median(latencies), 2),
                "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
            }
    return {
        "passages": passages,
        "queries": len(asked),
        "modes": modes,
        "lexical_build_passages_per_s": round(passages / lexical_s, 1),
        "dense": "HNSW" if dense.ann is not None else "exact",
        "dense_index_build_s": round(ann_s, 1),
        "texts": origin,
        "vectors": "random unit vectors (synthetic)",
        "threads": 1,
    }
