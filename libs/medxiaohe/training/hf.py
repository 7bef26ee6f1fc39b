"""Hugging Face Trainer <-> run store: checkpoints, metrics and the best model go to the run as
the Trainer produces them, and a restarted run picks its last checkpoint back up.

Scratch folders are node-local: on several nodes each node uploads its own part of every
checkpoint (its ranks' ZeRO shards, its copy of the rest) and downloads its own part to resume.

Locally the Trainer shows its progress bar and loss lines; without a terminal (on the cluster)
each log becomes one JSON line on stdout instead."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from medxiaohe.training.runs import Run


def interactive() -> bool:
    return sys.stderr.isatty()


def mirror(trainer: Any, run: Run, scratch: Path, metric: str = "") -> None:
    """Mirror ``trainer`` into ``run``; ``metric`` (higher is better) picks the best model, ""
    keeps none. Without a terminal the Trainer's own printing gives way to JSON lines."""
    trainer.add_callback(RunCallback(trainer, run, metric, scratch))
    if not interactive():
        from transformers import PrinterCallback
        from transformers.utils import logging as hf_logging

        trainer.remove_callback(PrinterCallback)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def node() -> tuple[int, int]:
    """(this node's index, the number of nodes) under torchrun; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return int(os.environ.get("GROUP_RANK", "0")), max(1, world // max(1, local))


class RunCallback(TrainerCallback):
    def __init__(self, trainer: Any, run: Run, metric: str, scratch: Path) -> None:
        self.trainer = trainer
        self.run = run
        self.metric = metric
        self.scratch = scratch
        best = run.best() if metric else None  # a resumed run must beat what it already kept
        self.best_value = best.metadata["metrics"][f"eval_{metric}"] if best else -math.inf

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if not values or not state.is_world_process_zero:
            return
        self.run.log(state.global_step, **values)
        if not interactive():
            line = {"run": self.run.run_id, "step": state.global_step, **values}
            print(json.dumps(line, sort_keys=True), flush=True)

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if state.is_local_process_zero:  # one upload per node, into the same checkpoint
            folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            self.run.save_checkpoint(state.global_step, folder, *node())

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        # every process sees the same gathered metrics, so all of them agree to save
        value = (metrics or {}).get(f"eval_{self.metric}") if self.metric else None
        if value is None or value <= self.best_value:
            return
        self.best_value = value
        folder = self.scratch / f"best-{state.global_step}"
        self.trainer.save_model(str(folder))  # on every process: ZeRO-3 gathers the weights
        if state.is_world_process_zero:
            numbers = {
                k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)
            }
            self.run.save_best(state.global_step, folder, numbers)


def resume_checkpoint(run: Run, output_dir: Path) -> str | None:
    """The run's last checkpoint complete on every node, this node's part downloaded where
    the Trainer looks for it."""
    index, nodes = node()
    step = run.latest_checkpoint(nodes)
    if step is None:
        return None
    folder = output_dir / f"checkpoint-{step}"
    run.restore(step, index, folder)
    # DeepSpeed names the checkpoint's tag in "latest" on global rank 0 only; the other
    # nodes' parts need it too to load their shards
    tags = [p.name for p in folder.glob("global_step*") if p.is_dir()]
    if len(tags) == 1 and not (folder / "latest").exists():
        (folder / "latest").write_text(tags[0])
    return str(folder)
