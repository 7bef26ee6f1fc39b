"""`make bench-mixture`: the shared corpus (NCBI-disease and BC5CDR abstracts, the SciFact
corpus, IU X-ray reports) ingested through the platform's own pipeline once, the balanced
mixture beside uniform sampling at the same budget and seed (and the other ways of weighing a
record), the sampler's overhead on a CPT step of the tiny model, and the synthesis figures."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import NotFound
from medxiaohe.corpus.ingest import ensure_dataset
from medxiaohe.datasets import iu_xray
from medxiaohe.datasets.beir import scifact_documents
from medxiaohe.datasets.conll import iob_documents
from medxiaohe.datasets.pubtator import pubtator_documents
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree
from medxiaohe.mixture.artifact import iter_mixture, publish_mixture
from medxiaohe.mixture.sampler import MixtureConfig, build_mixture
from medxiaohe.mixture.weights import COMBINE, WeightConfig
from medxiaohe.storage import ArtifactStore
from medxiaohe.synthesis.gaps import publish_gaps, synthesize_gaps

DATASET = "bench-mixture"


def _iu_xray(path: Path) -> Iterator[dict[str, str]]:
    for row in iu_xray.rows(path):
        yield {"id": f"iu-{row['uid']}", "source": "iu-xray", "text": row["report"]}


def shared_documents(data: Path) -> Iterator[dict[str, str]]:
    """Every document of the four sets (NotFound, naming what is missing, when absent)."""
    sources = [
        (data / "ncbi_disease/original-data_train_NCBItrainset_corpus.txt", pubtator_documents),
        (data / "ncbi_disease/original-data_devel_NCBIdevelopset_corpus.txt", pubtator_documents),
        (data / "bc5cdr/BC5CDR-IOB_train.tsv", iob_documents),
        (data / "bc5cdr/BC5CDR-IOB_devel.tsv", iob_documents),
        (data / "scifact/corpus.jsonl.gz", scifact_documents),
        (data / "iu_xray/reports_train_val.csv", _iu_xray),
    ]
    missing = [str(p) for p, _ in sources if not p.is_file()]
    if missing:
        raise NotFound(f"the shared corpus is incomplete: {', '.join(missing)}")
    for path, reader in sources:
        yield from reader(path)


def _step_times(
    batches: Iterator[list[str]], model: Any, tokenizer: Any, steps: int
) -> list[float]:
    """Seconds per CPT step: fetch a batch, tokenize it, forward, backward, optimizer step."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 2):  # two warm-up steps
        began = time.perf_counter()
        texts = next(batches)
        batch = tokenizer(
            texts, return_tensors="pt", padding="max_length", truncation=True, max_length=128
        )
        loss = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["input_ids"],
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - began)
    return times[2:]


def sampler_overhead(
    store: ArtifactStore, manifest: Any, steps: int = 30, batch: int = 8
) -> dict[str, float]:
    """A CPT step on the tiny model fed by the mixture's reader against the same step fed by a
    plain shuffled in-memory list of the same records; the overhead is the ratio of the
    medians, minus one."""
    import random

    import torch

    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.models.vlm import load_vlm

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="medxiaohe-tiny-") as tmp:
        vlm = load_vlm(build_tiny("qwen2_vl", Path(tmp) / "model"))
    model, tokenizer = vlm.model, vlm.tokenizer
    need = (steps + 2) * batch
    texts = [
        r["text"] for _, r in zip(range(need), iter_mixture(store, manifest, seed=1), strict=False)
    ]
    random.Random(1).shuffle(texts)  # noqa: S311

    def plain() -> Iterator[list[str]]:
        for start in range(0, len(texts), batch):
            yield texts[start : start + batch]

    def mixed() -> Iterator[list[str]]:
        reader = iter_mixture(store, manifest, seed=1)
        while True:
            yield [next(reader)["text"] for _ in range(batch)]

    timings = {}
    for name, batches in (("plain", plain), ("mixture", mixed), ("plain_again", plain)):
        timings[name] = statistics.median(_step_times(batches(), model, tokenizer, steps))
    base = min(timings["plain"], timings["plain_again"])
    return {
        "sampler_overhead": round(timings["mixture"] / base - 1, 4),
        "step_s_plain": round(base, 4),
        "step_s_mixture": round(timings["mixture"], 4),
    }


def run(
    store: ArtifactStore, tree: EntityTree, secret: str, data: Path, budget_share: float = 0.25
) -> dict[str, Any]:
    tagger = DictionaryTagger(tree)
    corpus = ensure_dataset(store, DATASET, shared_documents(data), tagger, secret)
    total = build_mixture(
        store, tree, [DATASET], MixtureConfig(10**12, max_repeats=1)
    ).uniform.tokens
    budget = int(total * budget_share)
    config = MixtureConfig(budget, seed=0)  # the defaults: what `mixture build` uses
    mixture = build_mixture(store, tree, [DATASET], config)
    manifest = publish_mixture(store, "bench", mixture, [DATASET], tree.version)
    report = mixture.report()
    alternatives = {}
    for combine in COMBINE:
        weights = WeightConfig(combine=combine)
        other = build_mixture(
            store, tree, [DATASET], MixtureConfig(budget, weights, seed=0)
        ).report()
        alternatives[combine] = other["ratios"]
    keys = ("long_tail_share", "nodes_reached_5", "head_coverage", "tokens")
    items = publish_gaps(store, tree, "bench", synthesize_gaps(store, tree, DATASET, 300))
    return {
        "balanced": {k: report["balanced"][k] for k in keys},
        "uniform": {k: report["uniform"][k] for k in keys},
        "ratios": report["ratios"],
        **sampler_overhead(store, manifest),
        "synthesis": {
            k: items[k] for k in ("accepted", "rejected_by_rule", "gap_nodes_with_items")
        },
        "synthesis_detail": items,
        "combine_alternatives": alternatives,
        "corpus": corpus | {"tokens": total, "budget": budget},
        "mixture": f"{manifest.prefix}/{manifest.version}",
    }
