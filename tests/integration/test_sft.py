"""The sft stage for real: TRL's SFTTrainer on chat data published in the store, some rows
with images; the loss is on assistant turns only and falls; full and LoRA runs publish folders
that reload and generate; a run killed after a checkpoint resumes from it."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from medxiaohe.common.settings import Settings
from medxiaohe.storage import download, open_store, resolve
from medxiaohe.training.chat_data import publish_chat
from medxiaohe.training.config import load_config
from medxiaohe.training.runs import Run, models_prefix
from medxiaohe_training import sft
from tests.conftest import SECRET, kill_and_resume, stage_process

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "training-jobs/medxiaohe_training/configs/sft-tiny.yaml"


def with_chat_data(store_uri: str) -> None:
    """Sums to learn, every fourth with an image (a red square whose shade is the row)."""
    from PIL import Image

    rng = random.Random(0)
    rows, images = [], {}
    for i in range(96):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        row: dict[str, object] = {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"The answer is {a + b}."},
            ]
        }
        if i % 4 == 0:
            png = io.BytesIO()
            Image.new("RGB", (56, 56), (2 * i, 0, 0)).save(png, format="PNG")
            images[f"images/{i}.png"] = png.getvalue()
            row["images"] = [f"images/{i}.png"]
        rows.append(row)
    publish_chat(open_store(store_uri), "sft-data/sums", {"train": rows}, images)


def settings(store_uri: str) -> Settings:
    return Settings(store_uri=store_uri, deid_secret=SECRET)


def reply(folder: Path) -> int:
    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.vlm import load_vlm

    answer = ChatModel(load_vlm(folder)).chat(
        [{"role": "user", "content": "What is 2 plus 3?"}], ChatParams(max_tokens=6)
    )
    return answer.usage.completion_tokens


def test_the_loss_is_on_assistant_turns_only(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    with_chat_data(store_uri)
    config = load_config(sft.SftConfig, CONFIG, ["--store_uri", store_uri, "--run_id", "mask"])
    trainer, _, _ = sft.prepare(config, settings(store_uri))
    tokenizer = trainer.processing_class.tokenizer
    image_token = trainer.processing_class.image_token_id
    pictured = 0
    for batch in trainer.get_train_dataloader():
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
            learned = tokenizer.decode(ids[labels != -100])
            assert "What is" in tokenizer.decode(ids)
            assert "What is" not in learned
            assert "user" not in learned
            assert learned.startswith("The answer is")
            assert learned.endswith("<|im_end|>")
            pictured += int((ids == image_token).any())
        if "pixel_values" in batch:  # the images reach the model, their tokens unlearned
            assert (batch["labels"][batch["input_ids"] == image_token] == -100).all()
    assert pictured == 24  # every fourth of the 96 rows


@pytest.mark.parametrize("lora", [0, 8])
def test_sft_learns_and_publishes_a_model_that_generates(tmp_path: Path, lora: int) -> None:
    store_uri = str(tmp_path / "store")
    with_chat_data(store_uri)
    store = open_store(store_uri)
    overrides = ["--store_uri", store_uri, "--run_id", "s1", "--lora_r", str(lora)]
    config = load_config(sft.SftConfig, CONFIG, overrides)
    manifest = sft.train(config, settings(store_uri))
    assert manifest is not None
    losses = [m["loss"] for m in Run(store, "sft", "s1").metrics() if "loss" in m]
    assert len(losses) >= 4
    assert sum(losses[-2:]) < 0.9 * sum(losses[:2])
    folder = tmp_path / "model"
    download(store, resolve(store, models_prefix("sft")), folder)
    assert (folder / "medxiaohe.json").is_file()
    assert not (folder / "adapter_config.json").exists()  # LoRA is merged: a plain folder
    # the tokenizer is saved without the cut of the last training batch: a server of the
    # folder (vLLM, the predictor) would otherwise cut every prompt to max_length
    saved = json.loads((folder / "tokenizer.json").read_text())
    assert (saved["truncation"], saved["padding"]) == (None, None)
    assert reply(folder) > 0


def test_a_killed_sft_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    with_chat_data(store_uri)
    store = open_store(store_uri)
    args = ["sft", "--config", str(CONFIG), "--store_uri", store_uri, "--run_id", "killed"]
    args += ["--max_steps", "30", "--save_steps", "5"]
    kill_and_resume(store, "sft", "killed", lambda: stage_process(*args), 10, 30, (600, 900))
