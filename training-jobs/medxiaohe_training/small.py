"""``small``: the small vision-language model the platform trains itself, end to end, from
public data (``make train-small``). Steps, each with its counts in the card:

1. ingest the training text of ``../shared/data`` (NCBI-disease and BC5CDR train, SciFact,
   IU X-ray train reports) and the vocabularies' definitions through the corpus pipeline;
2. build the entity-balanced mixture and the verified synthesized questions;
3. build the model from a config, its tokenizer trained on the corpus;
4. CPT on the mixture; 5. SFT on IU X-ray report writing (train), the synthesized questions
   (train split) and VQA-RAD's training questions with their images;
6. measure untrained vs CPT vs SFT (held-out perplexity, IU X-ray validation reports, the
   held-out synthesized questions, VQA-RAD's official test split, closed questions, once);
7. publish the SFT weights as ``models/small`` with the figures and the provenance.

The figures are small-model figures: they show that the stages learn, not that the model is
good."""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.common.secrets import checkpoint_key, home_or_configured_secret
from medxiaohe.common.settings import Settings
from medxiaohe.corpus import public as corpus_public
from medxiaohe.datasets import iu_xray
from medxiaohe.storage import ArtifactStore, Manifest, download, open_store, read_file, resolve
from medxiaohe.training import public_data as public
from medxiaohe.training.chat_data import publish_chat
from medxiaohe.training.config import RunConfig
from medxiaohe.training.runs import Run
from medxiaohe_training import cpt, sft

STAGE = "small"
DATASET = "small"


