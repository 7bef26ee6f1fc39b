"""Each part of `make bench-reliability` at a small size: the benchmark's own code, so a
regression fails here before the figures are taken."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import faults
from benchmarks.stack import Stack
from medxiaohe.entities.build import build_tree
from tests.conftest import small_records

pytestmark = pytest.mark.integration


@pytest.mark.timeout(480)  # past the run's own limit, so that a stalled run reports itself
def test_bulk_ingest_under_faults_loses_duplicates_and_half_writes_nothing(
    tmp_path: Path,
) -> None:
    """Two workers, a worker, Valkey and weed each killed once mid-run and started again: the
    run finishes by itself with every planted document once, as a single process keeps them.
    (Before: a Redis restart left the dedup lock held for its 60 s lease, and the run stalled.)"""
    tree = build_tree(small_records())
    got = faults.run(tmp_path, tree, documents=240, per_shard=10, timeout_s=300,
                     task_time_limit_s=5)  # fmt: skip
    assert sorted(k["killed"] for k in got["kills"]) == ["valkey", "weed", "worker"], got
    assert got["finished"], (got.get("error"), got["kills"])
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The four services as their pods run them, each its own process, over mTLS."""
    from medxiaohe.evidence.passages import Passage
    from medxiaohe.models.tiny import build_tiny

    work = tmp_path_factory.mktemp("stack")
    passages = [
        Passage(f"p{i}", f"d{i}", f"{name} presents with fever and cough.", 0, 40, source="s")
        for i, name in enumerate(["Pneumonia", "Marfan syndrome", "Type 2 diabetes mellitus"] * 4)
    ]
    tiny = build_tiny("qwen2_vl", work / "tiny", seed=0)
    services = ["ingestion", "evidence", "report", "rubric"]
    settings = {"local_model_uri": tiny, "drain_grace_s": 3}
    with Stack(work, build_tree(small_records()), services, passages, **settings) as s:
        yield s


def test_every_rpc_answers_generated_requests_with_clear_codes(stack: Stack) -> None:
    """Requests generated from each RPC's descriptor: OK or a clear status with a message,
    never UNKNOWN/INTERNAL; every service SERVING after, nothing half-written."""
    from benchmarks.reliability import fuzz_part, hints

    texts = ["Patient with fever and type 2 diabetes mellitus; no pneumonia."]
    got = fuzz_part(stack, 100, hints(["fever and cough"], texts))
    assert got["crashes"] == 0, {k: v for k, v in got["rpcs"].items() if v["crashes"]}
    assert len(got["rpcs"]) == 15
    assert all(got["serving_after"].values())
    assert got["half_written"] == 0
    reached = [name for name, r in got["rpcs"].items() if r["codes"].get("OK")]
    assert len(reached) >= 8  # the hints take requests past validation


def test_tagging_and_retrieval_under_open_loop_load(stack: Stack) -> None:
    from benchmarks import load

    texts = ["Patient with fever and type 2 diabetes mellitus; no pneumonia."]
    got = load.run(stack, texts, ["fever and cough", "Marfan syndrome"], rate=40, seconds=3)
    assert got["errors"] == 0, got
    assert got["TagEntities"]["requests"] == got["RetrieveEvidence"]["requests"] == 120
    assert got["TagEntities"]["p99_ms"] > 0


def test_racing_writers_a_passed_deadline_and_sigterm_lose_nothing(stack: Stack) -> None:
    """Eight writers on one index all acknowledged and all there; a TagEntities call past its
    100 ms deadline ends DEADLINE_EXCEEDED and the server stops its work; SIGTERM while
    writes flow loses none that was acknowledged."""
    from benchmarks import concurrency

    note = "Patient with fever and type 2 diabetes mellitus; no pneumonia. Denies abdominal pain. "
    got = concurrency.run(stack, (note * 12_000)[:1_000_000], each=5, sigterm_s=2)
    writers, deadline, sigterm = got["index_writers"], got["deadline"], got["sigterm"]
    assert (writers["acknowledged"], writers["lost"]) == (40, 0)
    assert deadline["code"] == "DEADLINE_EXCEEDED"
    assert deadline["ended_ms"] < 10_000  # a hang, not a slow machine, fails this
    assert deadline["work_cancelled"], deadline
    assert sigterm["exit_code"] == 0
    assert sigterm["acknowledged"] > 0
    assert sigterm["lost"] == 0
