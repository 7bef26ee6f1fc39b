"""Tiny models built from a config (random weights), one per family a hospital may bring, for
tests, the embedded default and benchmarks: ``build_tiny(family, folder)`` with the Hugging
Face ``model_type`` as the family. Each gets a byte-level BPE tokenizer trained offline on given
text with the family's special tokens, a chat template in the family's turn format that places
images where its processor expects them (assistant turns in ``{% generation %}`` blocks, which
SFT's assistant-only loss reads), and its family's image processor at a small image size."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.vlm import without_video

DEFAULT_TEXT = [
    "Findings: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.",
    "Impression: No acute cardiopulmonary abnormality.",
    "Mild cardiomegaly with small bilateral pleural effusions; no focal consolidation.",
    "Right lower lobe opacity, consistent with pneumonia in the appropriate clinical setting.",
    "Degenerative changes of the thoracic spine. Surgical clips in the right upper quadrant.",
    "The patient has type 2 diabetes mellitus, hypertension and chronic kidney disease.",
    "Which finding supports the diagnosis? Answer with the evidence and the image region.",
]
IMAGE_SIDE = 56  # pixels of the fixed-size families' images: 4x4 patches of 14
RECIPE = 2  # bumped when a folder built by an earlier recipe no longer loads
MARK = "tiny.json"  # {"family", "recipe", "seed"}: written last, so a folder with it is whole


@dataclass(frozen=True)
class Turns:
    """A family's chat format: turn start and end, the image placeholder its processor
    expands, the assistant's role name, and what opens the conversation."""

    start: str
    end: str
    image: str
    assistant: str = "assistant"
    opening: str = ""

    def template(self) -> str:
        role = f"{{% if message['role'] == 'assistant' %}}{self.assistant}{{% else %}}"
        role += "{{ message['role'] }}{% endif %}"
        return (
            "{% macro render(content) %}{% if content is string %}{{ content }}"
            "{% elif content %}{% for part in content %}"
            f"{{% if part['type'] == 'image' %}}{self.image}"
            "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
            "{% endfor %}{% endif %}{% endmacro %}"
            f"{self.opening}{{% for message in messages %}}{self.start}{role}{{{{ '\\n' }}}}"
            "{% if message['role'] == 'assistant' %}"
            f"{{% generation %}}{{{{ render(message['content']) }}}}{self.end}{{% endgeneration %}}"
            "{{ '\\n' }}"
            f"{{% else %}}{{{{ render(message['content']) }}}}{self.end}\n{{% endif %}}"
            "{% endfor %}"
            f"{{% if add_generation_prompt %}}{self.start}{self.assistant}\n{{% endif %}}"
        )


@dataclass(frozen=True)
class Family:
    tokens: list[str]  # special tokens; the first is padding
    turns: Turns
    build: Callable[[Any, dict[str, int], int, int, int], tuple[Any, Any]]  # model, processor
    named: dict[str, str] = field(default_factory=dict)  # tokenizer attributes (boi_token, ...)


