"""Stage ``sft``: supervised fine-tuning with TRL's SFTTrainer on chat data (synthesized
questions, report writing, trajectories; images in messages), the loss on assistant turns
only, full weights or a LoRA adapter (PEFT) merged into the base at publish; published to
``models/sft``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.secrets import checkpoint_key
from medxiaohe.common.settings import Settings
from medxiaohe.storage import Manifest
from medxiaohe.training.chat_data import read_sources, tools_as_text, with_image_parts
from medxiaohe.training.config import RunConfig
from medxiaohe.training.hf import mirror, resume_checkpoint
from medxiaohe.training.runs import Run
from medxiaohe.training.stage import (
    base_folder,
    load_model,
    open_run,
    publish_final,
    set_vision_trainable,
    training_arguments,
)

STAGE = "sft"
DEEPSPEED = Path(__file__).parent / "deepspeed"


@dataclass
class SftConfig(RunConfig):
    data: list[str] = field(
        default_factory=lambda: ["synthesis/default:train.jsonl"],
        metadata={
            "help": "Chat data: PREFIX:FILE of a published artifact (synthesis/<name>:"
            "train.jsonl, sft-data/<name>:train.jsonl) or a local .jsonl file."
        },
    )
    eval_data: list[str] = field(
        default_factory=list,
        metadata={"help": "Chat data to report the loss on every eval_steps (never a test set)."},
    )
    base_model: str = field(
        default="models/cpt",
        metadata={
            "help": "HF folder, s3://bucket/prefix or a store prefix (models/<stage>) to start "
            "from; empty builds the tiny model (random weights)."
        },
    )
    max_length: int = field(default=1024, metadata={"help": "Tokens per example, at most."})
    batch_size: int = field(default=8, metadata={"help": "Examples per device and step."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the data."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (> epochs)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Linear warmup, share of steps (< 1)."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every this many steps."})
    eval_steps: int = field(default=100, metadata={"help": "Evaluate every this many steps."})
    assistant_only_loss: bool = field(
        default=True,
        metadata={"help": "Loss on assistant turns only (needs {% generation %} markers)."},
    )
    train_vision_tower: bool = field(
        default=False,
        metadata={"help": "Train a vision-language model's vision tower too (frozen otherwise)."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains all weights."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on LoRA inputs."})
    lora_targets: str = field(
        default="all-linear",
        metadata={"help": "Modules LoRA adapts: 'all-linear' or comma-separated names."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise InvalidInput("data must name at least one chat source")
        if self.max_length < 16 or self.batch_size < 1 or self.learning_rate <= 0:
            raise InvalidInput("max_length (>= 16), batch_size and learning_rate must be positive")
        if not 0 <= self.warmup_ratio < 1 or self.lora_r < 0:
            raise InvalidInput("warmup_ratio must be in [0, 1) and lora_r >= 0")
        if self.lora_r and self.deepspeed == "zero3":
            raise InvalidInput("LoRA is merged on one process: use zero2 (or none) with lora_r")


def _dataset(rows: list[dict[str, Any]], vision: bool = True) -> Any:
    """A datasets.Dataset of messages (tool calls as the predictor renders them), with an
    images column only where some row has one (TRL then collates through the processor; rows
    then shaped by ``with_image_parts``). A text-only model refuses rows with images."""
    from datasets import Dataset

    rows = [tools_as_text(r) for r in rows]
    pictured = sum(bool(r["images"]) for r in rows)
    if pictured and not vision:
        raise InvalidInput(f"the base model reads text only, and {pictured} rows carry images")
    if not pictured:
        return Dataset.from_list([{"messages": r["messages"]} for r in rows])
    return Dataset.from_list([with_image_parts(r) for r in rows])


def _lora(config: SftConfig) -> Any:
    if not config.lora_r:
        return None
    from peft import LoraConfig

    targets = config.lora_targets
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets if targets == "all-linear" else targets.split(","),
        task_type="CAUSAL_LM",
    )


def prepare(
    config: SftConfig,
    settings: Settings,
    stage: str = STAGE,
    rows: list[dict[str, Any]] | None = None,
) -> tuple[Any, Run, Path]:
    """(the SFTTrainer, its run, this node's scratch folder), ready to train on ``rows``, or
    on the configured data; ``stage`` names the run (a stage built on this one, e.g. rft)."""
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    store, scratch = open_run(config, settings, stage)
    base = base_folder(config.base_model, settings, scratch, config.seed)
    evaluating = bool(config.eval_data)
    args = training_arguments(
        config,
        scratch,
        DEEPSPEED,
        SFTConfig,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=config.eval_steps,
        max_length=config.max_length,
        assistant_only_loss=config.assistant_only_loss,
        activation_checkpointing=False,  # TRL's default is on; set it per model size
        dataset_num_proc=None,
    )
    run = Run.start(store, stage, config, scratch.name, checkpoint_key(settings, store.uri))
    model, processor = load_model(base)
    vision = set_vision_trainable(model, config.train_vision_tower) > 0
    train = rows if rows is not None else read_sources(store, config.data)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=_dataset(train, vision),
        eval_dataset=_dataset(read_sources(store, config.eval_data), vision)
        if evaluating
        else None,
        processing_class=processor,
        peft_config=_lora(config),
    )
    mirror(trainer, run, scratch)
    return trainer, run, scratch


def train(
    config: SftConfig,
    settings: Settings,
    stage: str = STAGE,
    rows: list[dict[str, Any]] | None = None,
    card: dict[str, Any] | None = None,
) -> Manifest | None:
    """Fine-tune and publish; the manifest of the published model (None in processes other
    than the first of a distributed run). ``stage``, ``rows``: as ``prepare``; ``card``:
    what the stage adds to the model card."""
    trainer, run, scratch = prepare(config, settings, stage, rows)
    trainer.train(resume_from_checkpoint=resume_checkpoint(run, scratch / "trainer"))

    def merged(folder: Path) -> None:
        """The adapter merged into the base weights: a plain HF folder that serves as is."""
        if trainer.is_world_process_zero():
            trainer.model.merge_and_unload().save_pretrained(folder)
            trainer.processing_class.save_pretrained(folder)

    card = {"stage": stage, "data": config.data, "lora": bool(config.lora_r), **(card or {})}
    save = merged if config.lora_r else None
    return publish_final(trainer, run, scratch, card, config, save=save)
