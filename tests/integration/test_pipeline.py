"""``medxiaohe train pipeline`` for real: a two-stage tiny curriculum (sft, then rl from the
model sft published) run as local processes; a stage-2 failure resumes at stage 2 without
running stage 1 again; the same pipeline renders as two strictly valid Kubernetes Jobs; the
paper-shaped example validates."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medxiaohe.common.settings import Settings
from medxiaohe.models.folders import model_card
from medxiaohe.storage import open_store
from medxiaohe.training.pipeline import plan
from medxiaohe_services.cli import app
from medxiaohe_services.deploy.manifests import validate_object
from medxiaohe_training.cli import STAGES
from medxiaohe_training.entropy_bench import publish_digits
from tests.conftest import SECRET

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]
CONFIGS = Path(__file__).parents[2] / "training-jobs/configs"
KINDS = {k: v[0] for k, v in STAGES.items()}


def two_stages(folder: Path) -> Path:
    path = folder / "pipeline.yaml"
    stages = [
        {"name": "warmup", "stage": "sft", "config": str(CONFIGS / "sft-tiny.yaml"),
         "set": {"data": ["rl-data/digits:train.jsonl"], "max_steps": 2, "save_steps": 100}},
        {"name": "foundation", "stage": "rl", "config": str(CONFIGS / "rl-tiny.yaml"),
         "set": {"data": ["rl-data/later:train.jsonl"], "max_steps": 2, "save_steps": 100}},
    ]  # fmt: skip
    path.write_text(yaml.safe_dump({"name": "tiny", "stages": stages}))
    return path


def test_a_two_stage_pipeline_runs_and_resumes_at_the_failed_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_uri = str(tmp_path / "store")
    for name, value in {"STORE_URI": store_uri, "DEID_SECRET": SECRET}.items():
        monkeypatch.setenv(f"MEDXIAOHE_{name}", value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    publish_digits(store_uri, "rl-data/digits", 16)  # stage 2's data is not there yet: it fails
    args = ["train", "pipeline", "--config", str(two_stages(tmp_path)), "--run-id", "pl-t"]
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "run it again with --run-id pl-t" in failed.stdout
    store = open_store(store_uri)
    assert store.exists("runs/sft/pl-t-warmup/model/_LATEST")
    assert not store.exists("runs/rl/pl-t-foundation/model/_LATEST")
    stage_one = store.get_bytes("runs/sft/pl-t-warmup/model/_LATEST")

    publish_digits(store_uri, "rl-data/later", 16)
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    stages = json.loads(resumed.stdout.strip().splitlines()[-1])["stages"]
    assert [s["state"] for s in stages] == ["skipped: published before", "ran"]
    assert store.get_bytes("runs/sft/pl-t-warmup/model/_LATEST") == stage_one  # not re-run
    card = model_card("runs/rl/pl-t-foundation/model", Settings(store_uri=store_uri))
    assert card["config"]["base_model"] == "runs/sft/pl-t-warmup/model"  # chained


def test_a_pipeline_renders_one_strictly_valid_job_per_stage(tmp_path: Path) -> None:
    args = ["train", "pipeline", "--config", str(two_stages(tmp_path)), "--run-id", "pl-t"]
    result = CliRunner().invoke(app, [*args, "--backend", "kubernetes", "--dry-run"])
    assert result.exit_code == 0, result.output
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    jobs = [o for o in objects if o["kind"] == "Job"]
    assert [j["metadata"]["name"] for j in jobs] == [
        "train-sft-pl-t-warmup",
        "train-rl-pl-t-foundation",
    ]
    assert all(validate_object(o) == [] for o in objects)
    second = yaml.safe_load(next(o for o in objects if o["kind"] == "ConfigMap" and
                                 o["metadata"]["name"] == "train-rl-pl-t-foundation")
                            ["data"]["config.yaml"])  # fmt: skip
    assert second["base_model"] == "runs/sft/pl-t-warmup/model"


def test_the_paper_shaped_pipeline_validates() -> None:
    steps = plan(CONFIGS / "pipeline-medxiaohe.yaml", "pl-x", KINDS)
    assert [s.stage for s in steps] == ["rft", "rl", "rl", "rl"]
    for before, step in itertools.pairwise(steps):
        assert step.config.base_model == before.model
