"""Loading any Hugging Face vision-language or causal language model folder, one way for
serving, the in-process engine and the training stages: ``AutoModelForImageTextToText`` and
the folder's own processor for a vision-language model, ``AutoModelForCausalLM`` and its
tokenizer for a text-only one; the folder's chat template; never remote code.

The processor is built from the folder's processor and image-processor configs with video left
out: the stock loaders want a video processor (torchvision), which nothing here needs. The
device is chosen once (``models.devices``) and reported with the model."""

from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.devices import Placement, placement

# processors whose stock class turns its text offsets into tensors (and fails) under TRL
LIST_OFFSETS = ("Idefics3Processor",)
# processor classes that model folders published by earlier releases of the platform name
RENAMED = {"VlmProcessor": "Qwen2VLProcessor"}  # its own Qwen2-VL processor before this layer
# processor-config keys that are loaded parts, not settings
_PARTS = ("image_processor", "tokenizer", "video_processor", "feature_extractor", "chat_template")


@dataclass
class Vlm:
    model: Any
    processor: Any  # a multimodal processor, or the tokenizer of a text-only model
    folder: Path
    family: str  # the Hugging Face model_type: qwen2_vl, gemma3, idefics3, qwen2, ...
    vision: bool
    placement: Placement

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def max_context(self) -> int:
        config = self.model.config
        return int(getattr(config, "text_config", config).max_position_embeddings)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _transformers_class(names: list[str]) -> Any:
    import transformers

    for name in names:
        found = getattr(transformers, name, None)
        if found is not None:
            return found
    raise InvalidInput(f"transformers has none of {names}")


def _image_processor(folder: Path, saved: dict[str, Any]) -> Any:
    """The folder's image processor (in its processor config, or in preprocessor_config.json
    as older releases keep it), its PIL variant where there is one (no torchvision)."""
    settings = saved.get("image_processor") or _json(folder / "preprocessor_config.json")
    name = str(settings.get("image_processor_type", ""))
    if not name:
        raise InvalidInput(f"{folder} has no image processor config")
    base = name.removesuffix("Fast").removesuffix("Pil")
    kind = _transformers_class([f"{base}Pil", base])
    return kind.from_dict({k: v for k, v in settings.items() if k != "image_processor_type"})


@functools.cache
def without_video(kind: Any) -> Any:
    """``kind`` (a processor class) as this layer uses it, under its own name: no video
    processor among its parts (the stock class wants one, and torchvision, even for images
    alone), and text offsets kept as lists where the stock class would make them tensors
    (Idefics3's, when TRL asks for the assistant mask)."""
    from transformers import BatchFeature

    body: dict[str, Any] = {"__module__": kind.__module__}
    signature = inspect.signature(kind.__init__)
    if "video_processor" in signature.parameters:

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            kind.__init__(self, *args, video_processor=None, **kwargs)

        params = [p for p in signature.parameters.values() if p.name != "video_processor"]
        __init__.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        body["__init__"] = __init__
    if kind.__name__ in LIST_OFFSETS:

        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            tensors = kwargs.pop("return_tensors", None)
            out = kind.__call__(self, *args, **kwargs)
            skip = ["text_replacement_offsets"]
            return BatchFeature(dict(out), tensor_type=tensors, skip_tensor_conversion=skip)

        body["__call__"] = __call__
    return type(kind.__name__, (kind,), body) if len(body) > 1 else kind


def _chat_template(folder: Path, tokenizer: Any) -> str:
    if tokenizer.chat_template:
        return str(tokenizer.chat_template)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    found = _json(folder / "chat_template.json").get("chat_template")
    if not found:
        raise InvalidInput(f"{folder} has no chat template")
    return str(found)


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, cutting nothing unless a caller asks: a tokenizer saved after
    training keeps its last batch's truncation in ``tokenizer.json``, which transformers makes
    the default of every call (and of the processor's), so prompts and training examples would
    be cut to the training length (see ``without_saved_cuts``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and backend.truncation is not None:
        backend.no_truncation()
        for key in ("max_length", "stride", "truncation_strategy"):  # the cut's defaults
            tokenizer.init_kwargs.pop(key, None)
    return tokenizer


def load_processor(folder: Path) -> Any:
    """The processor of a vision-language folder (its class and settings as saved)."""

    saved = _json(folder / "processor_config.json")
    name = str(saved.get("processor_class", ""))
    name = RENAMED.get(name, name)
    if not name.endswith("Processor"):
        raise InvalidInput(f"{folder} names no processor class in processor_config.json")
    kind = without_video(_transformers_class([name]))
    tokenizer = load_tokenizer(folder)
    accepted = inspect.signature(kind.__init__).parameters
    settings = {k: v for k, v in saved.items() if k in accepted and k not in _PARTS}
    return kind(
        image_processor=_image_processor(folder, saved),
        tokenizer=tokenizer,
        chat_template=_chat_template(folder, tokenizer),
        **settings,
    )


def load_vlm(folder: Path, dtype: Any = None, device: str | None = None) -> Vlm:
    """Model, processor (or tokenizer) and chat template of a folder, on the device chosen at
    start (``device`` forces one: "cpu", "cuda"), ready to generate."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
    )

    if not (folder / "config.json").is_file():
        raise InvalidInput(f"{folder} is not a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(folder)  # trust_remote_code stays False
    except (ValueError, KeyError) as exc:
        raise InvalidInput(f"{folder}: transformers does not know this architecture") from exc
    vision = hasattr(config, "vision_config")
    generative = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or ())
    if not vision and not generative:
        raise InvalidInput(
            f"unsupported architecture {config.model_type!r}: neither a vision-language nor a "
            "causal language model"
        )
    where = placement(device)
    options: dict[str, Any] = {"dtype": dtype or where.dtype, **where.load_options}
    if vision:
        processor = load_processor(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder, **options)
    else:
        processor = load_tokenizer(folder)
        processor.chat_template = _chat_template(folder, processor)
        model = AutoModelForCausalLM.from_pretrained(folder, **options)
    model.eval()  # type: ignore[no-untyped-call]
    return Vlm(model, processor, folder, str(config.model_type), vision, where)


def without_saved_cuts(folder: Path) -> None:
    """Clear the truncation and padding that a tokenizer saved after training keeps from its
    last batch (``tokenizer.json``'s ``truncation``, ``padding``): whoever serves the folder
    (this predictor, vLLM) would otherwise cut every prompt to the training length."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("truncation") is None and saved.get("padding") is None:
        return
    saved["truncation"] = saved["padding"] = None
    path.write_text(json.dumps(saved, ensure_ascii=False), encoding="utf-8")
