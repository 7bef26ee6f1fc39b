"""Passages with provenance, and chunking of long documents with exact character spans."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from medxiaohe.entities.context import Assertion

if TYPE_CHECKING:
    from medxiaohe.entities.tagger import DictionaryTagger

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])|\n\s*\n")


@dataclass
class Passage:
    passage_id: str
    document_id: str
    text: str
    start: int  # text == source document[start:end]
    end: int
    source: str = ""
    title: str = ""
    licence: str = ""
    entity_ids: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def indexed_text(self) -> str:
        """What the retrievers see: the title, when there is one, and the text."""
        return f"{self.title}\n{self.text}" if self.title else self.text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sentences(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def chunk(
    document_id: str,
    text: str,
    *,
    max_words: int = 180,
    overlap_sentences: int = 1,
    **provenance: Any,
) -> list[Passage]:
    """Passages of whole sentences, up to ``max_words`` each, consecutive passages sharing
    ``overlap_sentences``; each passage's text is exactly ``text[start:end]``."""
    sentences = _sentences(text)
    passages: list[Passage] = []
    i = 0
    while i < len(sentences):
        j, words = i, 0
        while j < len(sentences) and (j == i or words + _words(text, sentences[j]) <= max_words):
            words += _words(text, sentences[j])
            j += 1
        start, end = sentences[i][0], sentences[j - 1][1]
        digest = hashlib.sha256(f"{document_id}:{start}:{end}".encode()).hexdigest()[:12]
        passages.append(
            Passage(
                f"{document_id}#{digest}", document_id, text[start:end], start, end, **provenance
            )
        )
        if j >= len(sentences):
            break
        i = max(i + 1, j - overlap_sentences)
    return passages


def tag_passages(passages: Sequence[Passage], tagger: DictionaryTagger) -> None:
    """Fill each passage's entity ids with the MET nodes it mentions (negated ones excluded)."""
    for passage in passages:
        found = {m.node_id for m in tagger.tag(passage.text) if m.assertion != Assertion.NEGATED}
        passage.entity_ids = sorted(set(passage.entity_ids) | found)


def _words(text: str, span: tuple[int, int]) -> int:
    return len(text[span[0] : span[1]].split())
