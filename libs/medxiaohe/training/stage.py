"""What every Trainer-based stage shares: the store and the run (new, named, or the newest
unfinished one), one scratch folder per run and node, the starting model, the Trainer's
arguments (checkpoints, logging, seed, DeepSpeed, gloo on CPU under torchrun), and publishing
the final model."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.settings import Settings
from medxiaohe.models.folders import CARD
from medxiaohe.models.vlm import without_saved_cuts
from medxiaohe.storage import ArtifactStore, Manifest, download, open_store
from medxiaohe.training.config import RunConfig
from medxiaohe.training.hf import interactive, node
from medxiaohe.training.runs import Run, new_run_id


def cpu_backend() -> str | None:
    """gloo for several CPU processes (torchrun); otherwise the Trainer's choice (NCCL on GPUs).
    Without it the Trainer counts one process under torchrun on CPU."""
    import torch

    launched = torch.distributed.is_torchelastic_launched()
    return "gloo" if launched and not torch.cuda.is_available() else None


def _deepspeed_on_cpu(backend: str) -> None:
    """Accelerate's state for DeepSpeed over gloo on CPU processes. The Trainer would build
    it without the backend and then count one process (DeepSpeed has no CPU backend of its
    own here); configured first, the Trainer takes it as it is."""
    import os

    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend=backend)
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def open_run(config: RunConfig, settings: Settings, stage: str) -> tuple[ArtifactStore, Path]:
    """(store, the run's scratch folder on this node, created); the folder's name is the run
    id: the configured one, the newest unfinished run's (resume), or a new one."""
    store = open_store(config.store_uri or settings.store_uri, settings)
    run_id = config.run_id or (Run.unfinished(store, stage) if config.resume else "")
    # one scratch folder per run and node: the processes of a distributed run share it
    scratch = Path(tempfile.gettempdir()) / "medxiaohe-train" / (run_id or new_run_id(stage))
    scratch.mkdir(parents=True, exist_ok=True)
    return store, scratch


def base_folder(base_model: str, settings: Settings, scratch: Path, seed: int) -> Path:
    """The folder of a Hugging Face vision-language or causal LM to start from (local,
    ``s3://`` or a store prefix such as ``models/cpt``); the tiny model with random weights,
    built into ``scratch``, when ``base_model`` is empty. Call it before the training
    arguments: under ZeRO-3 they make every model built afterwards partitioned."""
    from medxiaohe.models.folders import model_folder

    if base_model:
        return model_folder(base_model, settings)
    from medxiaohe.models.tiny import build_tiny

    return build_tiny("qwen2_vl", Path(tempfile.mkdtemp(dir=scratch)) / "base", seed=seed)


def load_model(folder: Path) -> tuple[Any, Any]:
    """(model, its processor or tokenizer), through the one model layer (``models.vlm``), on
    the CPU in fp32: accelerate or DeepSpeed place it (under ZeRO-3, straight into partitions)."""
    from medxiaohe.models.vlm import load_vlm

    vlm = load_vlm(folder, device="cpu")
    return vlm.model, vlm.processor


VISION_TOWERS = ("visual", "vision_tower", "vision_model")  # Qwen-VL; Gemma 3, LLaVA; Idefics3


def set_vision_trainable(model: Any, trainable: bool) -> int:
    """Freeze or unfreeze a vision-language model's vision tower (Qwen-VL's includes its
    merger); returns the number of parameters switched (0 for a text-only model)."""
    inner = getattr(model, "model", model)
    tower = next((getattr(inner, n) for n in VISION_TOWERS if hasattr(inner, n)), None)
    if tower is None:
        return 0
    params = list(tower.parameters())
    for param in params:
        param.requires_grad_(trainable)
    return sum(p.numel() for p in params)


def training_arguments(
    config: RunConfig, scratch: Path, deepspeed_dir: Path, kind: Any = None, **stage: Any
) -> Any:
    """The Trainer's arguments (``kind``, TrainingArguments by default, or a subclass such as
    TRL's SFTConfig): the run's checkpoints, seed and DeepSpeed, and the stage's own."""
    import torch
    from transformers import TrainingArguments

    backend = cpu_backend()
    # every process reads its share of an iterable dataset itself: dispatching batches from
    # the first would slice each tensor by the batch size, image patches included
    accelerator: dict[str, bool] = {"dispatch_batches": False}
    if backend and config.deepspeed:
        accelerator["use_configured_state"] = True
        _deepspeed_on_cpu(backend)
    args = (kind or TrainingArguments)(
        output_dir=str(scratch / "trainer"),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        disable_tqdm=not interactive(),
        report_to=config.report_to.split(","),
        seed=config.seed,
        deepspeed=str(deepspeed_dir / f"{config.deepspeed}.json") if config.deepspeed else None,
        ddp_backend=backend,
        accelerator_config=accelerator,
        save_on_each_node=node()[1] > 1,  # scratch folders are node-local
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        **stage,
    )
    if args.world_size > 1 and not config.run_id:
        raise InvalidInput("a run of several processes needs --run_id (launchers set it)")
    return args


def publish_final(
    trainer: Any,
    run: Run,
    scratch: Path,
    card: dict[str, Any],
    config: RunConfig,
    best: Manifest | None = None,
    save: Callable[[Path], None] | None = None,
    figures: Callable[[Path], dict[str, Any]] | None = None,
) -> Manifest | None:
    """Publish the run's best model when it kept one, else the final weights, saved by
    ``save`` or through the Trainer on every process (under ZeRO-3 that gathers the
    partitioned weights); the first process publishes, with the card (None elsewhere) and
    the ``figures`` measured on the final folder."""
    final = scratch / "final"
    if best is None:
        (save or (lambda folder: trainer.save_model(str(folder))))(final)
    if not trainer.is_world_process_zero():
        if trainer.is_local_process_zero():
            shutil.rmtree(scratch, ignore_errors=True)
        return None
    try:
        if best is not None:
            download(run.store, best, final)
        without_saved_cuts(final)
        card = {
            "run": run.prefix,
            "config": asdict(config),
            "best": best.metadata if best else None,
            **card,
        }
        if figures is not None:
            card["figures"] = figures(final)
        (final / CARD).write_text(json.dumps(card, indent=2, sort_keys=True))
        return run.publish_model(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
