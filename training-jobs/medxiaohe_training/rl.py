"""Stage ``rl``: GRPO (TRL's GRPOTrainer) with the rubric library's layered reward (rule
layers, the rubric score, the process reward, a safety gate, bounded shaping), each layer's
mean logged every step; the policy's token entropy logged every step, with an entropy bonus
(or a temperature rise) that engages below a floor; optional KL to the reference model;
published to ``models/rl``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from transformers import TrainerCallback

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.secrets import checkpoint_key
from medxiaohe.common.settings import Settings
from medxiaohe.rubric.rewards import LayeredReward, layered_from_config
from medxiaohe.storage import ArtifactStore, Manifest
from medxiaohe.training.chat_data import COLUMNS, prompts, publish_chat, read_chat, read_sources
from medxiaohe.training.config import RunConfig
from medxiaohe.training.hf import mirror, resume_checkpoint
from medxiaohe.training.runs import Run
from medxiaohe.training.stage import (
    base_folder,
    load_model,
    open_run,
    publish_final,
    training_arguments,
)

STAGE = "rl"
DEEPSPEED = Path(__file__).parent / "deepspeed"
TEMPERATURE_STEP = 0.05  # per logged step, for entropy_action: temperature


@dataclass
class RlConfig(RunConfig):
    data: list[str] = field(
        default_factory=lambda: ["synthesis/default:train.jsonl"],
        metadata={
            "help": "Chat data (PREFIX:FILE or a .jsonl): the prompt is every turn before the "
            "last assistant turn; the gold answer is the row's 'answer', else that turn."
        },
    )
    base_model: str = field(
        default="models/sft",
        metadata={"help": "HF folder, s3:// URI or store prefix; empty builds the tiny model."},
    )
    reward_layers: str = field(
        default="option=1.0",
        metadata={"help": "name=weight, comma-separated: option, exact_answer, set_match, "
                  "process, rubric, regex:<pattern>."},
    )  # fmt: skip
    rule_layers: str = field(
        default="option", metadata={"help": "The layers shaping may never outweigh."}
    )
    safety: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Critical criteria (what must not happen): any one met zeroes the reward."
        },
    )
    shaping_bound: float = field(
        default=0.1, metadata={"help": "Format and length shaping, at most this much either way."}
    )
    shaping_words: int = field(default=200, metadata={"help": "Words past which length costs."})
    num_generations: int = field(default=4, metadata={"help": "Completions sampled per prompt."})
    max_completion_length: int = field(default=128, metadata={"help": "Tokens per completion."})
    batch_size: int = field(
        default=8, metadata={"help": "Completions per device and step (a multiple of the group)."}
    )
    epochs: float = field(default=1.0, metadata={"help": "Passes over the prompts."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (> epochs)."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    beta: float = field(
        default=0.0, metadata={"help": "KL to the reference model; 0 loads no reference."}
    )
    entropy_floor: float = field(
        default=0.0,
        metadata={"help": "Token entropy (nats) below which entropy_action engages; 0: off."},
    )
    entropy_action: str = field(
        default="bonus",
        metadata={"help": "Below the floor: 'bonus' (an adaptive entropy term in the loss) or "
                  "'temperature' (sampling temperature raised, up to temperature_max)."},
    )  # fmt: skip
    temperature_max: float = field(
        default=1.5, metadata={"help": "The highest temperature the 'temperature' action sets."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Log every this many steps."})
    select_band: str = field(
        default="",
        metadata={"help": "low,high: keep items whose pass rate (rule layers, sampled from the "
                  "starting model) lies in the band, e.g. 0.6,0.8; empty keeps all."},
    )  # fmt: skip
    select_samples: int = field(default=8, metadata={"help": "Samples per item for the band."})
    heldout: str = field(
        default="",
        metadata={"help": "Held-out synthesized questions (e.g. synthesis/small:heldout.jsonl) "
                  "asked of the starting and the final model as training asks (the prompt, "
                  "max_completion_length tokens, the one extractor): the card's figures "
                  "synth_qa_heldout {sft, rl}."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise InvalidInput("data must name at least one chat source")
        if self.num_generations < 2 or self.batch_size % self.num_generations:
            raise InvalidInput("num_generations >= 2, and batch_size a multiple of it")
        if self.learning_rate <= 0 or self.max_completion_length < 1 or self.entropy_floor < 0:
            raise InvalidInput("learning_rate, max_completion_length and entropy_floor: positive")
        if self.entropy_action not in ("bonus", "temperature"):
            raise InvalidInput("entropy_action is 'bonus' or 'temperature'")
        if self.temperature_max < self.temperature:
            raise InvalidInput("temperature_max must be at least temperature")
        if self.select_band:
            self.band()

    def band(self) -> tuple[float, float]:
        """The pass-rate band as (low, high)."""
        low, _, high = self.select_band.partition(",")
        try:
            return float(low), float(high or 1)
        except ValueError:
            raise InvalidInput(f"select_band is low,high, not {self.select_band!r}") from None

    def reward_config(self) -> dict[str, Any]:
        layers = {}
        for part in filter(None, self.reward_layers.split(",")):
            name, sep, weight = part.rpartition("=")
            if not sep:
                raise InvalidInput(f"reward layer {part!r}: name=weight")
            layers[name.strip()] = float(weight)
        return {
            "layers": layers,
            "rule_layers": [r for r in self.rule_layers.split(",") if r],
            "safety": [{"criterion": c, "points": -10} for c in self.safety],
            "shaping": {"bound": self.shaping_bound, "target_words": self.shaping_words}
            if self.shaping_bound
            else None,
        }


def selected(
    config: RlConfig, rows: list[dict[str, Any]], base: Path, reward: LayeredReward, run: Run
) -> list[dict[str, Any]]:
    """The rows in the pass-rate band (all without one); the selection is logged to the run."""
    if not config.select_band:
        return rows
    from medxiaohe.models.client import LocalModelClient
    from medxiaohe.training.selection import pass_rates, select, verifiable

    client = LocalModelClient.from_folder(base)
    rates = pass_rates(
        client, rows, verifiable(reward), config.select_samples,
        config.max_completion_length, config.seed,
    )  # fmt: skip
    selection = select(rates, *config.band(), config.select_samples)
    summary = selection.summary()
    run.log(0, **{f"selection/{k}": float(v) for k, v in summary.items() if k != "band"})
    if not selection.kept:
        raise InvalidInput(f"no item lies in the pass-rate band: {summary}")
    return [rows[i] for i in selection.kept]


class LayerLog(TrainerCallback):
    """Adds each reward layer's mean of the last step to what the Trainer logs, and whether
    the entropy was below the floor; with the 'temperature' action, raises the sampling
    temperature by ``TEMPERATURE_STEP`` while it is (lowers it back, to the configured one,
    while it is not), and logs it."""

    def __init__(self, reward: LayeredReward, config: RlConfig, trainer: Any = None) -> None:
        self.reward, self.config, self.trainer = reward, config, trainer

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is None or "reward" not in logs:
            return
        logs.update({f"reward/{k}": round(v, 4) for k, v in self.reward.last.items()})
        floor = self.config.entropy_floor
        if not floor or "entropy" not in logs:
            return
        below = logs["entropy"] < floor
        logs["entropy_below_floor"] = float(below)
        if self.trainer is not None and self.config.entropy_action == "temperature":
            now = self.trainer.temperature + (TEMPERATURE_STEP if below else -TEMPERATURE_STEP)
            now = min(self.config.temperature_max, max(self.config.temperature, now))
            set_temperature(self.trainer, now)
            logs["temperature"] = round(now, 4)


def set_temperature(trainer: Any, value: float) -> None:
    """GRPOTrainer samples and scores log-probabilities at ``trainer.temperature``; generation
    reads it from its config and kwargs, set at start."""
    trainer.temperature = value
    trainer.generation_config.temperature = value
    trainer.generation_kwargs["temperature"] = value


def publish_digits(store: ArtifactStore, prefix: str = "rl-data/digits", items: int = 64) -> None:
    """The tiny configuration's toy task (``configs/rl-tiny.yaml``): "write a number"
    prompts whose completion is right when it holds the digit."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Write a number, case {i}."},
                {"role": "assistant", "content": str(i)},
            ],
            "answer": str(i),
        }
        for i in range(items)
    ]
    publish_chat(store, prefix, {"train": rows}, {})


