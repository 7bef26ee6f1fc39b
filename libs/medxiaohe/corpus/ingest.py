"""Running the pipeline over blobs (files, uploads, RPC payloads) shard by shard."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus import readers
from medxiaohe.corpus.dicom import read_dicom
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.shards import ShardResult, list_shards, read_records, shard_done, write_shard
from medxiaohe.corpus.steps import Dedup, Deidentify, QualityFilter, Step, Tag, run_pipeline
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.storage import ArtifactStore

SUFFIXES = (".txt", ".jsonl", ".json", ".hl7", ".dcm", ".png", ".jpg", ".jpeg")


def read_blob(name: str, data: bytes, store_caption: str = "") -> list[Record]:
    """Records of one file by its suffix; a malformed file is one dropped record with the reason."""
    path = PurePosixPath(name)
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            return [Record(id=path.stem, source="text", text=_utf8(data, name))]
        if suffix == ".jsonl":
            return list(readers.read_jsonl_lines(_utf8(data, name).splitlines(), path.stem))
        if suffix == ".json":
            return readers.read_fhir(data)
        if suffix == ".hl7":
            return [readers.read_hl7(_utf8(data, name))]
        if suffix == ".dcm":
            return [read_dicom(data, path.stem)]
        if suffix in (".png", ".jpg", ".jpeg"):
            return [readers.read_image_caption(data, store_caption, path.stem)]
    except InvalidInput as exc:
        return [Record(id=path.stem, source=suffix.lstrip("."), text="", dropped=str(exc))]
    return [
        Record(id=path.stem, source="unknown", text="", dropped=f"unsupported file type {suffix!r}")
    ]


def _utf8(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{name} is not UTF-8 text") from None


def default_steps(
    tagger: DictionaryTagger, secret: str, seen: set[str] | None = None
) -> list[Step]:
    return [
        Deidentify(secret),
        QualityFilter(),
        Tag(tagger),
        Dedup(seen=seen if seen is not None else set()),
    ]


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
    if per_shard < 1:
        raise InvalidInput("files per shard must be at least 1")
    ordered = sorted(keys)
    specs = []
    for start in range(0, len(ordered), per_shard):
        chunk = tuple(ordered[start : start + per_shard])
        digest = hashlib.sha256("\n".join(chunk).encode()).hexdigest()[:10]
        specs.append(ShardSpec(f"shard-{start // per_shard:05d}-{digest}", chunk))
    return specs


@dataclass
class ShardIngestor:
    """Processes shards of one dataset with one tagger; dedup spans every shard it processes."""

    store: ArtifactStore
    dataset: str
    tagger: DictionaryTagger
    secret: str
    seen: set[str] = field(default_factory=set)

    def records_of(self, keys: Iterable[str]) -> Iterator[Record]:
        captions = {k for k in keys if k.endswith(".caption")}
        for key in keys:
            if key in captions:
                continue
            caption_key = str(PurePosixPath(key).with_suffix(".caption"))
            caption = self.store.get_bytes(caption_key).decode() if caption_key in captions else ""
            yield from read_blob(key, self.store.get_bytes(key), caption)

    def process(self, spec: ShardSpec) -> ShardResult:
        done = shard_done(self.store, self.dataset, spec.shard_id)
        if done is not None:
            return ShardResult(
                spec.shard_id, done.metadata["kept"], done.metadata["dropped"], skipped=True
            )
        records = run_pipeline(
            default_steps(self.tagger, self.secret, self.seen), self.records_of(spec.keys)
        )
        return write_shard(self.store, self.dataset, spec.shard_id, records)
