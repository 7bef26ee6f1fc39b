"""Building an index from a corpus, resumably: embeddings are checkpointed per batch in the
store, so a killed build continues where it stopped; the index is published at the end."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from medxiaohe.common import npy
from medxiaohe.common.errors import InvalidInput
from medxiaohe.datasets.beir import read_corpus
from medxiaohe.evidence.index import EvidenceIndex, artifact_prefix
from medxiaohe.evidence.passages import Passage, chunk
from medxiaohe.evidence.retrievers import DenseIndex, LexicalIndex, embed
from medxiaohe.storage import ArtifactStore, Manifest

BATCH = 256


def read_passages(path: Path, source: str = "") -> list[Passage]:
    """Passages of a JSONL file (id/_id, text, title, source, licence) or a BEIR folder;
    documents longer than a passage are chunked with exact spans."""
    if path.is_dir():
        rows = read_corpus(path)
    elif path.is_file():
        rows = [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    else:
        raise InvalidInput(f"{path} does not exist")
    passages: list[Passage] = []
    for number, row in enumerate(rows, 1):
        doc_id, text = str(row.get("_id") or row.get("id") or number), row.get("text") or ""
        if not isinstance(text, str) or not text.strip():
            continue
        passages.extend(
            chunk(
                doc_id,
                text,
                title=row.get("title") or "",
                source=row.get("source") or source or path.stem,
                licence=row.get("licence") or row.get("license") or "",
            )
        )
    if not passages:
        raise InvalidInput(f"no passages with text in {path}")
    return passages


def build_index(
    store: ArtifactStore,
    name: str,
    passages: Sequence[Passage],
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    digest = hashlib.sha256(
        "".join(p.passage_id + p.indexed_text for p in passages).encode()
    ).hexdigest()[:16]
    parts = f"{artifact_prefix(name)}/_build/{digest}"
    batches = list(_batches(passages))
    vectors = []
    for number, batch in enumerate(batches):
        key = f"{parts}/{number:05d}.npy"
        if store.exists(key):
            vectors.append(npy.load(store.get_bytes(key)))
        else:
            block = embed([p.indexed_text for p in batch])
            buffer = io.BytesIO()
            np.save(buffer, block, allow_pickle=False)
            store.put_bytes(key, buffer.getvalue())
            vectors.append(block)
        if progress:
            progress(number + 1, len(batches))
    lexical = LexicalIndex.build([p.indexed_text for p in passages])
    manifest = EvidenceIndex(passages, lexical, DenseIndex(np.vstack(vectors))).save(store, name)
    for number in range(len(batches)):
        store.delete(f"{parts}/{number:05d}.npy")
    return manifest


def _batches(passages: Sequence[Passage]) -> Iterator[Sequence[Passage]]:
    for start in range(0, len(passages), BATCH):
        yield passages[start : start + BATCH]
