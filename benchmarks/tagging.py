"""`medxiaohe bench tagging`: our tagger against spaCy's PhraseMatcher and medspaCy's
TargetMatcher on the same terms and texts, and ConText agreement with medspaCy."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from benchmarks.anchors import run_anchor
from benchmarks.texts import bench_texts
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _terms(tree: EntityTree, texts: list[str], count: int) -> list[str]:
    """The forms that occur in the texts, then an even sample of the rest, ``count`` in all."""
    full = DictionaryTagger(tree)
    norm = {" ".join(m.text.lower().split()) for t in texts for m in full.tag(t, assertions=False)}
    hits = sorted(f for f in norm if f in tree.forms)
    rest = sorted(set(tree.forms) - set(hits))
    step = max(1, len(rest) // max(1, count - len(hits)))
    return (hits + rest[::step])[:count]


def run(tree: EntityTree, docs: int = 2000, terms: int = 20000, repeats: int = 3) -> dict[str, Any]:
    texts, origin = bench_texts(docs)
    vocabulary = _terms(tree, texts, terms)
    subset = EntityTree(tree.columns, {t: tree.forms[t] for t in vocabulary}, tree.version)
    ours = DictionaryTagger(subset)
    total = sum(len(t.encode()) for t in texts)
    ours_s = _median_seconds(lambda: [ours.tag(t, assertions=False) for t in texts], repeats)
    with_context_s = _median_seconds(lambda: [ours.tag(t) for t in texts], repeats)

    full = DictionaryTagger(tree)
    sentences = texts[len(texts) // 2 :][:500] or texts[:500]
    tagged = [(t, full.tag(t)) for t in sentences]
    context_items = [{"text": t, "spans": [[m.start, m.end] for m in ms]} for t, ms in tagged]
    anchor = run_anchor(
        "medspacy",
        "tagging_medspacy.py",
        {"terms": vocabulary, "texts": texts, "repeats": repeats, "context": context_items},
    )
    agree: Counter[str] = Counter()
    for (_, mentions), theirs in zip(tagged, anchor["context"], strict=True):
        for m in mentions:
            other = theirs.get(f"{m.start}:{m.end}")
            if other is not None:
                agree[
                    "same" if other == m.assertion.value else f"{m.assertion.value}->{other}"
                ] += 1
    compared = sum(agree.values())

    def rate(seconds: float) -> dict[str, float]:
        return {
            "mb_per_s": round(total / seconds / 1e6, 3),
            "docs_per_s": round(len(texts) / seconds, 1),
            "seconds": round(seconds, 3),
        }

    return {
        "ours": rate(ours_s),
        "ours_with_context": rate(with_context_s),
        "spacy_phrasematcher": anchor["spacy_phrasematcher"],
        "medspacy": anchor["medspacy"],
        "ratio_vs_medspacy": round(anchor["medspacy"]["seconds"] / ours_s, 1),
        "ratio_vs_spacy": round(anchor["spacy_phrasematcher"]["seconds"] / ours_s, 1),
        "terms": len(vocabulary),
        "docs": len(texts),
        "mb": round(total / 1e6, 3),
        "texts": origin,
        "context_agreement_vs_medspacy": {
            "mentions": compared,
            "agreement": round(agree["same"] / compared, 4) if compared else None,
            "disagreements": dict(
                Counter({k: v for k, v in agree.items() if k != "same"}).most_common(6)
            ),
        },
    }
