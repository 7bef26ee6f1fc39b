"""Entity-level exact-match evaluation of a tagger on CoNLL/IOB files (NCBI-disease, BC5CDR).

Sentences are rebuilt as their tokens joined by single spaces; the tagger's character spans
are mapped back onto tokens, and an entity counts only when its token span and type both match.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from medxiaohe.common.errors import InvalidInput

# What each Medical Entity Tree type is called in the benchmark corpora.
CORPUS_TYPE = {"disease": "Disease", "phenotype": "Disease", "chemical": "Chemical"}

Span = tuple[int, int, str]  # first token, token after the last, type
Predict = Callable[[str], Iterable[tuple[int, int, str]]]  # text -> (char start, end, type)


@dataclass(frozen=True)
class Sentence:
    tokens: list[str]
    tags: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def offsets(self) -> list[tuple[int, int]]:
        spans, position = [], 0
        for token in self.tokens:
            spans.append((position, position + len(token)))
            position += len(token) + 1
        return spans


def read_conll(path: Path) -> Iterator[Sentence]:
    """Sentences of a token<TAB>tag file with blank lines between sentences."""
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    yield Sentence(tokens, tags)
                tokens, tags = [], []
                continue
            parts = line.split("\t")
            if len(parts) < 2 or not (parts[-1] == "O" or parts[-1][:2] in ("B-", "I-")):
                raise InvalidInput(f"{path.name}:{number}: expected token<TAB>IOB tag")
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        yield Sentence(tokens, tags)


def gold_spans(tags: Sequence[str]) -> set[Span]:
    spans: set[Span] = set()
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        if start >= 0 and not (tag.startswith("I-") and tag[2:] == kind):
            spans.add((start, i, kind))
            start = -1
        if tag.startswith("B-") or (tag.startswith("I-") and start < 0):
            start, kind = i, tag[2:]
    return spans


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
