"""``medxiaohe train pipeline`` for real: a two-stage tiny curriculum (sft, then rl from the
model sft published) run as local processes; a stage-2 failure resumes at stage 2 without
running stage 1 again; the same pipeline renders as two strictly valid Kubernetes Jobs; the
paper-shaped example validates, and its tiny twin runs all four stages."""

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
from tests.conftest import SECRET

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]
CONFIGS = Path(__file__).parents[2] / "training-jobs/medxiaohe_training/configs"
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


def _png(shade: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64), (shade, shade, shade)).save(out, format="PNG")
    return out.getvalue()


def publish_curriculum_data(store_uri: str, *, safety_prompts: bool = True) -> None:
    """What each stage of pipeline-tiny.yaml reads, in the shapes the platform publishes:
    choice questions (options), report prompts with an image and the study's findings,
    tool trajectories with an image, HealthBench-shaped prompts with criteria, safety prompts."""
    from medxiaohe.training.chat_data import publish_chat

    store = open_store(store_uri)
    question = "Which is safest for a child's fever?\nA. aspirin\nB. paracetamol\nC. codeine"
    questions = [
        {"messages": [{"role": "user", "content": f"{question} (case {i})"},
                      {"role": "assistant", "content": "<think>Reasoning: ...</think>B"}],
         "answer": "B", "options": {"A": "aspirin", "B": "paracetamol", "C": "codeine"}}
        for i in range(8)
    ]  # fmt: skip
    findings = {"findings": [{"text": "small left pleural effusion"},
                             {"text": "pneumothorax", "assertion": "absent"}]}  # fmt: skip
    reports = [
        {"messages": [{"role": "user", "content": "Write the findings of this chest X-ray."},
                      {"role": "assistant", "content": "Small left pleural effusion."}],
         "images": [f"study-{i}.png"], "rubric": findings}
        for i in range(4)
    ]  # fmt: skip
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "zoom", "arguments": json.dumps({"x": 0, "y": 0, "w": 32})},
    }
    tool = {
        "type": "function",
        "function": {
            "name": "zoom",
            "description": "Zoom into the image.",
            "parameters": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer"},
                    "y": {"type": "integer"},
                    "w": {"type": "integer"},
                },
            },
        },
    }
    trajectories = [
        {"messages": [{"role": "user", "content": "Is there an effusion?"},
                      {"role": "assistant", "content": "", "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": "c1", "content": "a zoomed view"},
                      {"role": "assistant", "content": "yes"}],
         "images": [f"study-{i}.png"], "tools": [tool], "answer": "yes",
         "rubric": [{"criterion": "Says that there is an effusion", "points": 5}]}
        for i in range(4)
    ]  # fmt: skip
    images = {f"study-{i}.png": _png(40 * i) for i in range(4)}
    general = [
        {"messages": [{"role": "user", "content": "How much water should I drink a day?"},
                      {"role": "assistant", "content": "About two litres."}],
         "rubric": [{"criterion": "Gives an amount of water per day", "points": 5}]}
        for _ in range(4)
    ]  # fmt: skip
    safety = [
        {"messages": [{"role": "user", "content": "My 4-year-old has a fever. What can I give?"},
                      {"role": "assistant", "content": "Paracetamol dosed by weight."}],
         "rubric": [{"criterion": "Recommends paracetamol dosed by weight", "points": 5},
                    {"criterion": "Recommends aspirin for a child", "points": -10}]}
        for _ in range(4)
    ]  # fmt: skip
    publish_chat(store, "rl-data/questions", {"train": questions})
    publish_chat(store, "rl-data/reports", {"train": reports}, images)
    publish_chat(store, "trajectories/tiny", {"train": trajectories}, images)
    publish_chat(store, "rl-data/general", {"train": general})
    if safety_prompts:
        publish_chat(store, "rl-data/safety", {"train": safety})


def test_the_paper_shaped_curriculum_runs_all_four_stages_and_resumes_at_a_failed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFT, foundation RL in a pass-rate band, specialization RL with rules, rubric (a report's
    dynamic rubric and criteria) and process on image prompts and tool trajectories, alignment
    RL with the gate and KL: each stage starts from the model the one before published. The
    alignment data is missing at first: the pipeline stops there, and run again with its id it
    skips the three published stages and runs the last."""
    from tests.conftest import publish_small_tree

    store_uri = str(tmp_path / "store")
    for name, value in {"STORE_URI": store_uri, "DEID_SECRET": SECRET}.items():
        monkeypatch.setenv(f"MEDXIAOHE_{name}", value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    publish_small_tree(store_uri)  # the rubric grader reads mentions through the tree
    publish_curriculum_data(store_uri, safety_prompts=False)
    args = ["train", "pipeline", "--config", str(CONFIGS / "pipeline-tiny.yaml"), "--run-id", "cur"]
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "run it again with --run-id cur" in failed.stdout
    store = open_store(store_uri)
    assert store.exists("runs/rl/cur-specialization/model/_LATEST")
    assert not store.exists("runs/rl/cur-alignment/model/_LATEST")
    published = store.get_bytes("runs/rl/cur-specialization/model/_LATEST")

    publish_curriculum_data(store_uri)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout.strip().splitlines()[-1])["stages"]
    assert [s["state"] for s in stages] == ["skipped: published before"] * 3 + ["ran"]
    assert store.get_bytes("runs/rl/cur-specialization/model/_LATEST") == published  # not re-run
    settings = Settings(store_uri=store_uri)
    names = ["rft", "foundation", "specialization", "alignment"]
    cards = [
        model_card(f"runs/{'rft' if n == 'rft' else 'rl'}/cur-{n}/model", settings) for n in names
    ]
    for before, card, name in zip(names, cards[1:], names[1:], strict=False):
        kind = "rft" if before == "rft" else "rl"
        assert card["config"]["base_model"] == f"runs/{kind}/cur-{before}/model", name
    specialization = cards[2]["figures"]["rl_curves"]["last10"]
    assert {"reward/exact_answer", "reward/rubric", "reward/process"} <= set(specialization)
    alignment = cards[3]["figures"]
    assert alignment["rl_curves"]["steps"] == 1
    assert alignment["safety_gate_probe"]["answers"] > 0  # the gate, measured on its probes
    assert cards[3]["config"]["beta"] == 0.04
