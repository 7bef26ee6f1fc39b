"""A tiny Qwen2-VL built from a config (random weights), for tests, the embedded default and
benchmarks: its tokenizer is a byte-level BPE trained offline on given text, with Qwen's
special tokens and a ChatML chat template that places images; its image processor is Qwen2-VL's
(native resolution, 14-pixel patches merged 2x2)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medxiaohe.common.errors import InvalidInput

ARCHES = ("qwen2-vl",)
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# ChatML; a content list may mix {"type": "text"} and {"type": "image"} parts. Assistant turns,
# their end token included, sit in {% generation %} blocks: SFT's assistant-only loss reads them.
CHAT_TEMPLATE = (
    "{% macro render(content) %}{% if content is string %}{{ content }}"
    "{% elif content %}{% for part in content %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{% endmacro %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ render(message['content']) }}<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ render(message['content']) }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_TEXT = [
    "Findings: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.",
    "Impression: No acute cardiopulmonary abnormality.",
    "Mild cardiomegaly with small bilateral pleural effusions; no focal consolidation.",
    "Right lower lobe opacity, consistent with pneumonia in the appropriate clinical setting.",
    "Degenerative changes of the thoracic spine. Surgical clips in the right upper quadrant.",
    "The patient has type 2 diabetes mellitus, hypertension and chronic kidney disease.",
    "Which finding supports the diagnosis? Answer with the evidence and the image region.",
]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> object:
    """A byte-level BPE (any text encodes) wrapped as a fast tokenizer, with the template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    roles = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}  # ChatML's
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe, additional_special_tokens=SPECIAL_TOKENS[1:], **roles
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny(
    arch: str,
    folder: Path,
    texts: Iterable[str] = (),
    *,
    vocab_size: int = 2000,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    max_pixels: int = 448 * 448,
) -> Path:
    """Write a tiny model folder (weights, config, tokenizer, chat template, image processor)."""
    import torch
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    from medxiaohe.models.vlm import VlmProcessor

    if arch not in ARCHES:
        raise InvalidInput(f"unknown architecture {arch!r}; one of {ARCHES}")
    if hidden_size % 16:
        raise InvalidInput("hidden_size must be a multiple of 16 (4 heads, rotary sections)")
    corpus = [t for t in texts if t.strip()] or DEFAULT_TEXT
    tokenizer = train_tokenizer(corpus, vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}  # type: ignore[attr-defined]
    half = hidden_size // 4 // 2  # rotary pairs per head; Qwen splits them 1/4, 3/8, 3/8
    sections = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),  # type: ignore[arg-type]
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {"type": "mrope", "mrope_section": sections},
            "tie_word_embeddings": True,
            "bos_token_id": ids["<|im_start|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": layers,
            "embed_dim": hidden_size // 2,
            "hidden_size": hidden_size,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    processor = VlmProcessor(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=max_pixels),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder
