"""An evidence index: passages, a lexical and a dense index, hybrid search with filters, and
its artifact in the object store (``evidence/<name>/<version>``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from medxiaohe.common.errors import InvalidInput
from medxiaohe.evidence.passages import Passage
from medxiaohe.evidence.retrievers import DenseIndex, LexicalIndex, embed, score_fusion
from medxiaohe.storage import ArtifactStore, Manifest, publish, read_file, resolve

MAX_K = 100
MAX_QUERY_CHARS = 4000  # the encoder reads 256 tokens; BM25 needs no more either
CANDIDATES = 100  # per retriever, before fusion and filters


class Mode(StrEnum):
    HYBRID = "hybrid"
    LEXICAL = "lexical"
    DENSE = "dense"


@dataclass(frozen=True)
class Hit:
    passage: Passage
    rank: int
    score: float
    lexical_score: float
    dense_score: float


def check_request(query: str, k: int) -> None:
    if not query.strip():
        raise InvalidInput("query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"query is longer than {MAX_QUERY_CHARS} characters")
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}")


def fuse(
    passages: Sequence[Passage],
    lexical: dict[int, float],
    dense: dict[int, float],
    k: int,
    mode: Mode,
    sources: Sequence[str] = (),
    entity_ids: Sequence[str] = (),
) -> list[Hit]:
    """Filter each retriever's candidates, then fuse their scores (hybrid) or rank the one
    retriever's; ties go to the lower passage index, so shards merge to the same order."""
    wanted_sources, wanted_entities = set(sources), set(entity_ids)

    def allowed(i: int) -> bool:
        p = passages[i]
        return (not wanted_sources or p.source in wanted_sources) and (
            not wanted_entities or bool(wanted_entities.intersection(p.entity_ids))
        )

    runs = [
        {i: s for i, s in scores.items() if allowed(i)} for scores in (lexical, dense) if scores
    ]
    if mode is Mode.HYBRID:
        fused = score_fusion(runs)
    else:
        fused = sorted(runs[0].items(), key=lambda kv: (-kv[1], kv[0])) if runs else []
    return [
        Hit(passages[i], rank, score, lexical.get(i, 0.0), dense.get(i, 0.0))
        for rank, (i, score) in enumerate(fused[:k], 1)
    ]


def artifact_prefix(name: str) -> str:
    return f"evidence/{name}"


class EvidenceIndex:
    def __init__(
        self,
        passages: Sequence[Passage],
        lexical: LexicalIndex,
        dense: DenseIndex,
        version: str = "",
    ) -> None:
        self.passages = list(passages)
        self.lexical = lexical
        self.dense = dense
        self.version = version
        self.by_id = {p.passage_id: i for i, p in enumerate(self.passages)}

    @classmethod
    def build(cls, passages: Sequence[Passage]) -> EvidenceIndex:
        if not passages:
            raise InvalidInput("an index needs at least one passage")
        texts = [p.indexed_text for p in passages]
        return cls(passages, LexicalIndex.build(texts), DenseIndex(embed(texts)))

    def search(
        self,
        query: str,
        k: int = 10,
        mode: Mode = Mode.HYBRID,
        sources: Sequence[str] = (),
        entity_ids: Sequence[str] = (),
        query_vector: np.ndarray | None = None,
    ) -> list[Hit]:
        check_request(query, k)
        pool = len(self.passages) if (sources or entity_ids) else max(CANDIDATES, k)
        vector = (
            query_vector if query_vector is not None or mode is Mode.LEXICAL else embed([query])[0]
        )
        lexical, dense = self.candidates(query, pool, mode, vector)
        return fuse(self.passages, lexical, dense, k, mode, sources, entity_ids)

    def candidates(
        self, query: str, pool: int, mode: Mode, vector: np.ndarray | None
    ) -> tuple[dict[int, float], dict[int, float]]:
        """Each retriever's best ``pool`` passages: index -> score."""
        lexical: dict[int, float] = {}
        dense: dict[int, float] = {}
        if mode in (Mode.HYBRID, Mode.LEXICAL):
            ids, scores = self.lexical.search(query, pool)
            lexical = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        if mode in (Mode.HYBRID, Mode.DENSE) and vector is not None:
            ids, scores = self.dense.search(vector, pool)
            dense = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        return lexical, dense

    def passage(self, passage_id: str) -> Passage | None:
        i = self.by_id.get(passage_id)
        return None if i is None else self.passages[i]

    # -- artifact -------------------------------------------------------------------------

    def save(self, store: ArtifactStore, name: str, expected_latest: str | None = None) -> Manifest:
        """Publish as the index's newest version; with ``expected_latest`` (the version this
        one was built from, "" for none) only if no other writer published since (Conflict)."""
        files = {
            "passages.jsonl": "\n".join(
                json.dumps(p.as_dict(), sort_keys=True) for p in self.passages
            ).encode(),
            "lexical.zip": self.lexical.to_bytes(),
            "dense.npy": self.dense.to_bytes(),
        }
        ann = self.dense.ann_bytes()
        if ann is not None:
            files["dense.hnsw"] = ann
        manifest = publish(
            store,
            artifact_prefix(name),
            files,
            metadata={"passages": len(self.passages), "encoder": "all-MiniLM-L6-v2"},
            expected_latest=expected_latest,
        )
        self.version = manifest.version
        return manifest

    @classmethod
    def load(cls, store: ArtifactStore, name: str, version: str | None = None) -> EvidenceIndex:
        manifest = resolve(store, artifact_prefix(name), version)
        ann = read_file(store, manifest, "dense.hnsw") if "dense.hnsw" in manifest.files else None
        passages = [
            Passage(**json.loads(line))
            for line in read_file(store, manifest, "passages.jsonl").decode().splitlines()
            if line
        ]
        return cls(
            passages,
            LexicalIndex.from_bytes(read_file(store, manifest, "lexical.zip")),
            DenseIndex.from_bytes(read_file(store, manifest, "dense.npy"), ann),
            manifest.version,
        )
