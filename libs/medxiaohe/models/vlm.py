"""Loading a Hugging Face vision-language folder (Qwen2-VL family) without torchvision.

``AutoProcessor`` on a saved Qwen2-VL folder silently returns only the tokenizer, and the stock
processor wants a video processor (torchvision). ``VlmProcessor`` is the Qwen2-VL processor
without video, over the PIL image processor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    AutoConfig,
    AutoTokenizer,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

from medxiaohe.common.errors import InvalidInput

ARCHITECTURES = {"qwen2_vl": Qwen2VLForConditionalGeneration}


class VlmProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor for text and images only."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


@dataclass
class Vlm:
    model: Any
    processor: VlmProcessor
    folder: Path

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer


def load_vlm(folder: Path, dtype: Any = None) -> Vlm:
    """Model, tokenizer, image processor and chat template of a folder, ready to generate."""
    if not (folder / "config.json").is_file():
        raise InvalidInput(f"{folder} is not a Hugging Face model folder")
    config = AutoConfig.from_pretrained(folder)
    kind = ARCHITECTURES.get(config.model_type)
    if kind is None:
        raise InvalidInput(
            f"unsupported architecture {config.model_type!r}; supported: {sorted(ARCHITECTURES)}"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.chat_template:
        raise InvalidInput(f"{folder} has no chat template")
    processor = VlmProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(folder),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    model = kind.from_pretrained(folder, dtype=dtype)
    model.eval()  # type: ignore[no-untyped-call]
    return Vlm(model, processor, folder)
