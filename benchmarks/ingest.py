"""`medxiaohe bench ingest`: our corpus pipeline against a datatrove pipeline doing the
equivalent steps (reader, filter, MinHash dedup, Parquet writer) on the same JSONL input."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.anchors import run_anchor
from benchmarks.texts import bench_texts
from medxiaohe.corpus.readers import read_jsonl
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.shards import write_shard
from medxiaohe.corpus.steps import Dedup, Deidentify, QualityFilter, Step, Tag, run_pipeline
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree
from medxiaohe.storage import LocalStore


class Public:
    """Seals benchmark text as it is read, de-identified or not (public text, no PHI), so the
    shard writer, which refuses a record that did not pass de-identification, takes the
    equivalent-steps run's records."""

    name = "public"

    def run(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            record.seal()
            yield record


def equivalent_steps() -> list[Step]:
    """The steps datatrove's pipeline also runs: a filter and MinHash dedup."""
    return [Public(), QualityFilter(), Dedup()]


def _ours(jsonl: Path, steps: list[Step]) -> tuple[float, int]:
    store = LocalStore(Path(tempfile.mkdtemp()) / "store")
    start = time.perf_counter()
    result = write_shard(store, "bench", "shard-0", run_pipeline(steps, read_jsonl(jsonl)))
    return time.perf_counter() - start, result.kept


def run(tree: EntityTree, docs: int = 4000, repeats: int = 3) -> dict[str, Any]:
    texts, origin = bench_texts(docs)
    work = Path(tempfile.mkdtemp())
    (work / "in").mkdir()
    jsonl = work / "in" / "corpus.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": str(i), "text": t}) for i, t in enumerate(texts)))
    tagger = DictionaryTagger(tree)
    secret = "benchmark"  # noqa: S105 (keys date shifts of benchmark text only)

    def timed(make_steps: Any) -> tuple[float, int]:
        runs = [_ours(jsonl, make_steps()) for _ in range(repeats)]
        return statistics.median(r[0] for r in runs), runs[0][1]

    full_s, full_kept = timed(lambda: [Deidentify(secret), QualityFilter(), Tag(tagger), Dedup()])
    same_s, same_kept = timed(equivalent_steps)
    anchor = run_anchor(
        "datatrove",
        "ingest_datatrove.py",
        {
            "input_dir": str(work / "in"),
            "min_words": QualityFilter().min_words,
            "repeats": repeats,
            "docs": len(texts),
        },
    )
    n = len(texts)
    return {
        "ours": {
            "docs_per_s": round(n / full_s, 1),
            "seconds": round(full_s, 3),
            "kept": full_kept,
            "steps": "read, de-identify, filter, MET tagging, exact+MinHash dedup, Parquet",
        },
        "ours_equivalent_steps": {
            "docs_per_s": round(n / same_s, 1),
            "seconds": round(same_s, 3),
            "kept": same_kept,
            "steps": "read, filter, MinHash dedup, Parquet",
        },
        "datatrove": {
            "docs_per_s": anchor["docs_per_s"],
            "seconds": round(anchor["seconds"], 3),
            "kept": anchor["kept"],
            "steps": "read, filter, MinHash dedup (4 stages), Parquet",
        },
        "ratio": round(anchor["seconds"] / full_s, 2),
        "ratio_equivalent_steps": round(anchor["seconds"] / same_s, 2),
        "docs": n,
        "texts": origin,
    }
