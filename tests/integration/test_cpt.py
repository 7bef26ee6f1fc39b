"""The cpt stage for real: the tiny model trained a few steps on a mixture streamed from the
store (never loaded whole; every fifth record an image with its caption), the loss falls, the
vision tower stays frozen unless switched on, the published folder reloads and generates, and
a run killed after a checkpoint resumes from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medxiaohe.common.settings import Settings
from medxiaohe.entities.build import build_tree
from medxiaohe.mixture.artifact import publish_mixture
from medxiaohe.mixture.sampler import MixtureConfig, build_mixture
from medxiaohe.storage import download, open_store, resolve
from medxiaohe.training.config import load_config
from medxiaohe.training.runs import Run, models_prefix
from medxiaohe_training import cpt
from tests.conftest import SECRET, kill_and_resume, small_records, stage_process, write_corpus

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "training-jobs/medxiaohe_training/configs/cpt-tiny.yaml"


def with_mixture(store_uri: str) -> None:
    store = open_store(store_uri)
    tree = build_tree(small_records())
    write_corpus(store, tree, shards=3, per_shard=200, images_every=5)
    mixture = build_mixture(store, tree, ["corpus"], MixtureConfig(4000, seed=0))
    publish_mixture(store, "cpt", mixture, ["corpus"], tree.version)


def vision_tower(folder: Path) -> dict[str, Any]:
    from medxiaohe.models.vlm import load_vlm

    tower = load_vlm(folder).model.model.visual
    return {k: v.clone() for k, v in tower.state_dict().items()}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("train_vision_tower", [False, True])
def test_cpt_learns_from_a_mixture_and_publishes_a_model(
    tmp_path: Path, train_vision_tower: bool
) -> None:
    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.models.vlm import load_vlm

    store_uri = str(tmp_path / "store")
    with_mixture(store_uri)
    store = open_store(store_uri)
    overrides = ["--store_uri", store_uri, "--run_id", "cpt-t1"]
    overrides += ["--train_vision_tower", str(train_vision_tower)]
    config = load_config(cpt.CptConfig, CONFIG, overrides)
    manifest = cpt.train(config, Settings(store_uri=store_uri, deid_secret=SECRET))
    assert manifest is not None
    losses = [m["loss"] for m in Run(store, "cpt", "cpt-t1").metrics() if "loss" in m]
    assert len(losses) >= 4
    assert sum(losses[-2:]) < sum(losses[:2])  # repetitive text: the loss falls fast
    folder = tmp_path / "model"
    download(store, resolve(store, models_prefix("cpt")), folder)
    card = json.loads((folder / "medxiaohe.json").read_text())
    assert card["records"]["image_text"] > 0
    assert card["records"]["text"] > 0
    untrained = vision_tower(build_tiny("qwen2_vl", tmp_path / "base", seed=config.seed))
    assert same(vision_tower(folder), untrained) is not train_vision_tower
    reply = ChatModel(load_vlm(folder)).chat(
        [{"role": "user", "content": "Patient with"}], ChatParams(max_tokens=4)
    )
    assert reply.usage.completion_tokens > 0


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    with_mixture(store_uri)
    store = open_store(store_uri)
    args = ["cpt", "--config", str(CONFIG), "--store_uri", store_uri, "--run_id", "killed"]
    args += ["--max_steps", "40", "--save_steps", "5", "--learning_rate", "1e-3"]
    kill_and_resume(store, "cpt", "killed", lambda: stage_process(*args), 10, 40, (300, 600))
