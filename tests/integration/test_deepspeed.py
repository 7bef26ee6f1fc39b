"""The real cpt stage under DeepSpeed on CPU processes (gloo) through torchrun.

ZeRO-3 runs as two one-process "nodes", each with its own scratch folder (TMPDIR), so every
node must upload its own part of each checkpoint: the run is killed after a checkpoint both
parts of which are in, resumed, and the published model (gathered from the partitions) gives
the same logits as the weights consolidated from the last checkpoint's ZeRO shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medxiaohe.storage import download, open_store, resolve
from medxiaohe.training.runs import Run, models_prefix
from tests.integration.test_cpt import CONFIG, with_mixture
from tests.servers import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = str(Path(sys.executable).parent / "torchrun")
# The deployment's checkpoint key (a Secret on the cluster): both nodes seal with it, and the
# test reads the parts back with it.
CHECKPOINT_KEY = "zero-three test key: sealed parts, both nodes 0123456789"


def stage(store_uri: str, run_id: str, *overrides: str) -> list[str]:
    command = ["-m", "medxiaohe_training", "cpt", "--config", str(CONFIG)]
    return [*command, "--store_uri", store_uri, "--run_id", run_id, *overrides]


def environment(tmp: Path) -> dict[str, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "MEDXIAOHE_CHECKPOINT_KEY": CHECKPOINT_KEY,
        "HF_HUB_OFFLINE": "1",
        "MEDXIAOHE_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(tmp),  # a node's scratch folder is its own
    }


def two_nodes(command: list[str], tmp: Path) -> list[subprocess.Popen[bytes]]:
    (port,) = free_ports(1)
    nodes = []
    for index in (0, 1):
        launch = [TORCHRUN, "--nnodes=2", "--nproc-per-node=1", f"--node-rank={index}"]
        launch += ["--master-addr=127.0.0.1", f"--master-port={port}"]
        nodes.append(
            subprocess.Popen(
                launch + command,
                cwd=ROOT,
                env=environment(tmp / f"node-{index}"),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # killed as a group: torchrun and its worker
            )
        )
    return nodes


def finish(nodes: list[subprocess.Popen[bytes]]) -> None:
    outputs = [node.communicate(timeout=900)[0].decode() for node in nodes]
    failed = "\n".join(f"node {i}: {o[-3000:]}" for i, o in enumerate(outputs))
    assert all(node.returncode == 0 for node in nodes), failed


def logits(folder: Path, state: dict[str, object] | None = None) -> object:
    import torch

    from medxiaohe.models.vlm import load_vlm

    vlm = load_vlm(folder)
    if state is not None:
        vlm.model.load_state_dict(state, strict=False)
    ids = vlm.processor.tokenizer("Patient with fever and cough", return_tensors="pt")
    with torch.no_grad():
        return vlm.model(**ids).logits


def test_zero3_on_two_nodes_is_killed_resumed_and_publishes_gathered_weights(
    tmp_path: Path,
) -> None:
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    store_uri = str(tmp_path / "store")
    with_mixture(store_uri)
    store = open_store(store_uri)
    command = stage(store_uri, "z3", "--deepspeed", "zero3", "--max_steps", "36")
    command += ["--save_steps", "6"]
    nodes = two_nodes(command, tmp_path)
    run = Run(store, "cpt", "z3", key=CHECKPOINT_KEY.encode())
    deadline = time.monotonic() + 600
    while run.latest_checkpoint(nodes=2) is None:
        assert all(n.poll() is None for n in nodes), "a node ended before its first checkpoint"
        assert time.monotonic() < deadline, "no complete checkpoint"
        time.sleep(0.1)
    for node in nodes:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
    assert not store.exists("runs/cpt/z3/model/_LATEST")
    killed_at = run.latest_checkpoint(nodes=2)
    assert killed_at is not None
    assert killed_at < 36

    finish(two_nodes(command, tmp_path))
    steps = [m["step"] for m in run.metrics() if "loss" in m]
    assert steps == sorted(set(steps))  # nothing before the checkpoint was trained twice
    assert steps[-1] == 36
    published = download(store, resolve(store, models_prefix("cpt")), tmp_path / "published")
    shards = tmp_path / "shards"
    for index in (0, 1):  # each node's part holds its rank's partition
        run.restore(36, index, shards)
    state = get_fp32_state_dict_from_zero_checkpoint(str(shards))
    assert torch.allclose(logits(published), logits(published, state), atol=1e-4)


def test_zero2_on_two_processes_trains_and_publishes(tmp_path: Path) -> None:
    store_uri = str(tmp_path / "store")
    with_mixture(store_uri)
    (port,) = free_ports(1)
    launch = [TORCHRUN, "--nproc-per-node=2", f"--master-port={port}"]
    done = subprocess.run(
        launch + stage(store_uri, "z2", "--deepspeed", "zero2"),
        cwd=ROOT,
        env=environment(tmp_path / "tmp"),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    losses = [m["loss"] for m in Run(open_store(store_uri), "cpt", "z2").metrics() if "loss" in m]
    assert sum(losses[-2:]) < sum(losses[:2])
