"""Stage ``rft``: rejection-sampling fine-tuning. Sample ``samples`` answers per item from
the starting model, keep the distinct ones the reward's rule layers verify as correct (at most
``keep_per_item``), publish them as chat data (``sft-data/<run-id>``, with provenance), then
fine-tune on them with the SFT stage; published to ``models/rft``. A resumed run reuses the
answers it published instead of sampling again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.common.secrets import checkpoint_key
from medxiaohe.common.settings import Settings
from medxiaohe.rubric.rewards import layered_from_config
from medxiaohe.storage import ArtifactStore, Manifest, resolve
from medxiaohe.training.chat_data import prompts, publish_chat, read_chat, read_sources
from medxiaohe.training.runs import Run
from medxiaohe.training.stage import base_folder, open_run
from medxiaohe_training import sft

STAGE = "rft"


@dataclass
class RftConfig(sft.SftConfig):
    base_model: str = field(
        default="models/sft",
        metadata={"help": "The model that samples and is fine-tuned: HF folder, s3:// URI or "
                  "store prefix; empty builds the tiny model."},
    )  # fmt: skip
    samples: int = field(default=8, metadata={"help": "Answers sampled per item (k)."})
    keep_per_item: int = field(
        default=2, metadata={"help": "Verified-correct distinct answers kept per item, at most."}
    )
    verify: str = field(
        default="option",
        metadata={"help": "Rule layers that must all give full marks, comma-separated: option, "
                  "exact_answer, set_match, regex:<pattern>."},
    )  # fmt: skip
    sample_tokens: int = field(default=256, metadata={"help": "Tokens per sampled answer."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 1 or not 1 <= self.keep_per_item <= self.samples:
            raise InvalidInput("samples >= 1 and 1 <= keep_per_item <= samples")
        if not self.verify or self.sample_tokens < 1:
            raise InvalidInput("verify names at least one rule layer; sample_tokens >= 1")

    def check(self) -> Any:
        """The verifier: every named rule layer gives full marks."""
        from medxiaohe.training.selection import verifiable

        names = [n for n in self.verify.split(",") if n]
        reward = layered_from_config({"layers": dict.fromkeys(names, 1.0), "rule_layers": names})
        return verifiable(reward)


def _distinct(replies: list[str], passed: list[bool], keep: int) -> list[str]:
    seen: dict[str, str] = {}
    for reply, ok in zip(replies, passed, strict=True):
        key = " ".join(reply.split())
        if ok and key and key not in seen:
            seen[key] = reply
    return list(seen.values())[:keep]


def sample_verified(
    config: RftConfig, rows: list[dict[str, Any]], client: Any
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(chat rows of the kept answers, counts): each item's prompt with one verified answer
    as the assistant turn, its images kept."""
    from medxiaohe.training.selection import sample

    check = config.check()
    kept: list[dict[str, Any]] = []
    counts = {"items": len(rows), "sampled": 0, "correct": 0, "kept": 0, "items_kept": 0}
    for row, item in zip(rows, prompts(rows), strict=True):
        replies = sample(client, item, config.samples, config.sample_tokens, config.seed)
        passed = check([item["prompt"]] * len(replies), replies, [item["answer"]] * len(replies))
        answers = _distinct(replies, passed, config.keep_per_item)
        counts["sampled"] += len(replies)
        counts["correct"] += sum(passed)
        counts["kept"] += len(answers)
        counts["items_kept"] += bool(answers)
        kept += [
            {
                "messages": [*item["prompt"], {"role": "assistant", "content": answer}],
                "images": row["images"],
                "answer": item["answer"],
            }
            for answer in answers
        ]
    return kept, counts


def _publish(
    store: ArtifactStore, prefix: str, rows: list[dict[str, Any]], provenance: dict[str, Any]
) -> Manifest:
    """The kept answers as chat data, images as PNG files named by their digest."""
    from medxiaohe.report.images import png

    images: dict[str, bytes] = {}
    named = []
    for row in rows:
        names = []
        for image in row["images"]:
            data = png(image)
            name = f"img-{hashlib.sha256(data).hexdigest()[:16]}.png"
            images[name] = data
            names.append(name)
        named.append(row | {"images": names})
    return publish_chat(store, prefix, {"train": named}, images, provenance)


def _sample_and_publish(
    config: RftConfig, settings: Settings, store: ArtifactStore, scratch: Path, prefix: str
) -> Manifest:
    from medxiaohe.models.client import LocalModelClient

    base = base_folder(config.base_model, settings, scratch, config.seed)
    client = LocalModelClient.from_folder(base)
    rows, counts = sample_verified(config, read_sources(store, config.data), client)
    if not rows:
        raise InvalidInput(f"no sampled answer was verified correct: {counts}")
    run = Run.start(store, STAGE, config, scratch.name, checkpoint_key(settings, store.uri))
    run.log(0, **{f"rft/{k}": float(v) for k, v in counts.items()})
    run.flush()
    provenance = {"stage": STAGE, "run": run.prefix, "from": config.data, **counts}
    return _publish(store, prefix, rows, provenance | {"base_model": config.base_model})


def train(config: RftConfig, settings: Settings) -> Manifest | None:
    """Sample, verify and keep answers (once per run), then fine-tune on them and publish."""
    store, scratch = open_run(config, settings, STAGE)
    config = replace(config, run_id=scratch.name)
    prefix = f"sft-data/{scratch.name}"
    try:
        manifest = resolve(store, prefix)  # a resumed run: sampled before
    except NotFound:
        manifest = _sample_and_publish(config, settings, store, scratch, prefix)
    data = f"{prefix}:train.jsonl"
    card = {"rft": {"data": data, **manifest.metadata}}
    return sft.train(config, settings, STAGE, read_chat(store, data), card)
