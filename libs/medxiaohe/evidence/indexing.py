"""Adding passages to a named index: a new version is published atomically and only on top of
the version it was built from (compare-and-swap: a concurrent writer's passages are never lost).
A call that names the version it read gets Conflict when another writer moved on; one that does
not is rebuilt on the newer version and published again (a few times, then Conflict). A request
id makes a retried call return the version its first attempt published."""

from __future__ import annotations

import json
import random
import time
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

REBASES = 8  # a call without an expected version is rebuilt on a newer one this many times


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
    without, a version published meanwhile is built upon instead (up to REBASES times)."""
    check_key(name)
    if request_id:
        try:
            done = json.loads(store.get_bytes(_request_key(name, request_id)))
            return IndexResult(done["version"], done["added"])
        except NotFound:
            pass
    if not passages:
        raise InvalidInput("no passages to index")
    if tagger is not None:
        tag_passages(passages, tagger)
    incoming = {p.passage_id: p for p in passages}
    new = list(incoming.values())
    new_vectors = embed([p.indexed_text for p in new])  # once, whatever the retries
    for attempt in range(REBASES + 1):
        try:
            current: EvidenceIndex | None = EvidenceIndex.load(store, name)
        except NotFound:
            current = None
        base = current.version if current else ""
        if expected_version is not None and expected_version != base:
            raise Conflict(
                f"index {name!r} is at version {base or '(none)'}, not "
                f"{expected_version or '(none)'}; read it again and retry"
            )
        kept = [p for p in current.passages if p.passage_id not in incoming] if current else []
        kept_vectors = (
            current.dense.vectors[[current.by_id[p.passage_id] for p in kept]]
            if current and kept
            else np.empty((0, new_vectors.shape[1]), dtype=np.float32)
        )
        everything = kept + new
        lexical = LexicalIndex.build([p.indexed_text for p in everything])
        built = EvidenceIndex(
            everything, lexical, DenseIndex(np.vstack([kept_vectors, new_vectors]))
        )
        try:
            manifest = built.save(store, name, expected_latest=base)
            break
        except Conflict:
            if expected_version is not None or attempt == REBASES:
                raise
            time.sleep(random.uniform(0, 0.05 * 2**attempt))  # noqa: S311 (jitter)
    if request_id:
        body = {"version": manifest.version, "added": len(new)}
        store.put_bytes(_request_key(name, request_id), json.dumps(body).encode())
    return IndexResult(manifest.version, len(new))