def train_tokenizer(texts: Iterable[str], vocab_size: int, family: Family) -> Any:
    """A byte-level BPE (any text encodes) as a fast tokenizer with the family's tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=family.tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        additional_special_tokens=family.tokens[1:],
        eos_token=family.turns.end,
        pad_token=family.tokens[0],
        extra_special_tokens=family.named or None,
    )
    tokenizer.chat_template = family.turns.template()
    return tokenizer


def _text_config(vocab: int, ids: dict[str, int], hidden: int, layers: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": hidden // 4,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "pad_token_id": ids["pad"],
        "eos_token_id": ids["eos"],
        "bos_token_id": ids["eos"],
    }


def _vision_config(hidden: int, layers: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIDE,
        "patch_size": 14,
    }


QWEN_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHATML = Turns("<|im_start|>", "<|im_end|>", "<|vision_start|><|image_pad|><|vision_end|>")


def _qwen_vl(version: str) -> Callable[[Any, dict[str, int], int, int, int], tuple[Any, Any]]:
    def build(tokenizer: Any, ids: dict[str, int], hidden: int, layers: int, pixels: int) -> Any:
        import transformers as tf

        if hidden % 16:
            raise InvalidInput("hidden_size must be a multiple of 16 (4 heads, rotary sections)")
        half = hidden // 4 // 2  # rotary pairs per head; Qwen splits them 1/4, 3/8, 3/8
        rest = half - half // 4
        text = _text_config(len(tokenizer), ids, hidden, layers)
        text["rope_scaling"] = {
            "type": "mrope",
            "mrope_section": [half // 4, rest // 2, rest - rest // 2],
        }
        vision: dict[str, Any] = {
            "depth": layers,
            "hidden_size": hidden,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        }
        if version == "2":
            vision |= {"embed_dim": hidden // 2, "mlp_ratio": 2}
            kinds: tuple[Any, Any, Any] = (
                tf.Qwen2VLConfig,
                tf.Qwen2VLForConditionalGeneration,
                tf.Qwen2VLProcessor,
            )
        else:
            vision |= {
                "hidden_size": hidden // 2,
                "intermediate_size": hidden,
                "out_hidden_size": hidden,
                "window_size": 112,
                "fullatt_block_indexes": [layers - 1],
            }
            kinds = (
                tf.Qwen2_5_VLConfig,
                tf.Qwen2_5_VLForConditionalGeneration,
                tf.Qwen2_5_VLProcessor,
            )
        config_kind, model_kind, processor_kind = kinds
        config = config_kind(
            text_config=text,
            vision_config=vision,
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        image = tf.Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=pixels)
        processor = without_video(processor_kind)(
            image_processor=image, tokenizer=tokenizer, chat_template=tokenizer.chat_template
        )
        return model_kind(config), processor

    return build


def _gemma3(tokenizer: Any, ids: dict[str, int], hidden: int, layers: int, pixels: int) -> Any:
    import transformers as tf

    text = _text_config(len(tokenizer), ids, hidden, layers) | {"sliding_window": 64}
    config = tf.Gemma3Config(
        text_config=text,
        vision_config=_vision_config(hidden, layers),
        mm_tokens_per_image=4,  # the 4x4 patches pooled to 2x2
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    image = tf.Gemma3ImageProcessorPil(size={"height": IMAGE_SIDE, "width": IMAGE_SIDE})
    processor = tf.Gemma3Processor(
        image_processor=image,
        tokenizer=tokenizer,
        image_seq_length=4,
        chat_template=tokenizer.chat_template,
    )
    return tf.Gemma3ForConditionalGeneration(config), processor


def _idefics3(tokenizer: Any, ids: dict[str, int], hidden: int, layers: int, pixels: int) -> Any:
    import transformers as tf

    text = _text_config(len(tokenizer), ids, hidden, layers) | {"model_type": "llama"}
    config = tf.Idefics3Config(
        text_config=text,
        vision_config=_vision_config(hidden, layers),
        scale_factor=2,  # 4x4 patches shuffled into 2x2 tokens
        image_token_id=ids["<image>"],
    )
    side = {"longest_edge": IMAGE_SIDE}
    image = tf.Idefics3ImageProcessorPil(size=side, max_image_size=side, do_image_splitting=False)
    processor = tf.Idefics3Processor(
        image_processor=image,
        tokenizer=tokenizer,
        image_seq_len=4,
        chat_template=tokenizer.chat_template,
    )
    return tf.Idefics3ForConditionalGeneration(config), processor


def _llava_onevision(
    tokenizer: Any, ids: dict[str, int], hidden: int, layers: int, pixels: int
) -> Any:
    import transformers as tf

    text = _text_config(len(tokenizer), ids, hidden, layers) | {"model_type": "qwen2"}
    vision = _vision_config(hidden, layers) | {"model_type": "siglip_vision_model"}
    grid = [[IMAGE_SIDE, IMAGE_SIDE]]
    config = tf.LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=grid,
    )
    image = tf.LlavaOnevisionImageProcessorPil(
        size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}, image_grid_pinpoints=grid
    )
    processor = without_video(tf.LlavaOnevisionProcessor)(
        image_processor=image,
        tokenizer=tokenizer,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        chat_template=tokenizer.chat_template,
    )
    return tf.LlavaOnevisionForConditionalGeneration(config), processor


def _qwen2(tokenizer: Any, ids: dict[str, int], hidden: int, layers: int, pixels: int) -> Any:
    import transformers as tf

    config = tf.Qwen2Config(**_text_config(len(tokenizer), ids, hidden, layers))
    return tf.Qwen2ForCausalLM(config), None


FAMILIES: dict[str, Family] = {
    "qwen2_vl": Family(QWEN_TOKENS, CHATML, _qwen_vl("2")),
    "qwen2_5_vl": Family(QWEN_TOKENS, CHATML, _qwen_vl("2.5")),
    "gemma3": Family(
        [
            "<pad>",
            "<bos>",
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ],
        Turns("<start_of_turn>", "<end_of_turn>", "<start_of_image>", "model", "<bos>"),
        _gemma3,
        {
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    ),
    "idefics3": Family(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<end_of_utterance>",
            "<fake_token_around_image>",
            "<image>",
            "<global-img>",
        ],
        Turns("<|im_start|>", "<end_of_utterance>", "<image>"),
        _idefics3,
    ),
    "llava_onevision": Family(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        Turns("<|im_start|>", "<|im_end|>", "<image>"),
        _llava_onevision,
        {"image_token": "<image>", "video_token": "<video>"},
    ),
    "qwen2": Family(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML, _qwen2),
}


def build_tiny(
    family: str,
    folder: Path,
    texts: Iterable[str] = (),
    *,
    vocab_size: int = 2000,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    max_pixels: int = 448 * 448,
) -> Path:
    """Write a tiny model folder (weights, config, tokenizer, chat template, processor)."""
    import torch

    if family not in FAMILIES:
        raise InvalidInput(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    corpus = [t for t in texts if t.strip()] or DEFAULT_TEXT
    tokenizer = train_tokenizer(corpus, vocab_size, spec)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in spec.tokens}
    ids |= {"pad": ids[spec.tokens[0]], "eos": ids[spec.turns.end]}
    torch.manual_seed(seed)
    model, processor = spec.build(tokenizer, ids, hidden_size, layers, max_pixels)
    model.generation_config.eos_token_id = ids["eos"]
    model.generation_config.pad_token_id = ids["pad"]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / MARK).write_text(json.dumps({"family": family, "recipe": RECIPE, "seed": seed}))
    return folder


def is_current(folder: Path) -> bool:
    """Whether ``folder`` holds a whole tiny model of today's recipe."""
    try:
        return bool(json.loads((folder / MARK).read_text()).get("recipe") == RECIPE)
    except (OSError, ValueError, AttributeError):
        return False