@dataclass
class SmallConfig(RunConfig):
    data_root: str = field(default="../shared/data", metadata={"help": "The shared data."})
    home: str = field(
        default=".medxiaohe",
        metadata={"help": "Embedded home: its secret keys a local store's pseudonyms."},
    )
    vocab_size: int = field(default=8000, metadata={"help": "Tokenizer vocabulary, at most."})
    hidden_size: int = field(default=256, metadata={"help": "Width of the language model."})
    layers: int = field(default=4, metadata={"help": "Layers of each tower."})
    max_pixels: int = field(default=224 * 224, metadata={"help": "Pixels per image, at most."})
    mixture_tokens: int = field(default=3_000_000, metadata={"help": "Mixture token budget."})
    cpt_steps: int = field(default=600, metadata={"help": "CPT optimizer steps."})
    cpt_seq_len: int = field(default=256, metadata={"help": "CPT tokens per sequence."})
    sft_epochs: float = field(default=1.0, metadata={"help": "Passes over the SFT data."})
    sft_max_length: int = field(default=320, metadata={"help": "SFT tokens per example."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per step (both stages)."})
    synthesis_nodes: int = field(default=300, metadata={"help": "Weak nodes to synthesize."})
    synth_repeats: int = field(
        default=4,
        metadata={"help": "Times each synthesized train question is in the SFT data: a few "
                  "hundred beside 4,000 report and VQA rows teach the answer's form."},
    )  # fmt: skip
    eval_reports: int = field(
        default=100, metadata={"help": "IU X-ray validation reports to generate (0: all)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.cpt_steps, self.batch_size, self.layers, self.synth_repeats) < 1 or (
            self.sft_epochs <= 0
        ):
            raise InvalidInput("steps, batch size, layers and epochs must be positive")


def _thumbnail(path: Path, max_pixels: int) -> bytes:
    """An image at most ``max_pixels`` large, as PNG: the processor would shrink it anyway,
    and the SFT data then holds (and decodes) no more than the model sees."""
    import io

    from PIL import Image

    with Image.open(path) as image:
        picture = image.convert("RGB")
    scale = min(1.0, (max_pixels / (picture.width * picture.height)) ** 0.5)
    if scale < 1:
        size = (max(28, int(picture.width * scale)), max(28, int(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def _sft_rows(
    store: ArtifactStore, data: Path, synthesis_uri: str, max_pixels: int, repeats: int = 1
) -> tuple[list[dict[str, Any]], dict[str, bytes], dict[str, int]]:
    """IU X-ray report writing, the synthesized questions' train split (the answer line:
    a model this size cannot use a long chain of thought) and VQA-RAD train with images."""
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for row in iu_xray.reports(data / "iu_xray", "train"):
        rows.append({"messages": public.report_messages(row)})
        counts["iu_xray_train"] += 1
    prefix, _, version = synthesis_uri.rpartition("/")
    items = read_file(store, resolve(store, prefix, version), "train.jsonl").decode()
    for line in items.splitlines():
        item = json.loads(line)
        question = item["messages"][0]["content"]
        answer = {"role": "assistant", "content": f"The answer is {item['answer']}."}
        rows += [{"messages": [{"role": "user", "content": question}, answer]}] * repeats
        counts["synth_train"] += 1
        counts["synth_rows"] += repeats
    images: dict[str, bytes] = {}
    train, _ = public.vqa_rad(data)
    for row in train:
        name = f"images/{Path(row['image_path']).stem}.png"
        if name not in images:
            images[name] = _thumbnail(Path(row["image_path"]), max_pixels)
        rows.append({"messages": public.vqa_messages(row), "images": [name]})
        counts["vqa_rad_train"] += 1
    return rows, images, dict(counts)


def _jsonl(store: ArtifactStore, uri: str, name: str) -> list[dict[str, Any]]:
    prefix, _, version = uri.rpartition("/")
    text = read_file(store, resolve(store, prefix, version), name).decode()
    return [json.loads(line) for line in text.splitlines() if line]


def _reports(model: Any, processor: Any, data: Path, limit: int) -> dict[str, Any]:
    """IU X-ray validation: generated reports beside the most frequent normal report."""
    from medxiaohe.eval.lm import answer
    from medxiaohe.eval.report import evaluate

    val = iu_xray.reports(data / "iu_xray", "val")[: limit or None]
    references = {r["uid"]: r["report"] for r in val}
    generated = {
        r["uid"]: answer(model, processor, public.report_messages(r, False), max_new_tokens=96)
        for r in val
    }
    baseline = public.normal_baseline(iu_xray.reports(data / "iu_xray", "train"))
    return {
        "reports": len(val),
        "model": evaluate(generated, references)["overall"],
        "baseline": evaluate(dict.fromkeys(references, baseline), references)["overall"],
    }


def _synth_qa(model: Any, processor: Any, store: ArtifactStore, uri: str) -> dict[str, Any]:
    """The held-out synthesized questions (``eval.lm.choice_figures``) beside chance and the
    most frequent train answer."""
    from medxiaohe.eval.lm import choice_figures

    majority = Counter(i["answer"] for i in _jsonl(store, uri, "train.jsonl")).most_common(1)
    items = _jsonl(store, uri, "heldout.jsonl")
    figures = choice_figures(model, processor, items)
    return {
        **figures,
        "model": figures.get("accuracy", 0.0),
        "chance": 0.25,
        "majority": round(sum(i["answer"] == majority[0][0] for i in items) / len(items), 4),
    }


def _vqa_rad_closed(model: Any, processor: Any, data: Path) -> dict[str, Any]:
    """VQA-RAD's official test split, closed questions, asked once (never tuned on)."""
    from PIL import Image

    from medxiaohe.eval.lm import answer, short_answer

    train, test = public.vqa_rad(data)
    closed = [r for r in test if r["answer_type"] == "CLOSED"]
    answers = Counter(r["answer"] for r in train if r["answer_type"] == "CLOSED")
    common = answers.most_common(1)[0][0]
    right = 0
    for row in closed:
        with Image.open(row["image_path"]) as image:
            pictures = [image.convert("RGB")]
        reply = answer(model, processor, public.vqa_messages(row, False), pictures, 4)
        right += short_answer(reply) == row["answer"]
    return {
        "questions": len(closed),
        "model": round(right / len(closed), 4),
        "majority": round(sum(r["answer"] == common for r in closed) / len(closed), 4),
        "majority_answer": common,
    }


def _figures(
    folders: dict[str, Path], store: ArtifactStore, data: Path, synthesis_uri: str, limit: int
) -> dict[str, Any]:
    """Held-out perplexity of every model; the generation and question figures of the last."""
    from medxiaohe.eval.lm import perplexity
    from medxiaohe.models.vlm import load_vlm

    heldout = corpus_public.heldout_texts(data)
    texts = [t for group in heldout.values() for t in group]
    figures: dict[str, Any] = {"perplexity": {}}
    for name, folder in folders.items():
        vlm = load_vlm(folder)
        value = perplexity(vlm.model, vlm.processor.tokenizer, texts)
        figures["perplexity"][name] = round(value, 3)
    figures["perplexity_texts"] = {k: len(v) for k, v in heldout.items()}
    vlm = load_vlm(folders["sft"])
    figures["iu_xray_val"] = _reports(vlm.model, vlm.processor, data, limit)
    figures["synth_qa"] = _synth_qa(vlm.model, vlm.processor, store, synthesis_uri)
    figures["vqa_rad_closed"] = _vqa_rad_closed(vlm.model, vlm.processor, data)
    return figures


def _published(manifest: Manifest | None) -> Manifest:
    if manifest is None:  # the chain runs as one process
        raise InvalidInput("the small model's chain runs as a single process")
    return manifest


def _step(steps: dict[str, Any], name: str, work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    steps[name] = {"seconds": round(time.perf_counter() - started, 1)}
    if isinstance(result, dict):
        steps[name] |= {k: v for k, v in result.items() if isinstance(v, int | float | str)}
    return result


def train(config: SmallConfig, settings: Settings) -> Manifest:
    from medxiaohe.corpus.ingest import ensure_dataset
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.mixture.artifact import publish_mixture
    from medxiaohe.mixture.sampler import MixtureConfig, build_mixture
    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.synthesis.gaps import publish_gaps, synthesize_gaps

    started = time.perf_counter()
    store_uri = config.store_uri or settings.store_uri
    settings = settings.model_copy(update={"store_uri": store_uri})
    store = open_store(store_uri, settings)
    data = Path(config.data_root)
    try:
        tree = EntityTree.load(store)
    except NotFound:
        raise NotFound("no Medical Entity Tree in the store: run `make met` first") from None
    run = Run.start(
        store, STAGE, config, config.run_id, checkpoint_key(settings, store_uri, Path(config.home))
    )
    scratch = Path(tempfile.mkdtemp(prefix="medxiaohe-small-"))
    steps: dict[str, Any] = {}
    try:
        documents = list(corpus_public.cpt_documents(data, tree))
        secret = home_or_configured_secret(settings, Path(config.home))
        tagger = DictionaryTagger(tree)
        _step(steps, "ingest", lambda: ensure_dataset(store, DATASET, documents, tagger, secret))

        def mixture() -> dict[str, Any]:
            built = build_mixture(
                store, tree, [DATASET], MixtureConfig(config.mixture_tokens, seed=config.seed)
            )
            manifest = publish_mixture(store, DATASET, built, [DATASET], tree.version)
            balanced: dict[str, Any] = built.report()["balanced"]
            return balanced | {"version": manifest.version}

        _step(steps, "mixture", mixture)
        items = _step(
            steps,
            "synthesis",
            lambda: publish_gaps(
                store, tree, DATASET, synthesize_gaps(store, tree, DATASET, config.synthesis_nodes)
            ),
        )
        rng = random.Random(config.seed)  # noqa: S311 (a sample, not a secret)
        sample = [d["text"] for d in rng.sample(documents, min(20000, len(documents)))]
        base = _step(
            steps,
            "base_model",
            lambda: build_tiny(
                "qwen2-vl",
                scratch / "untrained",
                sample,
                vocab_size=config.vocab_size,
                hidden_size=config.hidden_size,
                layers=config.layers,
                seed=config.seed,
                max_pixels=config.max_pixels,
            ),
        )
        cpt_config = cpt.CptConfig(
            run_id=f"{run.run_id}-cpt",
            store_uri=store_uri,
            seed=config.seed,
            save_steps=max(50, config.cpt_steps // 4),
            mixture=DATASET,
            base_model=str(base),
            seq_len=config.cpt_seq_len,
            batch_size=config.batch_size,
            max_steps=config.cpt_steps,
            learning_rate=2e-3,
            warmup_ratio=0.05,
            logging_steps=25,
        )
        cpt_model = _published(_step(steps, "cpt", lambda: cpt.train(cpt_config, settings)))
        rows, images, counts = _sft_rows(
            store, data, items["uri"], config.max_pixels, config.synth_repeats
        )
        publish_chat(store, "sft-data/small", {"train": rows}, images, metadata=counts)
        steps["sft_data"] = counts
        sft_config = sft.SftConfig(
            run_id=f"{run.run_id}-sft",
            store_uri=store_uri,
            seed=config.seed,
            save_steps=200,
            data=["sft-data/small:train.jsonl"],
            base_model=f"{cpt_model.prefix}",
            max_length=config.sft_max_length,
            batch_size=config.batch_size,
            epochs=config.sft_epochs,
            learning_rate=1e-3,
            logging_steps=25,
        )
        sft_model = _published(_step(steps, "sft", lambda: sft.train(sft_config, settings)))
        folders = {"untrained": base}
        for name, manifest in (("cpt", cpt_model), ("sft", sft_model)):
            folders[name] = download(store, manifest, scratch / name)
        figures = _step(
            steps,
            "evaluate",
            lambda: _figures(folders, store, data, items["uri"], config.eval_reports),
        )
        figures["wall_s"] = round(time.perf_counter() - started, 1)
        card = json.loads((folders["sft"] / "medxiaohe.json").read_text())
        card = {
            "stage": STAGE,
            "run": run.prefix,
            "config": asdict(config),
            "figures": figures,
            "note": "small-model figures: they show the stages learn, not that the model is good",
            "provenance": {
                "cpt": {
                    "model": f"{cpt_model.prefix}/{cpt_model.version}",
                    "mixture": steps["mixture"],
                },
                "sft": {"model": f"{sft_model.prefix}/{sft_model.version}", "card": card},
                "synthesis": items["uri"],
                "tree": tree.version,
                "steps": steps,
            },
        }
        final = folders["sft"]
        (final / "medxiaohe.json").write_text(json.dumps(card, indent=2, sort_keys=True))
        return run.publish_model(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
