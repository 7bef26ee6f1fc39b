"""Running the pipeline over blobs (files, uploads, RPC payloads) shard by shard."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.secrets import pseudonym
from medxiaohe.corpus import readers
from medxiaohe.corpus.dicom import read_dicom
from medxiaohe.corpus.overlap import BenchmarkIndex
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.shards import ShardResult, list_shards, read_records, shard_done, write_shard
from medxiaohe.corpus.steps import (
    Dedup,
    DedupIndex,
    Deidentify,
    DropBenchmarkOverlap,
    LengthCap,
    QualityFilter,
    Step,
    Tag,
    record_key,
    run_pipeline,
)
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.storage import ArtifactStore, Manifest
from medxiaohe.storage.uploads import put_upload

KINDS = {
    ".txt": "text",
    ".jsonl": "jsonl",
    ".json": "fhir",
    ".hl7": "hl7",
    ".dcm": "dicom",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
}


def read_payload(kind: str, data: bytes, record_id: str, caption: str = "") -> list[Record]:
    """Records of one payload of a known kind; InvalidInput when it is malformed, whatever
    hostile shape it has (a parser's own error never aborts the stream it came in)."""
    try:
        return _read_payload(kind, data, record_id, caption)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        raise InvalidInput(f"malformed {kind} content") from None


def _read_payload(kind: str, data: bytes, record_id: str, caption: str) -> list[Record]:
    if kind == "text":
        return [Record(id=record_id, source="text", text=_utf8(data))]
    if kind == "jsonl":
        return list(readers.read_jsonl_lines(_utf8(data).splitlines(), record_id))
    if kind == "fhir":
        return readers.read_fhir(data)
    if kind == "hl7":
        return [readers.read_hl7(_utf8(data))]
    if kind == "dicom":
        return [read_dicom(data, record_id)]
    if kind == "image":
        return [readers.read_image_caption(data, caption, record_id)]
    raise InvalidInput(f"unsupported payload kind {kind!r}")


def read_blob(name: str, data: bytes, caption: str = "") -> list[Record]:
    """Records of one file by its suffix; a malformed file is one dropped record with the reason."""
    path = PurePosixPath(name)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        return [
            Record(
                id=path.stem,
                source="unknown",
                text="",
                dropped=f"unsupported file type {path.suffix!r}",
            )
        ]
    try:
        return read_payload(kind, data, path.stem, caption)
    except InvalidInput as exc:
        return [Record(id=path.stem, source=kind, text="", dropped=str(exc))]


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8 text") from None


def default_steps(
    tagger: DictionaryTagger, secret: str, dedup: Dedup, benchmarks: BenchmarkIndex | None = None
) -> list[Step]:
    """The corpus pipeline; with ``benchmarks``, records that copy a benchmark item drop."""
    overlap: list[Step] = [DropBenchmarkOverlap(benchmarks)] if benchmarks else []
    return [LengthCap(), *overlap, Deidentify(secret), QualityFilter(), Tag(tagger), dedup]


def stored_hashes(store: ArtifactStore, dataset: str) -> set[str]:
    """Content hashes of every record already kept in the dataset (re-sent documents drop)."""
    return {
        row["content_hash"] for m in list_shards(store, dataset) for row in read_records(store, m)
    }


@dataclass(frozen=True)
class ShardSpec:
    """A shard: which stored blobs go into it. Its id derives from them, so re-planning the same
    inputs gives the same shards, and finished ones are skipped."""

    shard_id: str
    keys: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"shard_id": self.shard_id, "keys": list(self.keys)}


def plan_shards(keys: Sequence[str], per_shard: int) -> list[ShardSpec]:
    """Shards of up to ``per_shard`` inputs; an image and its .caption stay together."""
    if per_shard < 1:
        raise InvalidInput("files per shard must be at least 1")
    groups: dict[str, list[str]] = {}
    for key in sorted(keys):
        groups.setdefault(str(PurePosixPath(key).with_suffix("")), []).append(key)
    ordered = list(groups.values())
    specs = []
    for start in range(0, len(ordered), per_shard):
        chunk = tuple(k for group in ordered[start : start + per_shard] for k in group)
        digest = hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:10]
        specs.append(ShardSpec(f"shard-{start // per_shard:05d}-{digest}", chunk))
    return specs


