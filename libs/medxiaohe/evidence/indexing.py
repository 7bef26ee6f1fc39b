"""Adding passages to a named index: a new version is published atomically and only on top of
the version it was built from (compare-and-swap: a concurrent writer's passages are never lost,
the slower call gets Conflict and retries); a request id makes a retried call return the
version its first attempt published."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medxiaohe.common.errors import Conflict, InvalidInput, NotFound
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.evidence.index import EvidenceIndex, artifact_prefix
from medxiaohe.evidence.passages import Passage, tag_passages
from medxiaohe.evidence.retrievers import DenseIndex, LexicalIndex, embed
from medxiaohe.storage import ArtifactStore
from medxiaohe.storage.base import check_key


@dataclass(frozen=True)
class IndexResult:
    version: str
    added: int


def _request_key(name: str, request_id: str) -> str:
    return f"{artifact_prefix(name)}/_requests/{check_key(request_id)}.json"


def add_passages(
    store: ArtifactStore,
    name: str,
    passages: Sequence[Passage],
    request_id: str = "",
    tagger: DictionaryTagger | None = None,
    expected_version: str | None = None,
) -> IndexResult:
    """Publish a version of ``name`` holding its current passages plus ``passages`` (a passage
    id already present is replaced). Existing embeddings are reused; only new text is embedded.
    With ``expected_version`` ("" for a new index) the caller's view must still be current;
    in any case the new version replaces only the one it was built from (else Conflict)."""
    check_key(name)
    if request_id:
        try:
            done = json.loads(store.get_bytes(_request_key(name, request_id)))
            return IndexResult(done["version"], done["added"])
        except NotFound:
            pass
    if not passages:
        raise InvalidInput("no passages to index")
    try:
        current: EvidenceIndex | None = EvidenceIndex.load(store, name)
    except NotFound:
        current = None
    base = current.version if current else ""
    if expected_version is not None and expected_version != base:
        raise Conflict(
            f"index {name!r} is at version {base or '(none)'}, not {expected_version or '(none)'}"
            "; read it again and retry"
        )
    if tagger is not None:
        tag_passages(passages, tagger)
    incoming = {p.passage_id: p for p in passages}
    kept = [p for p in current.passages if p.passage_id not in incoming] if current else []
    kept_vectors = (
        current.dense.vectors[[current.by_id[p.passage_id] for p in kept]]
        if current and kept
        else np.empty((0, 384), dtype=np.float32)
    )
    new = list(incoming.values())
    vectors = np.vstack([kept_vectors, embed([p.indexed_text for p in new])])
    everything = kept + new
    lexical = LexicalIndex.build([p.indexed_text for p in everything])
    built = EvidenceIndex(everything, lexical, DenseIndex(vectors))
    manifest = built.save(store, name, expected_latest=base)
    if request_id:
        body = {"version": manifest.version, "added": len(new)}
        store.put_bytes(_request_key(name, request_id), json.dumps(body).encode())
    return IndexResult(manifest.version, len(new))
