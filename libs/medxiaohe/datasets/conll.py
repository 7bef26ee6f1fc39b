"""CoNLL/IOB files (NCBI-disease, BC5CDR): token<TAB>tag lines, blank lines between sentences.
Sentences are rebuilt as their tokens joined by single spaces; entities are token spans."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from medxiaohe.common.errors import InvalidInput

Span = tuple[int, int, str]  # first token, token after the last, type


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
    """The entities an IOB tag sequence marks (an I- without its B- starts one)."""
    spans: set[Span] = set()
    start, kind = -1, ""
    for i, tag in enumerate([*tags, "O"]):
        if start >= 0 and not (tag.startswith("I-") and tag[2:] == kind):
            spans.add((start, i, kind))
            start = -1
        if tag.startswith("B-") or (tag.startswith("I-") and start < 0):
            start, kind = i, tag[2:]
    return spans


def iob_documents(path: Path, per_document: int = 10) -> Iterator[dict[str, str]]:
    """BC5CDR's IOB file has sentences without document breaks: ten make a document."""
    sentences: list[str] = []
    words: list[str] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.strip():
            words.append(line.split("\t")[0])
            continue
        if words:
            sentences.append(" ".join(words))
            words = []
    for start in range(0, len(sentences), per_document):
        text = " ".join(sentences[start : start + per_document])
        yield {"id": f"bc5cdr-{path.stem}-{start}", "source": "bc5cdr", "text": text}