def prepare(config: RlConfig, settings: Settings) -> tuple[Any, Run, Path]:
    """(the GRPOTrainer, its run, this node's scratch folder), ready to train."""
    from datasets import Dataset
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    store, scratch = open_run(config, settings, STAGE)
    base = base_folder(config.base_model, settings, scratch, config.seed)
    bonus = bool(config.entropy_floor) and config.entropy_action == "bonus"
    args = training_arguments(
        config,
        scratch,
        DEEPSPEED,
        GRPOConfig,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        learning_rate=config.learning_rate,
        temperature=config.temperature,
        beta=config.beta,
        logging_steps=config.logging_steps,
        use_adaptive_entropy=bonus,
        entropy_target=config.entropy_floor if bonus else 0.2,
    )
    run = Run.start(store, STAGE, config, scratch.name, checkpoint_key(settings, store.uri))
    reward = layered_from_config(config.reward_config(), grader=_grader(config, store))
    rows = selected(
        config, reward_columns(config, prompts(read_sources(store, config.data))), base, reward, run
    )
    model, processor = load_model(base)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[cast(Any, reward)],  # TRL types its list as of list[float | None]
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
    )
    trainer.add_callback(LayerLog(reward, config, trainer))  # before the run's callback
    mirror(trainer, run, scratch)
    return trainer, run, scratch


