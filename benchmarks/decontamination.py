"""`medxiaohe bench decontaminate`: the benchmark-overlap scan over an ingested dataset, ours
beside the anchor that decontamination scripts commonly use (every benchmark 13-gram as a
joined string in a set, every window of every document joined and looked up). Both take the
same items and texts, use the same word normalisation and exact-question check, and must
find the same items."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from medxiaohe.corpus.overlap import N, words
from medxiaohe.eval.harness.contamination import benchmark_index, index_entry, source_texts
from medxiaohe.eval.harness.suites import Item
from medxiaohe.storage import ArtifactStore

BATCH = 512


class JoinedGrams:
    """The anchor: n-grams as space-joined strings in a dict."""

    def __init__(self, items: Sequence[Item], n: int = N) -> None:
        self.n = n
        self.grams: dict[str, set[str]] = {}
        self.questions: dict[str, set[str]] = {}
        for item in items:
            ref, text, whole = index_entry(item)
            said = words(text)
            for i in range(len(said) - n + 1):
                self.grams.setdefault(" ".join(said[i : i + n]), set()).add(ref)
            if words(whole):
                self.questions.setdefault(" ".join(words(whole)), set()).add(ref)

    def find(self, texts: Sequence[Sequence[str]]) -> list[set[str]]:
        found: list[set[str]] = []
        for parts in texts:
            refs: set[str] = set()
            for part in parts:
                said = words(part)
                refs |= self.questions.get(" ".join(said), set())
                for i in range(len(said) - self.n + 1):
                    refs |= self.grams.get(" ".join(said[i : i + self.n]), set())
            found.append(refs)
        return found


def _scan(index: Any, docs: list[list[str]]) -> tuple[float, set[str]]:
    start = time.perf_counter()
    found: set[str] = set()
    for i in range(0, len(docs), BATCH):
        for refs in index.find(docs[i : i + BATCH]):
            found |= refs
    return time.perf_counter() - start, found


def run(store: ArtifactStore, items: Sequence[Item], dataset: str, repeats: int) -> dict[str, Any]:
    docs = list(source_texts(store, f"dataset:{dataset}"))
    words_total = sum(len(words(t)) for parts in docs for t in parts)
    out: dict[str, Any] = {"dataset": dataset, "docs": len(docs), "words": words_total}
    results = {}
    for name, build in (("ours", benchmark_index), ("anchor", JoinedGrams)):
        started = time.perf_counter()
        index = build(items)
        index.find([["warm up"]])
        built = time.perf_counter() - started
        timings, found = zip(*(_scan(index, docs) for _ in range(repeats)), strict=True)
        seconds = statistics.median(timings)
        results[name] = found[0]
        out[name] = {
            "index_s": round(built, 2),
            "scan_s": round(seconds, 3),
            "docs_per_s": round(len(docs) / seconds, 1),
            "words_per_s": round(words_total / seconds),
            "contaminated_items": len(found[0]),
        }
    out["same_items"] = results["ours"] == results["anchor"]
    out["ratio"] = round(out["ours"]["docs_per_s"] / out["anchor"]["docs_per_s"], 2)
    out["items"] = len(items)
    return out
