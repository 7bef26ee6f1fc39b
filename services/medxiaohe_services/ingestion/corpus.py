"""The ingestion RPCs' side of the corpus pipeline: one shard per call, dedup across calls."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from medxiaohe.common.secrets import pseudonym
from medxiaohe.corpus.coverage import Coverage
from medxiaohe.corpus.deid import record_pseudonym, stored_label
from medxiaohe.corpus.ingest import ShardIngestor, stored_hashes
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.shards import CoverageCache, ShardResult, shards_prefix
from medxiaohe.corpus.steps import MemoryIndex
from medxiaohe.storage import ArtifactStore
from medxiaohe_services.runtime.resources import TaggerLoader

DUPLICATE = ("exact duplicate", "near duplicate")


class CorpusWriter:
    """Serializes writes within a replica so dedup sees every earlier call."""

    def __init__(
        self, store: ArtifactStore, dataset: str, secret: str, tagging: TaggerLoader
    ) -> None:
        self.store = store
        self.dataset = dataset
        self.secret = secret
        self.tagging = tagging
        self._lock = threading.Lock()
        self._ingestor: ShardIngestor | None = None
        self._coverage = CoverageCache(store, dataset)

    def _get_ingestor(self) -> ShardIngestor:
        if self._ingestor is None:
            stored = MemoryIndex(stored=stored_hashes(self.store, self.dataset))
            self._ingestor = ShardIngestor(
                self.store, self.dataset, self.tagging.dictionary, self.secret, dedup_index=stored
            )
        return self._ingestor

    def pseudonym(self, value: str) -> str:
        return pseudonym(self.secret, value)

    def record_pseudonym(self, record_id: str) -> str:
        """The id a record is stored under (what the de-identification step makes of it)."""
        return record_pseudonym(self.secret, record_id)

    def write(self, call_key: Sequence[str], records: list[Record]) -> tuple[ShardResult, str]:
        """One shard named after the call's content, so a retried call lands on the same shard."""
        shard_id = "rpc-" + self.pseudonym("\n".join(sorted(call_key)))
        with self._lock:
            result = self._get_ingestor().process_records(shard_id, records)
        self._coverage.add(shard_id)  # the caller sees its own shard counted at once
        return result, f"{shards_prefix(self.dataset)}/{shard_id}"

    def coverage(self, source: str = "") -> Coverage:
        """Coverage of the dataset, of one source (named as callers send it) when given."""
        stored = stored_label(source, self.secret, "source")
        return Coverage(self.tagging.tagger.tree, self._coverage.counts(), stored)


def content_key(record_id: str, content: bytes) -> str:
    return f"{record_id}:{hashlib.sha256(content).hexdigest()}"
