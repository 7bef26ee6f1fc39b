"""Pipeline steps. Each is small, takes records and returns records; a record that a step
drops keeps flowing with ``dropped`` set, so the shard writer can keep it with its reason."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from medxiaohe.corpus.deid import (
    clean_metadata,
    deidentify,
    patient_pseudonym,
    record_pseudonym,
    stored_label,
)
from medxiaohe.corpus.overlap import BenchmarkIndex, first_overlap
from medxiaohe.corpus.record import Record
from medxiaohe.entities.tagger import DictionaryTagger


class Step(Protocol):
    name: str

    def run(self, records: Iterable[Record]) -> Iterator[Record]: ...


def run_pipeline(steps: Iterable[Step], records: Iterable[Record]) -> Iterator[Record]:
    stream: Iterable[Record] = records
    for step in steps:
        stream = step.run(stream)
    yield from stream


@dataclass
class LengthCap:
    """Drops texts over the cap before any regex work runs on them."""

    max_chars: int = 2_000_000
    name: str = "length"

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            if not record.dropped and len(record.text) > self.max_chars:
                record.dropped = f"longer than {self.max_chars:,} characters"
                record.text = ""
            yield record


@dataclass
class Deidentify:
    """Every field that can carry PHI, before anything is stored: Safe Harbor de-identification
    of the text (dates shifted per patient), allow-listed metadata with de-identified values, and
    the source's record id and patient identifier replaced by keyed pseudonyms. Dropped records
    go through it whole, their reasons too: a record dropped before this step (a benchmark copy)
    is stored in ``dropped.parquet`` with its text. Each record leaves sealed."""

    secret: str  # keys pseudonyms and date shifts: keep it out of the code and the logs
    name: str = "deidentify"

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            source_patient, known = record.patient_key, record.known_phi
            if record.text:
                record.text, spans = deidentify(record.text, self.secret, source_patient, known)
                record.extra["phi_removed"] = len(spans)
            if record.dropped:
                record.dropped = deidentify(record.dropped, self.secret, source_patient, known)[0]
            record.metadata = clean_metadata(record.metadata, self.secret, source_patient, known)
            record.source = stored_label(record.source, self.secret, "source")
            record.licence = stored_label(record.licence, self.secret, "licence")
            record.id = record_pseudonym(self.secret, record.id)
            record.patient_key = (
                patient_pseudonym(self.secret, source_patient) if source_patient else ""
            )
            record.known_phi = []
            record.seal()
            yield record


@dataclass
class DropBenchmarkOverlap:
    """Drops records that copy a benchmark item (a 13-gram of it, or its whole question), so
    CPT and SFT never train on a test question; the reason names the item. It runs before
    de-identification, which could shift a copied question's numbers out of the match."""

    index: BenchmarkIndex
    batch: int = 256
    name: str = "benchmark_overlap"

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        pending: list[Record] = []
        for record in records:
            pending.append(record)
            if len(pending) >= self.batch:
                yield from self._check(pending)
                pending = []
        yield from self._check(pending)

    def _check(self, records: list[Record]) -> list[Record]:
        live = [r for r in records if not r.dropped and r.text]
        for record, refs in zip(live, self.index.find([[r.text] for r in live]), strict=True):
            if refs:
                record.dropped = first_overlap(refs)
        return records


@dataclass
class QualityFilter:
    """Rules that keep or drop a record with a reason (texts of studies may be empty)."""

    min_words: int = 3
    min_alpha_ratio: float = 0.5
    max_duplicate_line_ratio: float = 0.5
    name: str = "quality"

    def reason(self, record: Record) -> str:
        text = record.text
        if record.kind == "study" and not text.strip():
            return ""
        words = text.split()
        if len(words) < self.min_words:
            return f"fewer than {self.min_words} words"
        letters = sum(c.isalpha() for c in text)
        if letters / max(1, len(text) - text.count(" ")) < self.min_alpha_ratio:
            return f"less than {self.min_alpha_ratio:.0%} letters"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) >= 4 and 1 - len(set(lines)) / len(lines) > self.max_duplicate_line_ratio:
            return f"more than {self.max_duplicate_line_ratio:.0%} repeated lines"
        return ""

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            if not record.dropped:
                record.dropped = self.reason(record)
            yield record


@dataclass
class Tag:
    """Medical Entity Tree mentions, with their assertions."""

    tagger: DictionaryTagger
    name: str = "tag"

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            if not record.dropped and record.text:
                record.mentions = self.tagger.tag(record.text)
            yield record


# MinHash permutations: at 128, two near copies of one ~100-word document of the reliability
# corpus (true 3-gram Jaccard 0.89) estimated 0.797 and were both kept. 256 halves the
# estimate's variance for about an eighth more of the pipeline's time (`make bench-ingest`).
NUM_PERM = 256
THRESHOLD = 0.8  # Jaccard similarity of word 3-grams at which a record is a near duplicate


