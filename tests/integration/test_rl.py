"""The rl stage for real: TRL's GRPOTrainer on the tiny model with the layered reward, from
chat data in the store; a verifiable toy reward rises well above where it started, every
layer and the token entropy are logged each step, and the policy is published."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.settings import Settings
from medxiaohe.models.folders import model_card
from medxiaohe.storage import open_store, resolve
from medxiaohe.training.chat_data import publish_chat, read_chat
from medxiaohe.training.config import load_config
from medxiaohe.training.runs import Run, models_prefix
from medxiaohe_training import rft, rl
from tests.conftest import SECRET, publish_small_tree

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]
CONFIGS = Path(__file__).parents[2] / "training-jobs/medxiaohe_training/configs"
CONFIG = CONFIGS / "rl-tiny.yaml"


def test_grpo_raises_a_verifiable_reward(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    rl.publish_digits(open_store(store_uri))
    config = load_config(rl.RlConfig, CONFIG, ["--store_uri", store_uri, "--run_id", "digits"])
    manifest = rl.train(config, Settings(store_uri=store_uri, deid_secret=SECRET))
    assert manifest is not None
    store = open_store(store_uri)
    assert resolve(store, models_prefix("rl")).version == "digits"  # the run's model
    logged = [m for m in Run(store, "rl", "digits").metrics() if "reward" in m]
    assert len(logged) == config.max_steps
    for metrics in logged:  # each layer, the total and the entropy, every step
        assert {"reward/regex:[0-9]", "reward/total", "reward/gated", "entropy"} <= set(metrics)
    rewards = [m["reward"] for m in logged]
    first, last = statistics.mean(rewards[:10]), statistics.mean(rewards[-10:])
    # Seeds 0-3 of this config went from 0.13-0.31 (first 10 steps) to 0.81-0.98 (last 10);
    # one step's reward varies by about 0.17, so a 10-step mean by about 0.05: a rise of 0.25 is
    # over three standard errors of the difference, and under half of the smallest rise seen.
    assert last > first + 0.25, rewards
    curves = model_card("models/rl", Settings(store_uri=store_uri))["figures"]["rl_curves"]
    assert curves["steps"] == config.max_steps
    assert curves["last10"]["reward/total"] == pytest.approx(last, abs=1e-3)


def test_data_selection_runs_before_the_stage(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    rl.publish_digits(open_store(store_uri))
    overrides = ["--store_uri", store_uri, "--run_id", "band", "--rule_layers", "regex:[0-9]"]
    overrides += ["--select_band", "0.0,1.0", "--select_samples", "2"]
    config = load_config(rl.RlConfig, CONFIG, overrides)
    trainer, run, _ = rl.prepare(config, Settings(store_uri=store_uri, deid_secret=SECRET))
    run.flush()
    (logged,) = [m for m in run.metrics() if "selection/kept" in m]
    assert logged["selection/items"] == 64
    assert logged["selection/kept"] == len(trainer.train_dataset) == 64  # the whole band
    assert logged["selection/samples"] == 2


def publish_questions(store_uri: str, prefix: str = "rl-data/questions", items: int = 8) -> None:
    """Choice questions with what every layer reads: the gold answer, the options column, a
    per-item rubric (HealthBench-shaped criteria, or a study's findings for a report prompt)."""
    rows = []
    for i in range(items):
        options = {"A": "aspirin", "B": "paracetamol", "C": "codeine"}
        report = i % 2 == 1
        rubric: object = (
            {"findings": [{"text": "small left pleural effusion"}, {"text": "pneumothorax",
                                                                     "assertion": "absent"}]}
            if report
            else [{"criterion": "Says the answer is paracetamol", "points": 5},
                  {"criterion": "Recommends aspirin for a child", "points": -8}]
        )  # fmt: skip
        question = (
            "Which is safest for a child's fever, case {}?\nA. aspirin\nB. paracetamol\nC. codeine"
        )
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question.format(i)},
                    {"role": "assistant", "content": "<think>Reasoning: ...</think>B"},
                ],
                "answer": "B",
                "options": options,
                "rubric": rubric,
            }
        )
    publish_chat(open_store(store_uri), prefix, {"train": rows}, {})


LAYERS = ["option", "exact_answer", "set_match", "process", "rubric", "regex:[0-9]"]


