"""Token-classification data for the NER stage: IOB files read into word/tag sentences, word
tags aligned to word pieces (the first piece of a word carries its tag, the rest are ignored),
and entity-level F1 on word tags, the same exact-match scoring as ``medxiaohe eval tagging``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.datasets.conll import Sentence, Span, gold_spans, read_conll
from medxiaohe.eval.tagging import score

IGNORE = -100  # the label PyTorch's cross-entropy skips


def label_list(types: Sequence[str]) -> list[str]:
    return ["O"] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


def read_sentences(paths: Iterable[Path], types: Sequence[str], limit: int = 0) -> list[Sentence]:
    """Sentences of every IOB file, tags of other types turned into O; ``limit`` > 0 keeps the
    first ``limit`` sentences of each file."""
    wanted = set(types)
    sentences: list[Sentence] = []
    for path in paths:
        if not path.is_file():
            raise InvalidInput(f"training data {path} does not exist")
        for n, sentence in enumerate(read_conll(path)):
            if limit and n >= limit:
                break
            tags = [t if t == "O" or t[2:] in wanted else "O" for t in sentence.tags]
            sentences.append(Sentence(sentence.tokens, tags))
    if not sentences:
        raise InvalidInput("no training sentences were read")
    return sentences


def encode(
    sentences: Sequence[Sentence], tokenizer: Any, labels: Sequence[str], max_length: int
) -> list[dict[str, list[int]]]:
    """Word-piece features with aligned labels, one dict per sentence."""
    index = {label: i for i, label in enumerate(labels)}
    batch = tokenizer(
        [s.tokens for s in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
    )
    features = []
    for i, sentence in enumerate(sentences):
        word_ids = batch.word_ids(i)
        aligned, previous = [], None
        for word in word_ids:
            if word is None or word == previous:
                aligned.append(IGNORE)
            else:
                aligned.append(index[sentence.tags[word]])
            previous = word
        features.append(
            {
                "input_ids": batch["input_ids"][i],
                "attention_mask": batch["attention_mask"][i],
                "labels": aligned,
            }
        )
    return features


def entity_scores(predicted: Any, gold: Any, labels: Sequence[str]) -> dict[str, object]:
    """Exact-match entity scores over word tags from label-id rows (sentences x pieces);
    positions whose gold label is IGNORE are not first pieces of words and are skipped."""

    def pairs() -> Iterator[tuple[set[Span], set[Span]]]:
        for pred_row, gold_row in zip(predicted, gold, strict=True):
            keep = [j for j, g in enumerate(gold_row) if g != IGNORE]
            yield (
                gold_spans([labels[gold_row[j]] for j in keep]),
                gold_spans([labels[pred_row[j]] for j in keep]),
            )

    return score(pairs())