def upload_inputs(
    store: ArtifactStore, dataset: str, paths: Iterable[Path], secret: str
) -> list[str]:
    """Put input files (folders walked) into the store, once; returns their keys. A key is the
    keyed pseudonym of the file's path without its suffix, then the suffix: no file name reaches
    the store, re-runs map files to the same keys, and an image keeps its .caption beside it."""
    keys = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            suffix = file.suffix.lower()
            if suffix not in (*KINDS, ".caption"):
                continue
            name = pseudonym(secret, f"file:{file.resolve().with_suffix('')}")
            keys.append(put_upload(store, f"bulk/{dataset}/{name}{suffix}", file).key)
    return keys


@dataclass
class ShardIngestor:
    """Processes shards of one dataset with one tagger; dedup spans every shard it processes."""

    store: ArtifactStore
    dataset: str
    tagger: DictionaryTagger
    secret: str
    benchmarks: BenchmarkIndex | None = None  # records that copy a benchmark item drop
    # what dedup has kept: shared by the workers of a run (the services' Redis index), else
    # this ingestor's memory, which spans every shard it processes
    dedup_index: DedupIndex | None = None

    def __post_init__(self) -> None:
        self.dedup = Dedup(index=self.dedup_index)

    def records_of(self, keys: Iterable[str]) -> Iterator[Record]:
        captions = {k for k in keys if k.endswith(".caption")}
        for key in keys:
            if key in captions:
                continue
            caption_key = str(PurePosixPath(key).with_suffix(".caption"))
            caption = (
                self.store.get_bytes(caption_key).decode(errors="replace")
                if caption_key in captions
                else ""
            )
            yield from read_blob(key, self.store.get_bytes(key), caption)

    def remember_finished(self) -> None:
        """Every finished shard's kept records into the dedup index (one that lost them)."""
        for done in list_shards(self.store, self.dataset):
            self._remember(done)

    def _remember(self, done: Manifest) -> None:
        for row in read_records(self.store, done):
            digest = row["content_hash"]
            key = record_key(done.version, row["source"], row["id"], digest)  # version: shard id
            self.dedup.remember(key, row["text"], digest)

    def process(self, spec: ShardSpec) -> ShardResult:
        return self.process_records(spec.shard_id, self.records_of(spec.keys))

    def process_records(self, shard_id: str, records: Iterable[Record]) -> ShardResult:
        """Run the pipeline into one shard, unless that shard is already complete."""
        done = shard_done(self.store, self.dataset, shard_id)
        if done is not None:
            self._remember(done)  # a resumed run must dedup against what the shard holds
            meta = done.metadata
            return ShardResult(
                shard_id,
                meta["kept"],
                meta["dropped"],
                skipped=True,
                quarantined=meta.get("quarantined", 0),
            )
        self.dedup.shard = shard_id
        steps = default_steps(self.tagger, self.secret, self.dedup, self.benchmarks)
        return write_shard(self.store, self.dataset, shard_id, run_pipeline(steps, records))


DOCUMENTS_PER_FILE = 500  # documents per uploaded file (one file a shard)


def ensure_dataset(
    store: ArtifactStore,
    dataset: str,
    documents: Iterable[dict[str, str]],
    tagger: DictionaryTagger,
    secret: str,
) -> dict[str, Any]:
    """Ingest JSON documents (id, source, text) into ``dataset`` through the corpus pipeline
    once (de-identified, tagged, deduplicated); later runs find its shards."""
    if list_shards(store, dataset):
        return {"ingested": False}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medxiaohe-ingest-") as tmp:
        rows = list(documents)
        for start in range(0, len(rows), DOCUMENTS_PER_FILE):
            lines = (json.dumps(d) for d in rows[start : start + DOCUMENTS_PER_FILE])
            name = f"part-{start // DOCUMENTS_PER_FILE:04d}.jsonl"
            (Path(tmp) / name).write_text("\n".join(lines))
        keys = upload_inputs(store, dataset, [Path(tmp)], secret)
    ingestor = ShardIngestor(store, dataset, tagger, secret)
    results = [ingestor.process(spec) for spec in plan_shards(keys, 1)]
    return {
        "ingested": True,
        "documents": len(rows),
        "kept": sum(r.kept for r in results),
        "seconds": round(time.perf_counter() - started, 1),
    }
