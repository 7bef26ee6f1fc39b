"""Stage ``cpt``: continual pretraining, causal language modelling over an entity-balanced
mixture (``mixtures/<name>``) streamed by the mixture reader and packed into fixed-length
sequences, from a Hugging Face vision-language or causal LM folder (the tiny model when none
is given); published to ``models/cpt``."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.settings import Settings
from medxiaohe.storage import ArtifactStore, Manifest
from medxiaohe.training.config import RunConfig
from medxiaohe.training.hf import mirror, resume_checkpoint
from medxiaohe.training.mixture_data import MixtureDataset
from medxiaohe.training.runs import Run
from medxiaohe.training.stage import load_model, open_run, publish_final, training_arguments

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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seq_len < 8 or self.batch_size < 1 or self.max_steps < 1:
            raise InvalidInput("seq_len (>= 8), batch_size and max_steps must be positive")
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1:
            raise InvalidInput("learning_rate must be positive and warmup_ratio in [0, 1)")


class Packed(IterableDataset):  # type: ignore[type-arg]
    """The mixture's texts, tokenized with an end-of-text token after each, concatenated and
    cut into ``seq_len`` pieces (a torch IterableDataset; the Trainer shards it over ranks)."""

    def __init__(self, store: ArtifactStore, config: CptConfig, tokenizer: Any) -> None:
        self.texts = MixtureDataset(store, config.mixture, config.mixture_version, seed=config.seed)
        self.tokenizer = tokenizer
        self.seq_len = config.seq_len

    def __iter__(self) -> Iterator[dict[str, Any]]:
        end = self.tokenizer.eos_token_id
        while True:  # max_steps ends training; a short mixture is read again
            buffer: list[int] = []
            empty = True
            for record in self.texts:
                empty = False
                buffer += self.tokenizer(record["text"], add_special_tokens=False)["input_ids"]
                buffer.append(end)
                while len(buffer) >= self.seq_len:
                    ids = torch.tensor(buffer[: self.seq_len])
                    buffer = buffer[self.seq_len :]
                    yield {"input_ids": ids, "labels": ids.clone()}
            if empty:
                raise InvalidInput(f"mixture {self.texts.manifest.prefix} holds no records")


def train(config: CptConfig, settings: Settings) -> Manifest | None:
    """Train for ``max_steps`` and publish the final weights; the manifest of the published
    model (None in processes other than the first of a distributed run)."""
    from transformers import Trainer, default_data_collator

    store, scratch = open_run(config, settings, STAGE)
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
    run = Run.start(store, STAGE, config, scratch.name)
    scratch.mkdir(parents=True, exist_ok=True)
    model, processor = load_model(
        config.base_model, settings, Path(tempfile.mkdtemp(dir=scratch)), config.seed
    )
    tokenizer = getattr(processor, "tokenizer", processor)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Packed(store, config, tokenizer),
        data_collator=default_data_collator,
        processing_class=processor,
    )
    mirror(trainer, run, scratch)
    trainer.train(resume_from_checkpoint=resume_checkpoint(run, scratch / "trainer"))
    return publish_final(trainer, run, scratch, {"stage": STAGE}, config)
