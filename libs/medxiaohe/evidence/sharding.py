"""Beyond one machine: an index split into shards (each served by replicas reading the same
artifact), a query fanned out to every shard and the answers merged.

Shards are cut from one built index, so BM25 keeps corpus-wide statistics (bm25s stores
per-document term scores with the global IDF baked in) and dense scores are cosine
similarities: merged candidates are the unsharded ones, and so is the fused ranking."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import scipy.sparse

from medxiaohe.evidence.index import CANDIDATES, EvidenceIndex, Hit, Mode, check_request, fuse
from medxiaohe.evidence.retrievers import DenseIndex, LexicalIndex, embed


def _lexical_rows(lexical: LexicalIndex, rows: slice) -> LexicalIndex:
    import bm25s

    source = lexical._retriever
    scores = source.scores
    matrix = scipy.sparse.csc_matrix(
        (scores["data"], scores["indices"], scores["indptr"]),
        shape=(scores["num_docs"], len(scores["indptr"]) - 1),
    )[rows, :].tocsc()
    shard = bm25s.BM25(k1=source.k1, b=source.b, delta=source.delta, method=source.method)
    shard.scores = {
        "data": matrix.data,
        "indices": matrix.indices,
        "indptr": matrix.indptr,
        "num_docs": matrix.shape[0],
    }
    shard.vocab_dict = source.vocab_dict
    shard.unique_token_ids_set = source.unique_token_ids_set
    shard.nonoccurrence_array = source.nonoccurrence_array
    return LexicalIndex(shard)


def split(index: EvidenceIndex, shards: int) -> list[tuple[int, EvidenceIndex]]:
    """(offset of its first passage, shard) for ``shards`` contiguous slices of the index."""
    bounds = np.linspace(0, len(index.passages), shards + 1).astype(int)
    parts = []
    for start, end in itertools.pairwise(bounds):
        rows = slice(int(start), int(end))
        parts.append(
            (
                int(start),
                EvidenceIndex(
                    index.passages[rows],
                    _lexical_rows(index.lexical, rows),
                    DenseIndex(index.dense.vectors[rows]),
                    index.version,
                ),
            )
        )
    return parts


class ShardedIndex:
    """Fans a query out to shards (in-process here; one RPC per shard in a deployment)."""

    def __init__(self, shards: Sequence[tuple[int, EvidenceIndex]]) -> None:
        self.shards = list(shards)
        self.passages = [p for _, shard in self.shards for p in shard.passages]

    def search(
        self,
        query: str,
        k: int = 10,
        mode: Mode = Mode.HYBRID,
        sources: Sequence[str] = (),
        entity_ids: Sequence[str] = (),
    ) -> list[Hit]:
        check_request(query, k)
        pool = len(self.passages) if (sources or entity_ids) else max(CANDIDATES, k)
        vector = None if mode is Mode.LEXICAL else embed([query])[0]
        lexical: dict[int, float] = {}
        dense: dict[int, float] = {}
        for offset, shard in self.shards:
            part_lexical, part_dense = shard.candidates(query, pool, mode, vector)
            lexical.update({offset + i: s for i, s in part_lexical.items()})
            dense.update({offset + i: s for i, s in part_dense.items()})
        lexical = dict(sorted(lexical.items(), key=lambda kv: (-kv[1], kv[0]))[:pool])
        dense = dict(sorted(dense.items(), key=lambda kv: (-kv[1], kv[0]))[:pool])
        return fuse(self.passages, lexical, dense, k, mode, sources, entity_ids)
