"""A chat prompt's input tensors as the model's processor makes them, faster for text alone.

A multimodal processor spends most of a text-only request's preparation on work that
concerns images (merging its keyword settings, marking each token's modality): for text
alone it gives the tokenizer's ids and mask, plus modality type ids that are all zero. When
a probe shows exactly that at load, text prompts go through the tokenizer alone and get the
zeros added; a prompt whose ids hold an added token the chat template's probe did not (an
image placeholder typed as text, a tool turn's markers) still goes through the processor, so
the tensors are always the processor's. A prompt the processor refuses (placeholders that no
image fills) is InvalidInput."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from medxiaohe.common.errors import InvalidInput

log = logging.getLogger(__name__)
PROBE = [{"role": "user", "content": "probe"}]


class PromptEncoder:
    def __init__(self, processor: Any, tokenizer: Any) -> None:
        self.processor = processor
        self.tokenizer = tokenizer
        self.added = frozenset(int(i) for i in tokenizer.added_tokens_decoder)
        self.zero_keys: tuple[str, ...] = ()
        self.template_tokens: frozenset[int] | None = None  # None: the processor for all
        try:
            self._probe()
        except Exception as exc:  # a speed-up only: whatever the probe meets, do without it
            log.warning(
                "text prompts go through the processor", extra={"reason": type(exc).__name__}
            )

    @property
    def fast(self) -> bool:
        """Whether text-only prompts skip the processor."""
        return self.template_tokens is not None

    def __call__(self, prompt: str, images: Sequence[Any] = ()) -> dict[str, Any]:
        if not images and self.fast:
            encoded = self._text(prompt)
            if encoded is not None:
                return encoded
        pictures = {"images": list(images)} if images else {}
        try:
            return dict(self.processor(text=[prompt], return_tensors="pt", **pictures))
        except ValueError:  # its message may quote the prompt
            raise InvalidInput(
                "the model's processor refused the prompt: does its text hold the model's own "
                "image placeholders?"
            ) from None

    def _text(self, prompt: str) -> dict[str, Any] | None:
        import torch

        encoded = dict(self.tokenizer([prompt], return_tensors="pt"))
        ids = encoded["input_ids"]
        if not self.added.intersection(ids[0].tolist()) <= (self.template_tokens or set()):
            return None
        for key in self.zero_keys:
            encoded[key] = torch.zeros_like(ids)
        return encoded

    def _probe(self) -> None:
        """The fast path where, on a probe prompt, the processor gives the tokenizer's tensors
        and nothing else but all-zero tensors of the ids' shape."""
        import torch

        if self.processor is self.tokenizer:  # a text model: its processor is the tokenizer
            return
        template = self.processor.apply_chat_template
        prompt = template(PROBE, add_generation_prompt=True, tokenize=False)
        full = dict(self.processor(text=[prompt], return_tensors="pt"))
        plain = dict(self.tokenizer([prompt], return_tensors="pt"))
        ids = full.get("input_ids")
        extra = set(full) - set(plain)
        if (
            ids is None
            or set(plain) - set(full)
            or any(not torch.equal(full[k], plain[k]) for k in plain)
            or any(full[k].shape != ids.shape or bool(full[k].any()) for k in extra)
        ):
            return
        self.zero_keys = tuple(sorted(extra))
        self.template_tokens = self.added.intersection(ids[0].tolist())
