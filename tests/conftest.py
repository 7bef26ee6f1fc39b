"""Shared fixtures: certificates, real S3 (weed mini), real Valkey, settings for servers."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.servers import s3_settings as s3_settings  # the tests import it from here
from medxiaohe.common.settings import Settings
from medxiaohe.corpus.record import Record
from medxiaohe.corpus.shards import write_shard
from medxiaohe.entities.build import ROOT, build_tree
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree, NodeRecord
from medxiaohe.storage import ArtifactStore, open_store
from medxiaohe_services.runtime.certs import DevPki, write_dev_pki
from tests.servers import Weed, start_weed

ALLOWED, LIMITED = "ehr-gateway", "ris-viewer"
# A test secret of the required length (servers refuse to start without one).
SECRET = "test-secret-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """A CA with a server certificate and two clients: one allowed everything, one limited."""
    return write_dev_pki(tmp_path_factory.mktemp("pki"), clients=[ALLOWED, LIMITED])


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """Certificates from another CA, with the same client names."""
    return write_dev_pki(tmp_path_factory.mktemp("foreign"), clients=[ALLOWED], ca_name="Other CA")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny vision-language model (random weights), built once per session."""
    from medxiaohe.models.tiny import build_tiny

    return build_tiny("qwen2_vl", tmp_path_factory.mktemp("tiny-model") / "model", seed=0)


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weed]:
    server = start_weed(tmp_path_factory.mktemp("weed"))
    yield server
    server.stop()


@pytest.fixture
def spans() -> Iterator[Any]:
    """The spans this process records from here on (tracing switched on, once per process,
    with an in-memory exporter); recording stops at the end of the test."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from medxiaohe_services.runtime import tracing

    exporter = InMemorySpanExporter()
    if not tracing.setup_tracing(Settings(), "tests", exporter=_Forward()):
        raise AssertionError("tracing did not switch on")
    _Forward.to = exporter
    yield exporter
    _Forward.to = None


class _Forward:
    """The process's one exporter: hands spans to the current test's, or drops them."""

    to: Any = None

    def export(self, batch: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return self.to.export(batch) if self.to else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def server_settings(pki: DevPki, store_uri: str, **extra: object) -> Settings:
    """mTLS on an ephemeral 127.0.0.1 port; ALLOWED may call everything, LIMITED only downloads."""
    allow = {"allow": {ALLOWED: ["*"], LIMITED: ["DownloadArtifact"]}, "indexes": {ALLOWED: ["*"]}}
    values: dict[str, object] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "store_uri": store_uri,
        "tls_cert": pki.server.cert,
        "tls_key": pki.server.key,
        "tls_client_ca": pki.ca,
        "health_interval_s": 0.2,
        "deid_secret": SECRET,
        "ingestion": allow,
        "evidence": allow,
        "report": allow,
        "rubric": allow,
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def local_store_uri(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture(scope="session")
def full_tree() -> EntityTree:
    """The Medical Entity Tree from the real vocabularies (about 30 s, built once per run)."""
    return build_tree(version="test")


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(relative: str) -> Path:
    """A file under ../shared/data, or a skip that says where it was looked for."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent (public data sets live in ../shared/data)")
    return path


def small_records() -> list[NodeRecord]:
    """A hand-made tree of a dozen nodes, for tests that need no vocabulary."""

    def node(
        node_id: str, name: str, parent: str, source: str = "ICD-10-CM", **kw: object
    ) -> NodeRecord:
        return NodeRecord(id=node_id, name=name, parents=[parent], source=source, **kw)  # type: ignore[arg-type]

    return [
        NodeRecord(id=ROOT, name="Medical Entity Tree", parents=[], source="MET"),
        node("MET:disease", "Diseases", ROOT, "MET"),
        node("MET:phenotype", "Phenotypes", ROOT, "MET"),
        node("ICD10CM:chapter-04", "Endocrine diseases", "MET:disease"),
        node("ICD10CM:E08-E13", "Diabetes mellitus", "ICD10CM:chapter-04"),
        node("ICD10CM:E11", "Type 2 diabetes mellitus", "ICD10CM:E08-E13"),
        node("ICD10CM:E11.9", "Type 2 diabetes mellitus without complications", "ICD10CM:E11"),
        node("ICD10CM:J44.9", "Chronic obstructive pulmonary disease, unspecified", "MET:disease"),
        node("ICD10CM:J18.9", "Pneumonia, unspecified organism", "MET:disease"),
        node("HP:0001250", "Seizure", "MET:phenotype", "HPO", synonyms=["Epileptic seizure"]),
        node("HP:0002027", "Abdominal pain", "MET:phenotype", "HPO"),
        node("HP:0001945", "Fever", "MET:phenotype", "HPO"),
        node("ORPHA:558", "Marfan syndrome", "MET:disease", "Orphanet", rare=True),
        node("HP:0000002", "Abnormality", "MET:phenotype", "HPO"),
    ]


