"""Entity-level exact-match evaluation of a tagger on CoNLL/IOB sentences (NCBI-disease, BC5CDR;
``datasets.conll`` reads them).

Sentences are rebuilt as their tokens joined by single spaces; the tagger's character spans
are mapped back onto tokens, and an entity counts only when its token span and type both match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

from medxiaohe.datasets.conll import Sentence, Span, gold_spans

# What each Medical Entity Tree type is called in the benchmark corpora.
CORPUS_TYPE = {"disease": "Disease", "phenotype": "Disease", "chemical": "Chemical"}

Predict = Callable[[str], Iterable[tuple[int, int, str]]]  # text -> (char start, end, type)


def to_token_spans(sentence: Sentence, predicted: Iterable[tuple[int, int, str]]) -> set[Span]:
    offsets = sentence.offsets()
    spans = set()
    for start, end, kind in predicted:
        covered = [i for i, (s, e) in enumerate(offsets) if s < end and start < e]
        if covered:
            spans.add((covered[0], covered[-1] + 1, kind))
    return spans


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def score(pairs: Iterable[tuple[set[Span], set[Span]]]) -> dict[str, object]:
    """Precision, recall and F1 overall and per type from (gold, predicted) span sets."""
    counts: dict[str, Counter[str]] = {}
    for gold, pred in pairs:
        for kind in {s[2] for s in gold | pred}:
            c = counts.setdefault(kind, Counter())
            g = {s for s in gold if s[2] == kind}
            p = {s for s in pred if s[2] == kind}
            c["tp"] += len(g & p)
            c["fp"] += len(p - g)
            c["fn"] += len(g - p)
    total = sum(counts.values(), Counter())
    result: dict[str, object] = {**_prf(total["tp"], total["fp"], total["fn"])}
    result["per_type"] = {k: _prf(c["tp"], c["fp"], c["fn"]) for k, c in sorted(counts.items())}
    result["support"] = total["tp"] + total["fn"]
    return result


def evaluate(
    sentences: Iterable[Sentence], predict: Predict, types: Sequence[str] | None = None
) -> dict[str, object]:
    """Entity-level exact-match scores of ``predict`` on the sentences."""
    wanted = set(types) if types else None

    def pairs() -> Iterator[tuple[set[Span], set[Span]]]:
        for sentence in sentences:
            gold = gold_spans(sentence.tags)
            pred = to_token_spans(sentence, predict(sentence.text))
            yield (
                {s for s in gold if wanted is None or s[2] in wanted},
                {s for s in pred if wanted is None or s[2] in wanted},
            )

    return score(pairs())
