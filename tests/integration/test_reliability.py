"""Each part of `make bench-reliability` at a small size: the benchmark's own code, so a
regression fails here before the figures are taken."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import faults
from medxiaohe.entities.build import build_tree
from tests.conftest import small_records

pytestmark = pytest.mark.integration


def test_bulk_ingest_under_faults_loses_duplicates_and_half_writes_nothing(
    tmp_path: Path,
) -> None:
    """Two workers, a worker, Valkey and weed each killed once mid-run and started again: the
    run finishes by itself with every planted document once, as a single process keeps them."""
    tree = build_tree(small_records())
    got = faults.run(tmp_path, tree, documents=240, per_shard=10, timeout_s=300,
                     task_time_limit_s=5)  # fmt: skip
    assert sorted(k["killed"] for k in got["kills"]) == ["valkey", "weed", "worker"]
    assert got["finished"], got.get("error")
    assert (got["lost"], got["duplicated"], got["half_written"]) == (0, 0, 0)
    assert min(got["planted"]["exact"], got["planted"]["near"]) > 0
    assert got["dropped"] == sum(got["planted"].values())  # the duplicates, nothing else
    assert got["equals_single_process"]


@pytest.mark.parametrize("kind", ["text", "jsonl", "fhir", "hl7", "dicom", "image"])
def test_every_reader_refuses_generated_hostile_input_clearly(kind: str) -> None:
    """2,000 mutated and generated inputs per reader: each accepted or refused with
    InvalidInput. (Before: an MSH with repeated delimiters tripped the HL7 parser's assert,
    pydicom's BytesLengthException and NotImplementedError escaped, PIL's SyntaxError on a
    broken PNG chunk escaped.)"""
    from benchmarks.fuzz import fuzz_reader

    got = fuzz_reader(kind, 2000)
    assert got["crashes"] == 0, got
    assert got["accepted"] > 0
    assert got["refused"] > 0
