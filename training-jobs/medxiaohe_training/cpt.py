"""Stage ``cpt``: continual pretraining, causal language modelling over an entity-balanced
mixture (``mixtures/<name>``) streamed by the mixture reader: texts packed into fixed-length
sequences, image–text records as examples of their own (the vision tower frozen unless
``train_vision_tower``), from a Hugging Face vision-language or causal LM folder (the tiny
model when none is given); published to ``models/cpt``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.secrets import checkpoint_key
from medxiaohe.common.settings import Settings
from medxiaohe.storage import Manifest
from medxiaohe.training.config import RunConfig
from medxiaohe.training.cpt_data import CptStream, collate
from medxiaohe.training.hf import mirror, resume_checkpoint
from medxiaohe.training.mixture_data import MixtureDataset
from medxiaohe.training.runs import Run
from medxiaohe.training.stage import (
    base_folder,
    load_model,
    open_run,
    publish_final,
    set_vision_trainable,
    training_arguments,
)

STAGE = "cpt"
DEEPSPEED = Path(__file__).parent / "deepspeed"


@dataclass
class CptConfig(RunConfig):
    mixture: str = field(default="cpt", metadata={"help": "Mixture name (mixtures/<name>)."})
    mixture_version: str = field(
        default="", metadata={"help": "Mixture version; the latest when empty."}
    )
    base_model: str = field(
        default="",
        metadata={
            "help": "HF folder, s3://bucket/prefix or a store prefix (models/<stage>) to start "
            "from; empty builds the tiny model (random weights)."
        },
    )
    seq_len: int = field(default=512, metadata={"help": "Tokens per packed sequence."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per device and step."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=3e-4, metadata={"help": "Peak learning rate."})
    warmup_ratio: float = field(
        default=0.05, metadata={"help": "Linear warmup, share of steps (< 1)."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every this many steps."})
    image_text: bool = field(
        default=True,
        metadata={
            "help": "Train a vision-language model on image-text records (images with their "
            "caption or report) too; off, their text is trained as text."
        },
    )
    train_vision_tower: bool = field(
        default=False,
        metadata={"help": "Unfreeze the vision tower (and its merger); frozen otherwise."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq_len < 8 or self.batch_size < 1 or self.max_steps < 1:
            raise InvalidInput("seq_len (>= 8), batch_size and max_steps must be positive")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise InvalidInput("learning_rate must be positive and warmup_ratio in [0, 1)")


def train(config: CptConfig, settings: Settings) -> Manifest | None:
    """Train for ``max_steps`` and publish the final weights; the manifest of the published
    model (None in processes other than the first of a distributed run)."""
    from transformers import Trainer

    store, scratch = open_run(config, settings, STAGE)
    base = base_folder(config.base_model, settings, scratch, config.seed)
    args = training_arguments(
        config,
        scratch,
        DEEPSPEED,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
    )
    run = Run.start(store, STAGE, config, scratch.name, checkpoint_key(settings, store.uri))
    model, processor = load_model(base)
    set_vision_trainable(model, config.train_vision_tower)
    records = MixtureDataset(store, config.mixture, config.mixture_version, seed=config.seed)
    block = config.batch_size * args.world_size
    stream = CptStream(store, records, processor, config.seq_len, config.image_text, block)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=stream,
        data_collator=collate,
        processing_class=processor,
    )
    mirror(trainer, run, scratch)
    trainer.train(resume_from_checkpoint=resume_checkpoint(run, scratch / "trainer"))
    card = {"stage": STAGE, "mixture": records.manifest.version, "records": stream.counts}
    return publish_final(trainer, run, scratch, card, config)
