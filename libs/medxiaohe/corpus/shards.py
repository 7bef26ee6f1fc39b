"""Parquet shards, each published atomically with its manifest as the completion marker, so a
retried shard never duplicates output and a re-run skips finished shards."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medxiaohe.common.errors import NotFound
from medxiaohe.corpus.coverage import CoverageCounts
from medxiaohe.corpus.record import Record
from medxiaohe.storage import ArtifactStore, Manifest, publish, read_file, resolve

MENTION = pa.struct(
    [
        ("start", pa.int32()),
        ("end", pa.int32()),
        ("text", pa.string()),
        ("node_id", pa.string()),
        ("entity_type", pa.string()),
        ("assertion", pa.string()),
        ("tagger", pa.string()),
    ]
)
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("text", pa.string()),
        ("patient_key", pa.string()),
        ("licence", pa.string()),
        ("metadata", pa.string()),
        ("image_uris", pa.list_(pa.string())),
        ("content_hash", pa.string()),
        ("mentions", pa.list_(MENTION)),
        ("dropped", pa.string()),
        ("quarantine", pa.string()),
    ]
)


def shards_prefix(dataset: str) -> str:
    return f"corpus/{dataset}/shards"


def quarantine_prefix(dataset: str) -> str:
    """Studies kept apart from the corpus (e.g. possible burned-in PHI), one version per shard;
    the deployment restricts reading this prefix to the people who review them."""
    return f"quarantine/{dataset}/shards"


@dataclass(frozen=True)
class ShardResult:
    shard_id: str
    kept: int
    dropped: int
    skipped: bool  # finished by an earlier run
    drops: tuple[tuple[str, str], ...] = ()  # (record id, reason) of the dropped records
    quarantined: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "kept": self.kept,
            "dropped": self.dropped,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
        }


def _row(record: Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "source": record.source,
        "kind": record.kind,
        "text": record.text,
        "patient_key": record.patient_key,
        "licence": record.licence,
        "metadata": json.dumps(record.metadata, sort_keys=True),
        "image_uris": record.image_uris,
        "content_hash": record.content_hash,
        "dropped": record.dropped,
        "quarantine": record.quarantine,
        "mentions": [
            {
                "start": m.start,
                "end": m.end,
                "text": m.text,
                "node_id": m.node_id,
                "entity_type": m.entity_type,
                "assertion": m.assertion.value,
                "tagger": m.tagger,
            }
            for m in record.mentions
        ],
    }


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink, compression="zstd")
    return sink.getvalue()


def shard_done(store: ArtifactStore, dataset: str, shard_id: str) -> Manifest | None:
    try:
        return resolve(store, shards_prefix(dataset), shard_id)
    except NotFound:
        return None


def _with_images(prefix: str, shard_id: str, records: list[Record]) -> dict[str, bytes]:
    """records.parquet and the records' images (named by position, never by a source name)."""
    files: dict[str, bytes] = {}
    for record in records:
        for name, data in sorted(record.attachments.items()):
            path = f"images/{len(files):05d}{PurePosixPath(name).suffix}"
            files[path] = data
            record.image_uris.append(f"{prefix}/{shard_id}/{path}")
    files["records.parquet"] = _parquet([_row(r) for r in records])
    return files


def write_shard(
    store: ArtifactStore, dataset: str, shard_id: str, records: Iterable[Record]
) -> ShardResult:
    """records.parquet (kept), dropped.parquet (with reasons), images, coverage.json: one
    atomically published version per shard. Quarantined records go to their own artifact,
    published first, so a complete shard always has its quarantine beside it."""
    kept: list[Record] = []
    dropped: list[Record] = []
    quarantined: list[Record] = []
    coverage = CoverageCounts()
    for record in records:
        problem = record.unsealed()
        if problem:  # checked on what is written: no raw record, reason or quarantine leaves
            raise ValueError(f"the shard writer refuses a record: {problem}")
        if record.dropped:
            dropped.append(record)
        elif record.quarantine:
            quarantined.append(record)
        else:
            coverage.add(record)
            kept.append(record)
    if quarantined:
        q_prefix = quarantine_prefix(dataset)
        publish(
            store,
            q_prefix,
            _with_images(q_prefix, shard_id, quarantined),
            version=shard_id,
            move_latest=False,
            metadata={"quarantined": len(quarantined)},
        )
    prefix = shards_prefix(dataset)
    files = _with_images(prefix, shard_id, kept)
    files["dropped.parquet"] = _parquet([_row(r) for r in dropped])
    files["coverage.json"] = coverage.to_json()
    publish(
        store,
        prefix,
        files,
        version=shard_id,
        move_latest=False,
        metadata={"kept": len(kept), "dropped": len(dropped), "quarantined": len(quarantined)},
    )
    drops = tuple((r.id, r.dropped) for r in dropped)
    return ShardResult(
        shard_id, len(kept), len(dropped), skipped=False, drops=drops, quarantined=len(quarantined)
    )


def shard_ids(store: ArtifactStore, dataset: str) -> list[str]:
    """The ids of every complete shard of a dataset (one listing, no manifest read)."""
    prefix = shards_prefix(dataset) + "/"
    return sorted(
        {
            o.key[len(prefix) :].split("/", 1)[0]
            for o in store.list(prefix)
            if o.key.endswith("/_MANIFEST.json")
        }
    )


def list_shards(store: ArtifactStore, dataset: str) -> list[Manifest]:
    """Every complete shard of a dataset."""
    return [resolve(store, shards_prefix(dataset), v) for v in shard_ids(store, dataset)]


def read_records(
    store: ArtifactStore, manifest: Manifest, name: str = "records.parquet"
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(
        io.BytesIO(read_file(store, manifest, name))
    ).to_pylist()
    return rows


def dataset_coverage(store: ArtifactStore, dataset: str) -> CoverageCounts:
    total = CoverageCounts()
    for manifest in list_shards(store, dataset):
        total.merge(CoverageCounts.from_json(read_file(store, manifest, "coverage.json")))
    return total


class CoverageCache:
    """A dataset's coverage, kept up to date without reading every shard on every question: a
    shard is immutable once published, so each one's counts are read once and added. The
    listing of shards is taken again at most every ``refresh_s`` seconds (a shard another
    replica wrote shows up within that); ``add`` counts one this process just wrote at once.
    Reading every shard per call made GetCoverage slower with every shard ingested (the
    reliability benchmark stalled on it at ten thousand shards)."""

    def __init__(self, store: ArtifactStore, dataset: str, refresh_s: float = 5.0) -> None:
        self.store, self.dataset, self.refresh_s = store, dataset, refresh_s
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._total = CoverageCounts()
        self._listed = -float("inf")

    def _read(self, shard_id: str) -> None:
        manifest = resolve(self.store, shards_prefix(self.dataset), shard_id)
        self._total.merge(
            CoverageCounts.from_json(read_file(self.store, manifest, "coverage.json"))
        )
        self._seen.add(shard_id)

    def add(self, shard_id: str) -> None:
        with self._lock:
            if shard_id not in self._seen:
                self._read(shard_id)

    def counts(self) -> CoverageCounts:
        with self._lock:
            if time.monotonic() - self._listed >= self.refresh_s:
                current = set(shard_ids(self.store, self.dataset))
                if self._seen - current:  # a shard went away: count again from nothing
                    self._seen, self._total = set(), CoverageCounts()
                for shard_id in sorted(current - self._seen):
                    self._read(shard_id)
                self._listed = time.monotonic()
            total = CoverageCounts()
            total.merge(self._total)
            return total