def publish_small_tree(store_uri: str) -> str:
    """Publish the small tree into a local store; returns its version."""
    return build_tree(small_records()).save(open_store(store_uri)).version


COMMON = ["Patient with fever.", "Fever and abdominal pain.", "Type 2 diabetes mellitus follow-up."]
RARE = "Marfan syndrome with lens luxation."
FILLER = "The weather was mild and the clinic was quiet today."


def _png(side: int, colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(out, format="PNG")
    return out.getvalue()


def write_corpus(
    store: ArtifactStore,
    tree: EntityTree,
    shards: int,
    per_shard: int,
    pad: int = 0,
    images_every: int = 0,
) -> None:
    """Shards of dataset ``corpus`` written by the corpus pipeline's shard writer: the rare
    disease in 2 % of records, general text in 20 %, two sources; every ``images_every``-th
    record carries a small PNG (its caption is the text)."""
    tagger = DictionaryTagger(tree)
    rng = random.Random(7)
    for shard in range(shards):
        records = []
        for i in range(per_shard):
            roll = rng.random()
            text = RARE if roll < 0.02 else FILLER if roll < 0.22 else rng.choice(COMMON)
            source = "notes" if i % 4 else "abstracts"
            record = Record(f"{shard}-{i}", source, f"{text} {'word ' * pad}".strip())
            record.mentions = tagger.tag(record.text)
            if images_every and i % images_every == 0:
                record.attachments["image.png"] = _png(56, (i % 200, 40, 80))
            record.seal()
            records.append(record)
        write_shard(store, "corpus", f"s{shard:03d}", records)


def stage_process(*args: str) -> subprocess.Popen[bytes]:
    """``python -m medxiaohe_training ARGS`` from the checkout, output captured."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDXIAOHE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "medxiaohe_training", *args],
        cwd=Path(__file__).parents[1],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_and_resume(
    store: ArtifactStore,
    stage: str,
    run_id: str,
    start: Callable[[], subprocess.Popen[bytes]],
    at_step: int,
    last_step: int,
    timeouts: tuple[float, float],
) -> None:
    """Start a run, SIGKILL it once a checkpoint at ``at_step`` or later is in (the run keeps
    only its last checkpoint, so a fast run may have replaced step ``at_step`` before a poll),
    start it again: it must finish at ``last_step`` and publish, without training any step
    twice. ``timeouts``: seconds to the checkpoint, seconds for the rerun."""
    from medxiaohe.training.runs import Run

    process = start()
    folder = f"runs/{stage}/{run_id}/checkpoints/"

    def checkpoints() -> list[int]:
        return [
            int(o.key[len(folder) :].split("/")[0].removeprefix("step-"))
            for o in store.list(folder)
            if o.key.endswith("/node-0/_MANIFEST.json")
        ]

    def checkpointed() -> bool:
        return any(step >= at_step for step in checkpoints())

    deadline = time.monotonic() + timeouts[0]
    while not checkpointed() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not checkpointed():
        ended = process.poll() is not None
        if not ended:
            process.kill()
        output = process.communicate(timeout=60)[0].decode(errors="replace")[-4000:]
        state = f"exited with {process.returncode}" if ended else "timed out"
        raise AssertionError(f"no checkpoint at step {at_step}; the run {state}:\n{output}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed_from = max(checkpoints())
    assert not store.exists(f"runs/{stage}/{run_id}/model/_LATEST")
    again = start()
    output, _ = again.communicate(timeout=timeouts[1])
    assert again.returncode == 0, output.decode()[-3000:]
    steps = [m["step"] for m in Run(store, stage, run_id).metrics() if "loss" in m]
    # nothing up to the checkpoint was trained twice (steps the killed run logged after its
    # last checkpoint are trained again, and logged again)
    kept = [s for s in steps if s <= resumed_from]
    assert kept == sorted(set(kept)), steps
    assert max(steps) == steps[-1] == last_step
    assert store.exists(f"runs/{stage}/{run_id}/model/_LATEST")
