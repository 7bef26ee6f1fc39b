"""Where a model runs, chosen once at start: CUDA when a GPU is there (the weights spread over
the visible GPUs by accelerate's ``device_map``, bf16 where the GPU has it, else fp16; flash
attention when it is installed), the CPU otherwise (fp32). Otherwise the attention is the
model's default (PyTorch's SDPA where the architecture has it). The choice is reported: in the
predictor's health details and in ``medxiaohe model generate``. Training stages load on the
CPU and let accelerate or DeepSpeed place the model."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from medxiaohe.common.errors import InvalidInput

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Placement:
    device: str  # cpu or cuda
    dtype_name: str  # float32, bfloat16, float16
    attention: str  # flash_attention_2, or "default" (the architecture's: SDPA where it has it)
    gpus: int = 0
    load_options: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)

    def report(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "dtype": self.dtype_name,
            "attention": self.attention,
            "gpus": self.gpus,
        }


def placement(device: str | None = None) -> Placement:
    """CUDA when available (or asked for), else the CPU."""
    import torch

    if device is not None and device not in DEVICES:
        raise InvalidInput(f"device is one of {', '.join(DEVICES)}")
    cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise InvalidInput("device cuda was asked for, and no GPU is visible")
    if not cuda:
        return Placement("cpu", "float32", "default")
    dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    options: dict[str, Any] = {"device_map": "auto"}
    if importlib.util.find_spec("flash_attn") is not None:
        options["attn_implementation"] = "flash_attention_2"
    attention = options.get("attn_implementation", "default")
    return Placement("cuda", dtype, attention, torch.cuda.device_count(), options)


def inputs_on(model: Any, inputs: Any) -> dict[str, Any]:
    """A processor's tensors where the model takes its inputs (its first parameter's device:
    under ``device_map`` the embeddings sit on the first GPU), floating ones in its dtype."""
    device, dtype = next(model.parameters()).device, model.dtype
    return {
        k: v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in inputs.items()
    }
