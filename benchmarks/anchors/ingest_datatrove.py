"""Anchor for `medxiaohe bench ingest`, run in .venv-datatrove: datatrove's reader, a filter,
its four-stage MinHash dedup and a Parquet writer over the same JSONL input."""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter


def run_once(input_dir: str, min_words: int) -> tuple[float, int]:
    work = Path(tempfile.mkdtemp())
    config = MinhashConfig()
    keep = LambdaFilter(lambda doc: len(doc.text.split()) >= min_words)
    stages = [
        [
            JsonlReader(input_dir),
            keep,
            MinhashDedupSignature(output_folder=str(work / "sigs"), config=config),
        ],
        [
            MinhashDedupBuckets(
                input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config
            )
        ],
        [
            MinhashDedupCluster(
                input_folder=str(work / "buckets"),
                output_folder=str(work / "remove"),
                config=config,
            )
        ],
        [
            JsonlReader(input_dir),
            keep,
            MinhashDedupFilter(input_folder=str(work / "remove")),
            ParquetWriter(str(work / "out")),
        ],
    ]
    start = time.perf_counter()
    tasks = [1, config.num_buckets, 1, 1]  # the bucket stage runs one task per bucket
    for i, pipeline in enumerate(stages):
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks[i],
            workers=1,
            logging_dir=str(work / f"logs{i}"),
            skip_completed=False,
        ).run()
    elapsed = time.perf_counter() - start
    import pyarrow.parquet as pq

    kept = sum(pq.read_table(p).num_rows for p in (work / "out").rglob("*.parquet"))
    return elapsed, kept


def main() -> None:
    with open(sys.argv[1]) as fh:
        job = json.load(fh)
    runs = [run_once(job["input_dir"], job["min_words"]) for _ in range(job["repeats"])]
    seconds = statistics.median(r[0] for r in runs)
    print(
        json.dumps(
            {"seconds": seconds, "docs_per_s": round(job["docs"] / seconds, 1), "kept": runs[0][1]}
        )
    )


main()
