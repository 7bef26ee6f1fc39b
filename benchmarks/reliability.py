"""`make bench-reliability`: faults, fuzz, load and concurrency against real servers started here
on 127.0.0.1, as one JSON object. Every loop is bounded in count and time."""

from __future__ import annotations

import logging
import random
import tempfile
import time
import warnings
from itertools import islice
from pathlib import Path
from typing import Any

from benchmarks import concurrency, faults, fuzz, load
from benchmarks.stack import INDEX, Stack
from medxiaohe.entities.tree import EntityTree
from medxiaohe.evidence.passages import Passage

READERS = ("text", "jsonl", "fhir", "hl7", "dicom", "image")
SERVICES = ("ingestion", "evidence", "report", "rubric")


def clinical_texts(tree: EntityTree, count: int, seed: int = 0) -> list[str]:
    """Short notes naming the tree's entities among ordinary words, some negated."""
    rng = random.Random(seed)  # noqa: S311 (the same texts for a seed)
    names = [tree.columns["name"][i] for i in rng.sample(range(len(tree)), min(len(tree), 2000))]
    texts = []
    for _ in range(count):
        words = [rng.choice(faults.WORDS) for _ in range(rng.randint(20, 60))]
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(words) + 1)
            words[at:at] = [
                rng.choice(["no", "with", "history of", "suspected"]),
                *rng.choice(names).split(),
            ]
        texts.append(" ".join(words) + ".")
    return texts


def hints(queries: list[str], texts: list[str]) -> dict[str, list[Any]]:
    """Plausible values by field name, so that generated requests often get past the first
    check and reach the work behind it."""
    return {
        "index_name": ["fuzz"],  # writes rebuild their index: a small one, not the loaded one
        "evidence_index": [INDEX],
        "query": queries[:50],
        "text": texts[:50],
        "clinical_context": texts[:20],
        "template_id": ["chest-xray"],
        "language": ["en"],
        "max_steps": [1, 2, 3],
        "modality": ["CR", "DX", "CT"],
        "grader": ["deterministic"],
        "role": ["user", "assistant"],
        "response": ["Take paracetamol, drink fluids, and see a doctor if the fever lasts."],
        "criterion": ["Advises seeing a doctor if symptoms persist"],
        "points": [5, -3, 10],
    }


def fuzz_part(
    stack: Stack, count: int, hinted: dict[str, list[Any]], seed: int = 0
) -> dict[str, Any]:
    readers = {kind: fuzz.fuzz_reader(kind, count, seed) for kind in READERS}
    rpcs = {}
    for service in fuzz.services():
        name = service.name.removesuffix("Service").lower()
        if name not in stack.services:
            continue
        channel = stack.channel(name)
        for method in service.methods:
            started = time.perf_counter()
            rpc = fuzz.fuzz_rpc(channel, method, count, seed, hints=hinted)
            rpcs[f"{name}.{method.name}"] = {
                **rpc,
                "seconds": round(time.perf_counter() - started, 1),
            }
    broken, leftovers = faults.half_written(stack.store)
    crashes = sum(r["crashes"] for r in [*readers.values(), *rpcs.values()])
    return {
        "inputs_per_target": count,
        "readers": readers,
        "rpcs": rpcs,
        "crashes": crashes,
        "serving_after": {name: stack.serving(name) for name in stack.services},
        "half_written": broken,
        "unreferenced_objects": leftovers,
    }


def run(
    work: Path | None = None,
    tree: EntityTree | None = None,
    documents: int = 10_000,
    inputs: int = 10_000,
    rate: float = 200,
    seconds: float = 60,
    passages: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    from medxiaohe.entities.build import build_tree
    from medxiaohe.evidence.builtin import builtin_passages
    from medxiaohe.models.tiny import build_tiny

    started = time.perf_counter()
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # a warning per fuzzed DICOM file
    warnings.filterwarnings("ignore", module="pydicom")
    with tempfile.TemporaryDirectory(prefix="medxiaohe-reliability-") as tmp:
        root = work or Path(tmp)
        tree = tree or build_tree()
        indexed: list[Passage] = list(islice(builtin_passages(), passages))
        texts = clinical_texts(tree, 1000, seed)
        queries = [p.title for p in indexed if p.title] or texts
        out: dict[str, Any] = {}
        out["faults"] = faults.run(root / "faults", tree, documents, seed=seed)
        tiny = build_tiny("qwen2_vl", root / "tiny-model", seed=seed)
        with Stack(root / "services", tree, SERVICES, indexed, local_model_uri=tiny) as stack:
            out["load"] = load.run(stack, texts, queries, rate, seconds)
            big = " ".join(texts * 20)[:1_000_000]  # the longest note: work past 100 ms
            out["concurrency"] = concurrency.run(stack, big)
            out["fuzz"] = fuzz_part(stack, inputs, hints(queries, texts), seed)
    f, lo, co, fz = out["faults"], out["load"], out["concurrency"], out["fuzz"]
    zeros = {
        "lost": f["lost"] + co["index_writers"]["lost"] + co["sigterm"]["lost"],
        "duplicated": f["duplicated"],
        "half_written": f["half_written"] + fz["half_written"],
        "crashes": fz["crashes"],
        "load_errors": lo["errors"],
    }
    return {
        **zeros,
        "all_zero": not any(zeros.values())
        and f["finished"]
        and f["equals_single_process"]
        and co["deadline"]["code"] == "DEADLINE_EXCEEDED"
        and co["deadline"]["work_cancelled"]
        and all(fz["serving_after"].values()),
        **out,
        "seconds": round(time.perf_counter() - started, 1),
    }
