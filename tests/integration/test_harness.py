"""The harness against the tiny model served by the real predictor (its own process, bearer
token): a few items of every suite, a planted benchmark question found, dropped and left out
of the clean score, and a killed run that resumes without re-asking what it finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medxiaohe.common.errors import Conflict
from medxiaohe.corpus.ingest import ShardIngestor
from medxiaohe.corpus.record import Record
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree
from medxiaohe.eval.harness.contamination import benchmark_index
from medxiaohe.eval.harness.evaluate import evaluate, load_items, publish_results
from medxiaohe.eval.harness.run import EvalConfig
from medxiaohe.eval.harness.suites import SUITES, load_suite
from medxiaohe.models.client import HttpModelClient
from medxiaohe.rubric.deterministic import DeterministicGrader
from medxiaohe.storage import LocalStore, open_store, read_file, resolve
from medxiaohe_services.cli import app
from medxiaohe_services.model.process import Running, model_server
from tests.conftest import SHARED_DATA, publish_small_tree
from tests.unit.test_harness import QUESTIONS, write_medqa

NAME = "tiny-vlm"


@pytest.fixture(scope="module")
def predictor(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    log = tmp_path_factory.mktemp("predictor") / "server.log"
    with model_server(tiny_model, NAME, ready_s=600, log=log) as running:
        yield running


def client_of(running: Running) -> HttpModelClient:
    return HttpModelClient(f"{running.url}/openai/v1", NAME, api_key=running.token, timeout_s=600)


@pytest.mark.timeout(900)
def test_every_suite_through_the_predictor(predictor: Running, tmp_path: Path) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (public data sets live in ../shared/data)")
    synth = tmp_path / "synth_qa.jsonl"  # the platform's own questions: not shared data
    synth.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Which is rare, case {i}?\n"
                                      "A. Fever\nB. Marfan syndrome"},
                                     {"role": "assistant", "content": "The answer is B."}],
                        "answer": "B"}) + "\n"
            for i in range(2)
        )
    )  # fmt: skip
    items, skipped = load_items(list(SUITES), SHARED_DATA, {"synth_qa": synth}, limit=2)
    assert not skipped, skipped
    store = LocalStore(tmp_path / "store")
    config = EvalConfig(f"{NAME}@test")
    result = evaluate(
        store, client_of(predictor), config, items, run="ci", grader=DeterministicGrader()
    )
    assert set(result["suites"]) == set(SUITES)
    for suite, row in result["suites"].items():
        assert row["n"] == 2, suite
        assert 0.0 <= row["ci95"][0] <= row["score"] <= row["ci95"][1] <= 1.0, (suite, row)
    assert result["suites"]["iu_xray"]["metric"] == "rouge_l"
    assert {"bleu4", "entity_f1", "unsupported_claim_rate"} <= set(result["suites"]["iu_xray"])
    assert result["suites"]["healthbench"]["metric"] == "rubric_score"
    for record in result["predictions"]:
        assert record["model"] == config.model
        assert record["prompt_version"] == "v1-zero-shot"
        assert record["prompt"]
        assert "output" in record
    for record in [r for r in result["predictions"] if r["suite"] == "medqa"]:
        assert record["extracted"] in ("A", "B", "C", "D")  # the schema held the tiny model
    uri = publish_results(store, result)
    manifest = resolve(store, uri.rsplit("/", 1)[0])
    assert read_file(store, manifest, "results.png").startswith(b"\x89PNG")
    assert "| medqa | accuracy |" in read_file(store, manifest, "results.md").decode()
    lines = read_file(store, manifest, "predictions/vqa_rad_closed.jsonl").decode().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["gold"] in ("yes", "no")


@pytest.mark.timeout(600)
def test_planted_question_is_found_dropped_and_left_out(predictor: Running, tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    publish_small_tree(store_uri)
    store = open_store(store_uri)
    items = load_suite("medqa", write_medqa(tmp_path))
    planted = Record("forum-7", "forum", f"Exam recall thread. {QUESTIONS[1][0]} Answer: D.")
    plain = Record("note-1", "notes", "Patient with fever and abdominal pain, seen today.")
    tagger = DictionaryTagger(EntityTree.load(store))

    def records() -> list[Record]:
        return [Record(r.id, r.source, r.text) for r in (planted, plain)]

    # ingested without the step, the copy is kept; with it, it drops with its reason
    ShardIngestor(store, "raw", tagger, "s" * 32).process_records("s0", records())
    index = benchmark_index(items)
    cleaned = ShardIngestor(store, "clean", tagger, "s" * 32, benchmarks=index)
    result = cleaned.process_records("s0", records())
    assert result.kept == 1
    assert [why for _, why in result.drops] == ["overlaps benchmark item medqa/0001"]

    invoked = CliRunner().invoke(
        app,
        ["decontaminate", "--source", "dataset:raw", "--source", "dataset:clean", "--name",
         "planted", "--suites", "medqa", "--path", f"medqa={tmp_path}", "--store", store_uri],
    )  # fmt: skip
    assert invoked.exit_code == 0, invoked.output
    report = json.loads(invoked.output.splitlines()[-1])
    assert report["contaminated"] == {"medqa": 1}
    assert report["by_source"] == {"dataset:raw": {"medqa": 1}, "dataset:clean": {}}
    assert report["records"] == 3
    assert report["records_per_s"] > 0

    scored = evaluate(
        store, client_of(predictor), EvalConfig(f"{NAME}@test"), {"medqa": items},
        run="planted", decontamination="planted",
    )  # fmt: skip
    row = scored["suites"]["medqa"]
    correct = {r["id"]: r["correct"] for r in scored["predictions"]}
    assert row["contaminated"] == 1
    assert row["score"] == round(sum(correct.values()) / 3, 4)
    assert row["clean_score"] == round((correct["0000"] + correct["0002"]) / 2, 4)
    # the run answered these items: other content under their ids is a conflict
    changed = [replace(items[0], question="Which drug is first line for allergic rhinitis?")]
    with pytest.raises(Conflict, match="not the one run planted answered"):
        evaluate(
            store, client_of(predictor), EvalConfig(f"{NAME}@test"), {"medqa": changed},
            run="planted",
        )  # fmt: skip


@pytest.mark.timeout(900)
def test_a_killed_run_resumes_without_asking_again(predictor: Running, tmp_path: Path) -> None:
    many = [(f"Case {i}. {q}", o, a) for i in range(14) for q, o, a in QUESTIONS]
    data = write_medqa(tmp_path, many)
    key = tmp_path / "token"
    key.write_text(predictor.token)
    store = tmp_path / "store"
    command = [
        sys.executable, "-m", "medxiaohe_services.cli", "eval", "suite", "--run", "killed",
        "--endpoint", f"{predictor.url}/openai/v1", "--model-name", NAME,
        "--api-key-file", str(key), "--suites", "medqa", "--path", f"medqa={data}",
        "--concurrency", "1",
    ]  # fmt: skip
    env = {**os.environ, "MEDXIAOHE_STORE_URI": str(store)}
    folder = store / "eval-runs" / "killed" / "items" / "medqa"
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while len(list(folder.glob("*.json"))) < 3 and first.poll() is None:
        assert time.monotonic() < deadline, "no item was answered"
        time.sleep(0.05)
    first.kill()
    output, _ = first.communicate()
    answered = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    assert 3 <= len(answered) < len(many), output.decode()[-2000:]

    again = subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    result = json.loads(again.stdout.decode().splitlines()[-1])
    assert result["suites"]["medqa"]["n"] == len(many)
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    assert len(after) == len(many)
    assert all(after[name] == stamp for name, stamp in answered.items())  # not asked again
