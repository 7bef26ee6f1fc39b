"""The neural tagger: a Hugging Face token-classification folder (the ``ner`` training stage's
output) run over text of any length in overlapping windows, decoded word by word to
character spans. A word takes the label of its first word piece, as in training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medxiaohe.common.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class NerSpan:
    start: int
    end: int
    label: str  # the corpus type: "Disease", "Chemical"
    confidence: float


class NerTagger:
    """Load once (a second); ``tag_many`` batches texts, ``tag`` is one text."""

    def __init__(
        self, folder: Path, *, max_length: int = 256, stride: int = 64, batch_size: int = 32
    ) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        if not (folder / "config.json").is_file():
            raise InvalidInput(f"{folder} is not a Hugging Face model folder")
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForTokenClassification.from_pretrained(folder).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.types = sorted({label[2:] for label in self.labels if label != "O"})
        self.max_length, self.stride, self.batch_size = max_length, stride, batch_size

    def tag(self, text: str) -> list[NerSpan]:
        return self.tag_many([text])[0]

    def tag_many(self, texts: Sequence[str]) -> list[list[NerSpan]]:
        spans: list[list[NerSpan]] = []
        for at in range(0, len(texts), self.batch_size):
            spans.extend(self._batch(texts[at : at + self.batch_size]))
        return spans

    def _batch(self, texts: Sequence[str]) -> list[list[NerSpan]]:
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        with self._torch.inference_mode():
            logits = self.model(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
            ).logits
        probs = logits.softmax(-1).numpy()
        # per text: word index -> (char start, char end, summed probabilities, windows)
        words: list[dict[int, list[Any]]] = [{} for _ in texts]
        offsets = encoded["offset_mapping"].numpy()
        for window, text_index in enumerate(encoded["overflow_to_sample_mapping"].tolist()):
            seen: dict[int, list[Any]] = {}
            for position, word in enumerate(encoded.word_ids(window)):
                if word is None:
                    continue
                start, end = offsets[window, position]
                entry = seen.get(word)
                if entry is None:  # the word's first piece in this window carries its label
                    seen[word] = [int(start), int(end), probs[window, position]]
                else:
                    entry[1] = int(end)
            for word, (start, end, p) in seen.items():
                total = words[text_index].get(word)
                if total is None:
                    words[text_index][word] = [start, end, p.copy(), 1]
                else:
                    total[2] += p
                    total[3] += 1
        return [self._decode(found) for found in words]

    def _decode(self, words: dict[int, list[Any]]) -> list[NerSpan]:
        """BIO over words: B starts a span, I continues one of its type (or starts one)."""
        spans: list[NerSpan] = []
        current: list[Any] | None = None  # start, end, type, confidences
        for word in sorted(words):
            start, end, summed, count = words[word]
            p = summed / count
            best = int(np.argmax(p))
            label = self.labels[best]
            if label == "O" or label.startswith("B-") or (current and current[2] != label[2:]):
                if current:
                    spans.append(NerSpan(current[0], current[1], current[2], min(current[3])))
                current = None
            if label != "O":
                if current is None:
                    current = [start, end, label[2:], [float(p[best])]]
                else:
                    current[1] = end
                    current[3].append(float(p[best]))
        if current:
            spans.append(NerSpan(current[0], current[1], current[2], min(current[3])))
        return spans
