"""Run by torchrun (2 processes, gloo, CPU) from test_deepspeed.py: a tiny model trained for a
few ZeRO steps with training-jobs/deepspeed/<config>.json (the "auto" values filled in for CPU),
a checkpoint saved, reloaded into a fresh engine, and the result written as JSON."""

import json
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist


def engine(config: dict, seed: int) -> object:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    ds, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return ds


def main() -> None:
    config_path, checkpoint_dir, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    config = json.loads(config_path.read_text())
    config.update(
        {
            "train_micro_batch_size_per_gpu": 8,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0,
            "bf16": {"enabled": False},
        }
    )
    zero = config["zero_optimization"]
    for key, value in list(zero.items()):
        if value == "auto":
            zero.pop(key)
    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    ds = engine(config, seed=0)
    generator = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(64, 16, generator=generator)
    y = x[:, :1] * 2.0 - x[:, 1:2]
    losses = []
    for step in range(30):
        batch = slice((step % 8) * 8, (step % 8) * 8 + 8)
        loss = torch.nn.functional.mse_loss(ds(x[batch]), y[batch])
        ds.backward(loss)
        ds.step()
        losses.append(loss.item())
    ds.save_checkpoint(checkpoint_dir, tag="step-30")
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(ds(x), y).item()
    fresh = engine(config, seed=1)  # other initial weights
    fresh.load_checkpoint(checkpoint_dir, tag="step-30")
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(fresh(x), y).item()
    if rank == 0:
        out.write_text(
            json.dumps(
                {"losses": losses, "before": before, "after": after, "world": dist.get_world_size()}
            )
        )
    # leave together and tear the process group down before exit: a rank that exits with gloo's
    # threads still up can abort in C++ ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


main()
