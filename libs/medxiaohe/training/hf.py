"""Hugging Face Trainer <-> run store: checkpoints, metrics and the best model go to the run as
the Trainer produces them, and a restarted run picks its last checkpoint back up.

Locally the Trainer shows its progress bar and loss lines; without a terminal (on the cluster)
each log becomes one JSON line on stdout instead."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from medxiaohe.training.runs import Run


def interactive() -> bool:
    return sys.stderr.isatty()


class RunCallback(TrainerCallback):
    """Mirrors a Trainer into a Run. ``metric`` (higher is better) picks the best model; a
    stage without evaluation passes "" and keeps none."""

    def __init__(self, run: Run, metric: str, scratch: Path) -> None:
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
        if state.is_world_process_zero:
            folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            self.run.save_checkpoint(state.global_step, folder)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        model: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        value = (metrics or {}).get(f"eval_{self.metric}") if self.metric else None
        if value is None or value <= self.best_value or not state.is_world_process_zero:
            return
        self.best_value = value
        folder = self.scratch / f"best-{state.global_step}"
        model.save_pretrained(folder)
        if processing_class is not None:
            processing_class.save_pretrained(folder)
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        self.run.save_best(state.global_step, folder, numbers)


def resume_checkpoint(run: Run, output_dir: Path) -> str | None:
    """The run's last complete checkpoint, downloaded where the Trainer looks for it."""
    manifest = run.latest_checkpoint()
    if manifest is None:
        return None
    folder = output_dir / f"checkpoint-{manifest.metadata['step']}"
    run.restore(manifest, folder)
    return str(folder)