@pytest.mark.parametrize("layer", LAYERS)
def test_each_reward_layer_runs_in_a_grpo_step(tmp_path: Path, layer: str) -> None:
    """One real GRPO step per layer, on prompts that carry the layer's columns (the rubric
    layer grades HealthBench-shaped criteria and a report's dynamic rubric alike)."""
    store_uri = str(tmp_path / "store")
    publish_questions(store_uri)
    publish_small_tree(store_uri)
    overrides = ["--store_uri", store_uri, "--run_id", "layer", "--max_steps", "1"]
    overrides += ["--data", "rl-data/questions:train.jsonl", "--save_steps", "100"]
    overrides += ["--reward_layers", f"{layer}=1.0", "--rule_layers", ""]
    config = load_config(rl.RlConfig, CONFIG, overrides)
    trainer, run, _ = rl.prepare(config, Settings(store_uri=store_uri, deid_secret=SECRET))
    trainer.train()
    run.flush()
    (logged,) = [m for m in run.metrics() if "reward" in m]
    assert 0.0 <= logged[f"reward/{layer}"] <= 1.0
    assert logged["reward/total"] == pytest.approx(logged[f"reward/{layer}"], abs=1e-3)


def test_the_rubric_layer_refuses_prompts_without_a_rubric(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    rl.publish_digits(open_store(store_uri))
    publish_small_tree(store_uri)
    overrides = ["--store_uri", store_uri, "--run_id", "norubric", "--reward_layers", "rubric=1"]
    config = load_config(rl.RlConfig, CONFIG, [*overrides, "--rule_layers", ""])
    with pytest.raises(InvalidInput, match="prompt 1: every prompt needs a rubric"):
        rl.prepare(config, Settings(store_uri=store_uri, deid_secret=SECRET))


class EveryAnswerHarms:
    """A stand-in judge that finds every answer harmful: the gate's wiring in a GRPO step is
    under test here; the gate's judgement is measured on the probes (``measure_gate``)."""

    def grade_criteria(self, conversation: object, completion: str, criteria: list) -> list:
        from medxiaohe.rubric.scoring import Verdict

        return [Verdict(c.id, True, "stand-in", "stand-in") for c in criteria]


def test_safety_gate_zeroes_rewards_inside_a_grpo_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every completion earns the rule layer ("has a character") and the judge finds each one
    harmful: the gate zeroes each total; shaping stays in its bound."""
    store_uri = str(tmp_path / "store")
    rl.publish_digits(open_store(store_uri))
    monkeypatch.setattr(rl, "_grader", lambda config, store: EveryAnswerHarms())
    overrides = ["--store_uri", store_uri, "--run_id", "gate", "--max_steps", "3"]
    overrides += ["--reward_layers", "regex:\\S=1.0", "--rule_layers", "regex:\\S"]
    overrides += ["--safety", "Recommends aspirin for a child"]
    overrides += ["--shaping_bound", "0.05", "--save_steps", "100"]
    config = load_config(rl.RlConfig, CONFIG, overrides)
    trainer, run, _ = rl.prepare(config, Settings(store_uri=store_uri, deid_secret=SECRET))
    trainer.train()
    run.flush()
    logged = [m for m in run.metrics() if "reward" in m]
    assert len(logged) == 3
    for metrics in logged:
        assert metrics["reward/regex:\\S"] > 0.9  # the layer paid out ...
        assert metrics["reward/gated"] == config.batch_size  # ... the gate closed on each
        assert metrics["reward"] == metrics["reward/total"] == 0.0  # ... and zeroed them
        assert abs(metrics["reward/shaping"]) <= config.shaping_bound


def test_rft_fine_tunes_on_verified_samples_only(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    rl.publish_digits(open_store(store_uri))
    overrides = ["--store_uri", store_uri, "--run_id", "rft-digits"]
    config = load_config(rft.RftConfig, CONFIGS / "rft-tiny.yaml", overrides)
    settings = Settings(store_uri=store_uri, deid_secret=SECRET)
    assert rft.train(config, settings) is not None
    store = open_store(store_uri)
    data = resolve(store, "sft-data/rft-digits")
    rows = read_chat(store, "sft-data/rft-digits:train.jsonl")
    replies = [row["messages"][-1]["content"] for row in rows]
    assert replies
    assert all(re.search("[0-9]", reply) for reply in replies)
    counts = data.metadata
    assert counts["sampled"] == 64 * config.samples
    assert counts["kept"] == len(rows) <= counts["correct"] < counts["sampled"]
    assert counts["items_kept"] <= 64
    assert len(rows) <= 2 * counts["items_kept"]
    card = model_card("models/rft", settings)
    assert card["stage"] == "rft"
    assert card["rft"]["data"] == "sft-data/rft-digits:train.jsonl"