def record_key(shard: str, source: str, record_id: str, digest: str) -> str:
    """How dedup names a kept record: the same for a redelivery of its shard; another shard's
    copy of it (a document sent again) is another record, a duplicate."""
    return f"{shard}:{source}/{record_id}#{digest[:8]}"


def minhash_of(text: str, num_perm: int, shingle: int) -> Any:
    from datasketch import MinHash

    words = text.lower().split()
    grams = {" ".join(words[i : i + shingle]) for i in range(max(1, len(words) - shingle + 1))}
    minhash = MinHash(num_perm=num_perm)
    minhash.update_batch([g.encode() for g in grams])
    return minhash


class DedupIndex(Protocol):
    """What dedup has kept: one process's memory (``MemoryIndex``), or an index that workers
    share (the services' Redis index), so duplicates across shards and workers are found.
    ``key`` names the record asking: a record is never its own duplicate."""

    def exact(self, digest: str, key: str) -> str | None:
        """Another kept record with this normalized-text hash (its name), if any."""
        ...

    def similar(self, minhash: Any, key: str) -> list[tuple[str, Any]]:
        """Other kept records that may be near (LSH candidates): names and signatures."""
        ...

    def add(self, key: str, minhash: Any, digest: str) -> None: ...

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """Held around one record's check-and-add (two workers must not both keep a pair)."""
        ...


class MemoryIndex:
    """A DedupIndex in this process: MinHash LSH (datasketch) and the kept hashes. ``stored``:
    hashes of records already in the store (their keys unknown)."""

    def __init__(
        self, num_perm: int = NUM_PERM, threshold: float = THRESHOLD, stored: Iterable[str] = ()
    ) -> None:
        from datasketch import MinHashLSH

        # LSH banding finds candidates at a lower similarity; each is then checked exactly
        self._lsh = MinHashLSH(threshold=lsh_threshold(threshold), num_perm=num_perm)
        self._signatures: dict[str, Any] = {}
        self._holders: dict[str, str] = dict.fromkeys(stored, "(stored)")

    def exact(self, digest: str, key: str) -> str | None:
        holder = self._holders.get(digest)
        return holder if holder != key else None

    def similar(self, minhash: Any, key: str) -> list[tuple[str, Any]]:
        return [(k, self._signatures[k]) for k in self._lsh.query(minhash) if k != key]

    def add(self, key: str, minhash: Any, digest: str) -> None:
        if key not in self._signatures:
            self._lsh.insert(key, minhash)
            self._signatures[key] = minhash
        self._holders.setdefault(digest, key)

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def lsh_threshold(threshold: float) -> float:
    """The LSH banding's threshold for a near-duplicate ``threshold``: lower, so that the exact
    Jaccard check sees every pair at the threshold."""
    return max(0.1, threshold - 0.2)


@dataclass
class Dedup:
    """Exact duplicates by normalized-text hash, near duplicates by MinHash LSH (datasketch),
    against what ``index`` holds: this run's records, and what is already stored. A record is
    never its own duplicate in its own shard, so a redelivered shard keeps what its first attempt
    kept, while a document sent again (another shard) drops."""

    threshold: float = THRESHOLD
    num_perm: int = NUM_PERM
    shingle: int = 3
    index: DedupIndex | None = None
    shard: str = ""  # the shard being written (a redelivery of it keeps what it kept)
    name: str = "dedup"

    def __post_init__(self) -> None:
        self._index = self.index or MemoryIndex(self.num_perm, self.threshold)

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            if record.dropped or not record.text.strip():
                yield record
                continue
            # the signature is computed before the lock: the lock covers the index's reads
            # and writes only, so a lock whose holder died mid-way held little
            minhash = minhash_of(record.text, self.num_perm, self.shingle)
            with self._index.exclusive():  # released before the record moves on
                record.dropped = self._keep_or_why(record, minhash)
            yield record

    def _keep_or_why(self, record: Record, minhash: Any) -> str:
        """Why the record is a duplicate; empty once it is added to the index as kept."""
        digest = record.content_hash
        key = record_key(self.shard, record.source, record.id, digest)
        if self._index.exact(digest, key) is not None:
            return "exact duplicate"
        near = sorted(
            other
            for other, signature in self._index.similar(minhash, key)
            if minhash.jaccard(signature) >= self.threshold
        )
        if near:
            return f"near duplicate of {near[0]}"
        self._index.add(key, minhash, digest)
        return ""

    def remember(self, key: str, text: str, digest: str) -> None:
        """Count an already stored record (from a finished shard) as kept."""
        if self._index.exact(digest, key) is None:
            self._index.add(key, minhash_of(text, self.num_perm, self.shingle), digest)
