"""Training on this machine: a stage as a local process (torchrun for several processes), and
pipeline steps run that way. Needs none of the deploy dependencies (helm, kubernetes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from medxiaohe.training.pipeline import StageFailed, Step


def local_command(stage: str, config: Path | None, run_id: str, processes: int = 1) -> list[str]:
    stage_args = [stage, *(["--config", str(config)] if config else []), "--run_id", run_id]
    if processes <= 1:
        return [sys.executable, "-m", "medxiaohe_training", *stage_args]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    return [
        torchrun,
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "medxiaohe_training",
        *stage_args,
    ]


def run_local(stage: str, config: Path | None, run_id: str, processes: int = 1) -> int:
    """Run the stage in the foreground; its output is this process's; returns its exit code."""
    return subprocess.run(local_command(stage, config, run_id, processes), check=False).returncode


class LocalRunner:
    """Pipeline steps as local processes on the store at ``store_uri``."""

    def __init__(self, store_uri: str, settings: Any, processes: int = 1) -> None:
        from medxiaohe.storage import open_store

        self.store_uri, self.processes = store_uri, processes
        self.store = open_store(store_uri, settings)

    def finished(self, step: Step) -> bool:
        return self.store.exists(f"{step.model}/_LATEST")

    def run(self, step: Step) -> None:
        with tempfile.TemporaryDirectory(prefix="medxiaohe-pipeline-") as folder:
            config = Path(folder) / f"{step.name}.yaml"
            config.write_text(step.config_yaml(self.store_uri))
            code = run_local(step.stage, config, step.run_id, self.processes)
        if code:
            raise StageFailed(f"stage {step.name} ({step.stage}) exited with {code}")