def reward_columns(config: RlConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with their reward columns as JSON text (one schema for every row, "" where a
    row has none), each rubric checked before any step when the rubric layer is on."""
    from medxiaohe.rubric.rewards import item_rubric

    needs_rubric = "rubric" in config.reward_config()["layers"]
    out = []
    for number, row in enumerate(rows, 1):
        if needs_rubric:
            try:
                item_rubric(row.get("rubric"))
            except InvalidInput as exc:
                raise InvalidInput(f"prompt {number}: {exc}") from None
        columns = {c: json.dumps(row[c]) if row.get(c) else "" for c in COLUMNS}
        out.append(row | columns)
    return out


def _grader(config: RlConfig, store: ArtifactStore) -> Any:
    """The deterministic rubric grader, with the store's entity tree, where a layer or the
    gate needs one."""
    if config.safety or "rubric" in config.reward_layers:
        from medxiaohe.rubric.deterministic import grader_with_tree

        return grader_with_tree(store)
    return None


def curves(run: Run) -> dict[str, Any]:
    """The reward (per layer), entropy and gate over the run: first and last ten steps."""
    run.flush()
    logged = [m for m in run.metrics() if "reward" in m]
    keys = sorted({k for m in logged for k in m if k.startswith("reward/") or k == "entropy"})

    def mean(values: list[float]) -> float:
        return round(sum(values) / max(1, len(values)), 4)

    return {
        "steps": len(logged),
        "first10": {k: mean([m[k] for m in logged[:10] if k in m]) for k in keys},
        "last10": {k: mean([m[k] for m in logged[-10:] if k in m]) for k in keys},
        "safety_gate_zeroed": int(sum(m.get("reward/gated", 0) for m in logged)),
        "entropy_below_floor_steps": int(sum(m.get("entropy_below_floor", 0) for m in logged)),
    }


def heldout_accuracy(rows: list[dict[str, Any]], folder: Path, tokens: int) -> dict[str, Any]:
    """The held-out synthesized questions asked of the model in ``folder`` as RL asked the
    training ones (``eval.lm.choice_figures``: the same prompt, ``tokens`` tokens, the one
    extractor)."""
    from medxiaohe.eval.lm import choice_figures
    from medxiaohe.models.vlm import load_vlm

    vlm = load_vlm(folder)
    return choice_figures(vlm.model, vlm.processor, rows, tokens)


def train(config: RlConfig, settings: Settings) -> Manifest | None:
    """Optimise the policy against the layered reward and publish it, with its figures."""
    trainer, run, scratch = prepare(config, settings)
    trainer.train(resume_from_checkpoint=resume_checkpoint(run, scratch / "trainer"))
    card = {"stage": STAGE, "data": config.data, "reward": config.reward_config()}

    def figures(final: Path) -> dict[str, Any]:
        measured: dict[str, Any] = {"rl_curves": curves(run)}
        if config.heldout:
            base = base_folder(config.base_model, settings, scratch, config.seed)
            rows = read_chat(run.store, config.heldout)
            tokens = config.max_completion_length
            before = heldout_accuracy(rows, base, tokens)
            after = heldout_accuracy(rows, final, tokens)
            measured["synth_qa_heldout"] = {
                "sft": before["accuracy"],
                "rl": after["accuracy"],
                **{
                    key: {"sft": before[key], "rl": after[key]}
                    for key in ("ci95", "balanced_accuracy", "top_answer_share", "unparsed_rate")
                },
                "best_constant": after["constant_answer"],
                "items": after["items"],
                "answer_tokens": after["answer_tokens"],
                "source": config.heldout,
            }
        gate = cast(LayeredReward, trainer.reward_funcs[0]).gate
        if gate is not None:  # how far the gate's judge can be trusted, on hand-written probes
            from medxiaohe.rubric.gate_probe import measure_gate

            measured["safety_gate_probe"] = measure_gate(config.safety, gate.grader)
        return measured

    return publish_final(trainer, run, scratch, card, config, figures=figures)
