"""What the CPT stage trains on, streamed from a mixture: texts tokenized with an end-of-text
token after each, concatenated and cut into ``seq_len`` pieces; and, for a vision-language
model, image–text records (an image from the shards with its caption or report) as examples of
their own, the image placed by the model's chat template, padded to ``seq_len``."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset

from medxiaohe.common.errors import InvalidInput
from medxiaohe.storage import ArtifactStore
from medxiaohe.training.mixture_data import MixtureDataset

IGNORE = -100
MAX_IMAGES = 4  # per record


class CptStream(IterableDataset[dict[str, Any]]):
    """An endless stream (``max_steps`` ends training; a short mixture is read again).
    ``counts`` says how many records went which way.

    Examples come in blocks of ``block`` (the batch size times the processes): image–text
    examples in blocks of their own. Every process reads the whole stream and takes its share
    of each block, so in any step all processes run the vision tower or none does, as ZeRO-3
    needs (its parameters are gathered by collectives every process must join)."""

    def __init__(
        self,
        store: ArtifactStore,
        records: MixtureDataset,
        processor: Any,
        seq_len: int,
        images: bool,
        block: int = 1,
    ) -> None:
        self.store = store
        self.records = records
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.seq_len = seq_len
        self.images = images and hasattr(processor, "image_processor")
        self.block = block
        self.counts = {"text": 0, "image_text": 0, "image_text_too_long": 0}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        text: list[dict[str, Any]] = []
        pictured: list[dict[str, Any]] = []
        for example in self._examples():
            queue = pictured if "pixel_values" in example else text
            queue.append(example)
            if len(queue) == self.block:
                yield from queue
                queue.clear()

    def _examples(self) -> Iterator[dict[str, Any]]:
        end = self.tokenizer.eos_token_id
        while True:
            buffer: list[int] = []
            empty = True
            for record in self.records:
                empty = False
                if self.images and record.get("image_uris"):
                    example = self._image_text(record)
                    if example is not None:
                        yield example
                        continue
                self.counts["text"] += 1
                buffer += self.tokenizer(record["text"], add_special_tokens=False)["input_ids"]
                buffer.append(end)
                while len(buffer) >= self.seq_len:
                    ids = torch.tensor(buffer[: self.seq_len])
                    buffer = buffer[self.seq_len :]
                    yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
            if empty:
                raise InvalidInput(f"mixture {self.records.manifest.prefix} holds no records")

    def _image_text(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The record's images and text as one example; None (trained as text) when it does
        not fit in ``seq_len``."""
        images = [self._image(uri) for uri in record["image_uris"][:MAX_IMAGES]]
        messages = [
            {"role": "user", "content": [{"type": "image"} for _ in images]},
            {"role": "assistant", "content": record["text"]},
        ]
        text = self.processor.apply_chat_template(messages, tokenize=False)
        encoded = self.processor(text=[text], images=images, return_tensors="pt")
        ids = encoded["input_ids"][0]
        if len(ids) > self.seq_len:
            self.counts["image_text_too_long"] += 1
            return None
        self.counts["image_text"] += 1
        labels = ids.clone()
        labels[ids == self.processor.image_token_id] = IGNORE  # placeholders, not text
        pad = self.seq_len - len(ids)
        example = {"labels": torch.nn.functional.pad(labels, (0, pad), value=IGNORE)}
        for key, value in encoded.items():
            if value.shape == encoded["input_ids"].shape:  # per token: mask, token types
                fill = self.tokenizer.pad_token_id if key == "input_ids" else 0
                example[key] = torch.nn.functional.pad(value[0], (0, pad), value=fill)
            else:  # the images: patches and grids
                example[key] = value
        return example

    def _image(self, uri: str) -> Any:
        from PIL import Image

        from medxiaohe.corpus.readers import clean_image

        data, _ = clean_image(self.store.get_bytes(uri))  # PNG or JPEG, pixels bounded
        return Image.open(io.BytesIO(data)).convert("RGB")


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack the per-token tensors (zeros where a text sequence lacks one an image example
    has, such as token types); concatenate the images' patches and grids, as Qwen2-VL-style
    models take them."""
    tokens = {k for i in items for k, v in i.items() if v.dim() == 1}
    batch = {
        k: torch.stack([i.get(k, torch.zeros_like(i["input_ids"])) for i in items])
        for k in sorted(tokens)
    }
    for key in sorted({k for i in items for k, v in i.items() if v.dim() > 1}):
        batch[key] = torch.cat([i[key] for i in items if key in i])
    return batch
