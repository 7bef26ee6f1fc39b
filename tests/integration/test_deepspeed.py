"""DeepSpeed ZeRO really runs here: 2 CPU processes (gloo) through torchrun, the project's
ZeRO config files, a tiny model whose loss goes down, and a checkpoint that reloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_zero_step_on_two_cpu_processes(config: str, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    out = tmp_path / "out.json"
    cmd = [
        str(Path(sys.executable).parent / "torchrun"),
        "--nproc-per-node=2",
        f"--master-port={port}",
        str(ROOT / "tests/integration/deepspeed_worker.py"),
        str(ROOT / f"training-jobs/deepspeed/{config}.json"),
        str(tmp_path / "ckpt"),
        str(out),
    ]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    losses = result["losses"]
    assert result["world"] == 2
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5  # it learns
    assert result["after"] == pytest.approx(result["before"], rel=1e-5)  # the checkpoint reloads
